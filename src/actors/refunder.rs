//! `Refunder`: drains `refunds`. Rows are written by the workflows that
//! decide them (a refused payment, an order's failed photos, an operator),
//! claimed here with `FOR NO KEY UPDATE SKIP LOCKED` and a lease (so several
//! instances share them, and a row whose claimer died is taken again), done
//! at the payment provider with their idempotency key, and completed; a
//! transient failure waits with backoff. Its first look after a start also
//! takes back the rows this instance's name held before a crash.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::ActorContext;
use crate::{
    db,
    shop::refund::{self, Executed, LEASE, RefundDeps},
};

/// How often it looks without being woken.
const EVERY: Duration = Duration::from_secs(5);
/// Refunds done per look.
const BATCH: i64 = 20;

pub enum RefunderMsg {
    /// A refund was queued: look now.
    Wake,
    /// The periodic look.
    Tick,
}

pub struct Refunder;

pub struct RefunderArgs {
    pub ctx: ActorContext,
    pub owner: String,
}

pub struct RefunderState {
    args: RefunderArgs,
    /// Whether the first look (which reclaims this name's rows) ran.
    looked: bool,
}

impl Actor for Refunder {
    type Msg = RefunderMsg;
    type State = RefunderState;
    type Arguments = RefunderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RefunderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(RefunderMsg::Tick)?;
        Ok(RefunderState { args, looked: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RefunderMsg::Wake => state.drain().await,
            RefunderMsg::Tick => {
                metrics::counter!("restoreclick_actor_ticks_total", "actor" => "refunder").increment(1);
                state.drain().await;
                // The next look is scheduled when this one ends: a slow
                // provider leaves one tick pending, never a pile.
                myself.send_after(EVERY, || RefunderMsg::Tick);
            }
        }
        Ok(())
    }
}

impl RefunderState {
    /// Does what is due; a database error waits for the next look.
    async fn drain(&mut self) {
        let ctx = &self.args.ctx;
        let deps = RefundDeps {
            db: &ctx.db,
            settings: &ctx.settings,
            payments: ctx.payments.as_ref(),
            owner: &self.args.owner,
        };
        let rows = match db::refunds::claim_due(&ctx.db, deps.owner, LEASE.as_secs_f64(), BATCH, !self.looked)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim refunds; retrying at the next look");
                return;
            }
        };
        self.looked = true;
        for row in rows {
            match refund::execute(deps, &row).await {
                Ok(Executed::Succeeded { effect, .. }) => ctx.tree.refunded(&effect),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(refund_id = %row.id, error = %e, "a refund could not be completed; its lease lets it be retried");
                }
            }
        }
    }
}
