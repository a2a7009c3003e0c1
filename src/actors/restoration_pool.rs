//! `RestorationPool`: at most `restoration.concurrency` attempts run at once;
//! the rest wait in a queue in front (nothing is spawned unbounded).
//!
//! Each attempt runs as a task; its result goes back to the `ImageActor`
//! that asked, and a panic in a provider is caught and reported as a crash,
//! so the pool itself never goes down with a provider.
//!
//! When the provider throttles (429), the pool slows down for everyone: it
//! starts nothing until the provider's `Retry-After` has passed, and then
//! runs at half its limit, growing back by one per attempt that succeeds, so
//! that the throttled photos do not all come back at once.

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::RngExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::image::ImageMsg;
use crate::providers::restoration::{
    ErrorKind, RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer,
};

pub enum PoolMsg {
    /// Run one attempt and send the outcome to `reply_to`.
    Restore(RestoreRequest, ActorRef<ImageMsg>),
    /// An attempt ended (how, for the pace): its slot is free.
    SlotFreed(Pace),
    /// Change how many attempts may run at once.
    SetConcurrency(usize),
    /// A throttling pause is over: start what is waiting.
    Resume,
}

/// What an ended attempt says about the provider's pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// It ran (succeeded or failed on its own merits).
    Ran,
    /// The provider turned it away; wait this long before starting more.
    Throttled(Duration),
    /// Neither (a crash, the shop's own outage).
    Other,
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
    /// This instance's name: a provider's id is recorded only for an
    /// attempt of an order this instance holds.
    pub owner: String,
}

pub struct PoolState {
    restorer: Arc<dyn Restorer>,
    db: PgPool,
    owner: String,
    queue: VecDeque<(RestoreRequest, ActorRef<ImageMsg>)>,
    in_flight: usize,
    /// The configured limit (the Monitor may raise it).
    limit: usize,
    /// What is run at once after throttling, below `limit`; `None` when the
    /// provider has not throttled lately (the pool runs at its limit).
    pace: Option<usize>,
    /// Nothing starts before this (the provider asked to wait).
    paused_until: Option<Instant>,
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
            owner: args.owner,
            queue: VecDeque::new(),
            in_flight: 0,
            limit,
            pace: None,
            paused_until: None,
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
            PoolMsg::SlotFreed(pace) => {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.paced(&myself, pace);
            }
            PoolMsg::SetConcurrency(limit) => {
                state.limit = limit.max(1);
                metrics::gauge!("restoreclick_pool_concurrency").set(state.limit as f64);
            }
            PoolMsg::Resume => {
                if state.paused_until.is_some_and(|t| t <= Instant::now()) {
                    state.paused_until = None;
                }
            }
        }
        state.pump(&myself);
        metrics::gauge!("restoreclick_pool_waiting").set(state.queue.len() as f64);
        metrics::gauge!("restoreclick_pool_in_flight").set(state.in_flight as f64);
        Ok(())
    }
}

impl PoolState {
    /// Follows the provider's pace: a throttled attempt pauses every start
    /// until its wait is over and halves what runs at once; an attempt that
    /// ran earns one slot back.
    fn paced(&mut self, myself: &ActorRef<PoolMsg>, pace: Pace) {
        match pace {
            Pace::Throttled(wait) => {
                let until = Instant::now() + wait;
                if self.paused_until.is_none_or(|t| t < until) {
                    self.paused_until = Some(until);
                    myself.send_after(wait, || PoolMsg::Resume);
                }
                let pace = (self.running_at() / 2).max(1);
                self.pace = Some(pace);
                tracing::warn!(?wait, pace, "the provider throttles; the pool slows down");
            }
            Pace::Ran => self.pace = self.pace.map(|p| p + 1).filter(|p| *p < self.limit),
            Pace::Other => {}
        }
        metrics::gauge!("restoreclick_pool_pace").set(self.running_at() as f64);
    }

    /// How many attempts may run at once now.
    fn running_at(&self) -> usize {
        self.pace.unwrap_or(self.limit).min(self.limit)
    }

    /// Starts queued attempts while slots are free and the provider allows.
    fn pump(&mut self, myself: &ActorRef<PoolMsg>) {
        if self.paused_until.is_some() {
            return;
        }
        while self.in_flight < self.running_at() {
            let Some((request, reply_to)) = self.queue.pop_front() else {
                return;
            };
            self.in_flight += 1;
            let restorer = self.restorer.clone();
            let record = recorder(self.db.clone(), self.owner.clone());
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
                let pace = match &outcome {
                    AttemptOutcome::Restored(_) => Pace::Ran,
                    AttemptOutcome::Failed(e) => match e.kind {
                        ErrorKind::Throttled => Pace::Throttled(throttle_wait(e.retry_after)),
                        ErrorKind::Outage => Pace::Other,
                        _ => Pace::Ran,
                    },
                    AttemptOutcome::Crashed(_) => Pace::Other,
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
                let _ = pool.cast(PoolMsg::SlotFreed(pace));
            });
        }
    }
}

/// How long the pool waits after a throttled attempt: what the provider
/// asked (or a second), with jitter so instances do not return in step.
fn throttle_wait(retry_after: Option<Duration>) -> Duration {
    let asked = retry_after.unwrap_or(Duration::from_secs(1));
    asked.mul_f64(rand::rng().random_range(1.0..1.25))
}

fn recorder(db: PgPool, owner: String) -> RecordSubmission {
    Arc::new(move |job_id: Uuid, attempt: u32, external_id: String| {
        let (db, owner) = (db.clone(), owner.clone());
        Box::pin(async move {
            // Tests make the database "away" for this one write.
            fail::fail_point!("restoration::record", |_| Err(
                "failpoint restoration::record".to_owned()
            ));
            crate::db::jobs::record_external_id(&db, job_id, attempt as i32, &owner, &external_id)
                .await
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
