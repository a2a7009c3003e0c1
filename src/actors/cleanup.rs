//! `Cleanup`: periodic, idempotent sweeps that are safe with several
//! instances. Here: temp files no upload row owns (an upload that crashed
//! between storing and committing, a removal whose delete failed).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use time::OffsetDateTime;

use super::ActorContext;
use crate::sweeper;

const EVERY: Duration = Duration::from_secs(600);
/// Files younger than this may belong to an upload still committing.
const GRACE: time::Duration = time::Duration::minutes(30);

pub enum CleanupMsg {
    Sweep,
}

pub struct Cleanup;

impl Actor for Cleanup {
    type Msg = CleanupMsg;
    type State = ActorContext;
    type Arguments = ActorContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: ActorContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(EVERY, || CleanupMsg::Sweep);
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CleanupMsg::Sweep => {
                match sweeper::sweep_orphans(&ctx.db, &ctx.storage, OffsetDateTime::now_utc() - GRACE).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "orphaned temp files removed"),
                    Err(e) => tracing::warn!(error = %e, "orphan sweep failed; retrying later"),
                }
            }
        }
        Ok(())
    }
}
