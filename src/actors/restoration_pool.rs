//! `RestorationPool`: at most `restoration.concurrency` attempts run at once;
//! the rest wait in a queue in front (nothing is spawned unbounded).
//!
//! Each attempt runs as a task; its result goes back to the `ImageActor`
//! that asked, and a panic in a provider is caught and reported as a crash,
//! so the pool itself never goes down with a provider.

use std::{collections::VecDeque, panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::PgPool;
use uuid::Uuid;

use super::image::ImageMsg;
use crate::providers::restoration::{RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer};

pub enum PoolMsg {
    /// Run one attempt and send the outcome to `reply_to`.
    Restore(RestoreRequest, ActorRef<ImageMsg>),
    /// An attempt ended: its slot is free.
    SlotFreed,
    /// Change how many attempts may run at once.
    SetConcurrency(usize),
}

/// How an attempt ended, as the pool reports it.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Restored(Restored),
    Failed(RestoreError),
    /// The provider panicked: the asking actor decides (it fails and is restarted).
    Crashed(String),
}

pub struct RestorationPool;

pub struct PoolArgs {
    pub restorer: Arc<dyn Restorer>,
    pub db: PgPool,
    pub concurrency: usize,
}

pub struct PoolState {
    restorer: Arc<dyn Restorer>,
    db: PgPool,
    queue: VecDeque<(RestoreRequest, ActorRef<ImageMsg>)>,
    in_flight: usize,
    limit: usize,
}

/// The pool as other actors reach it; it follows the pool across restarts.
pub type PoolHandle = super::Handle<PoolMsg>;

impl Actor for RestorationPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: PoolArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let limit = args.concurrency.max(1);
        metrics::gauge!("restoreclick_pool_concurrency").set(limit as f64);
        Ok(PoolState {
            restorer: args.restorer,
            db: args.db,
            queue: VecDeque::new(),
            in_flight: 0,
            limit,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Restore(request, reply_to) => state.queue.push_back((request, reply_to)),
            PoolMsg::SlotFreed => state.in_flight = state.in_flight.saturating_sub(1),
            PoolMsg::SetConcurrency(limit) => {
                state.limit = limit.max(1);
                metrics::gauge!("restoreclick_pool_concurrency").set(state.limit as f64);
            }
        }
        state.pump(&myself);
        metrics::gauge!("restoreclick_pool_waiting").set(state.queue.len() as f64);
        metrics::gauge!("restoreclick_pool_in_flight").set(state.in_flight as f64);
        Ok(())
    }
}

impl PoolState {
    /// Starts queued attempts while slots are free.
    fn pump(&mut self, myself: &ActorRef<PoolMsg>) {
        while self.in_flight < self.limit {
            let Some((request, reply_to)) = self.queue.pop_front() else {
                return;
            };
            self.in_flight += 1;
            let restorer = self.restorer.clone();
            let record = recorder(self.db.clone());
            let pool = myself.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let provider = restorer.name();
                let outcome = match AssertUnwindSafe(restorer.restore(&request, record))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(restored)) => AttemptOutcome::Restored(restored),
                    Ok(Err(e)) => AttemptOutcome::Failed(e),
                    Err(panic) => AttemptOutcome::Crashed(panic_message(panic.as_ref())),
                };
                let label = match &outcome {
                    AttemptOutcome::Restored(_) => "completed",
                    AttemptOutcome::Failed(e) => e.kind.as_str(),
                    AttemptOutcome::Crashed(_) => "crashed",
                };
                metrics::histogram!("restoreclick_job_duration_seconds", "provider" => provider)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("restoreclick_jobs_total", "provider" => provider, "outcome" => label)
                    .increment(1);
                let _ = reply_to.cast(ImageMsg::PoolResult {
                    job_id: request.job_id,
                    attempt: request.attempt,
                    outcome,
                });
                let _ = pool.cast(PoolMsg::SlotFreed);
            });
        }
    }
}

fn recorder(db: PgPool) -> RecordSubmission {
    Arc::new(move |job_id: Uuid, external_id: String| {
        let db = db.clone();
        Box::pin(async move {
            crate::db::jobs::record_external_id(&db, job_id, &external_id)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the provider panicked".to_owned())
}
