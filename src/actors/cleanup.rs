//! `Cleanup`: periodic, idempotent sweeps that are safe with several
//! instances (every interval of `cleanup.interval`): unpaid upload sessions
//! past their expiry (photos and rows), download links that can no longer be
//! used, cached ZIPs older than `downloads.zip_ttl`, photos of finished
//! orders past `retention.days`, temp files no upload row owns (an upload
//! that crashed between storing and committing), and checkouts whose
//! payment event never came (asked of the provider and settled).

use ractor::{Actor, ActorProcessingErr, ActorRef};
use time::OffsetDateTime;

use super::ActorContext;
use crate::{shop, sweeper};

/// Files younger than this may belong to an upload still committing.
const GRACE: time::Duration = time::Duration::minutes(30);

pub enum CleanupMsg {
    /// The periodic sweep; it schedules the next one when it ends.
    Sweep,
    /// An extra sweep now (storage is filling up), outside the schedule.
    SweepNow,
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
        myself.send_after(ctx.settings.cleanup.interval, || CleanupMsg::Sweep);
        Ok(ctx)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CleanupMsg::Sweep => {
                metrics::counter!("restoreclick_actor_ticks_total", "actor" => "cleanup").increment(1);
                sweep(ctx).await;
                // Scheduled when the sweep ends: a slow one never piles up ticks.
                myself.send_after(ctx.settings.cleanup.interval, || CleanupMsg::Sweep);
            }
            CleanupMsg::SweepNow => sweep(ctx).await,
        }
        Ok(())
    }
}

async fn sweep(ctx: &ActorContext) {
    let deps = shop::checkout::CheckoutDeps {
        db: &ctx.db,
        settings: &ctx.settings,
        payments: ctx.payments.as_ref(),
    };
    match shop::checkout::sweep_unsettled(deps).await {
        Ok(applied) => {
            for a in &applied {
                ctx.tree.follow_up(a);
            }
            if !applied.is_empty() {
                tracing::info!(
                    settled = applied.len(),
                    "cleanup: checkouts settled from the provider"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cleanup: cannot settle checkouts; retrying at the next tick"),
    }
    let retention = time::Duration::days(i64::from(ctx.settings.retention.days));
    let report = |what: &str, result: Result<usize, sweeper::SweepError>| match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, what, "cleanup"),
        Err(e) => tracing::warn!(what, error = %e, "cleanup sweep failed; retrying at the next tick"),
    };
    report(
        "abandoned upload sessions",
        sweeper::sweep_abandoned_sessions(&ctx.db, &ctx.storage).await,
    );
    report(
        "orders past retention",
        sweeper::sweep_retention(&ctx.db, &ctx.storage, retention).await,
    );
    report(
        "dead download links",
        crate::db::cleanup::delete_dead_links(&ctx.db)
            .await
            .map(|n| n as usize)
            .map_err(Into::into),
    );
    report(
        "stale download archives",
        sweeper::sweep_stale_zips(
            &ctx.storage,
            OffsetDateTime::now_utc() - ctx.settings.downloads.zip_ttl,
        )
        .await,
    );
    report(
        "orphaned temp files",
        sweeper::sweep_orphans(&ctx.db, &ctx.storage, OffsetDateTime::now_utc() - GRACE).await,
    );
}
