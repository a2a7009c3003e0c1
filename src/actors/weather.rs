//! Faults are weather: which errors clear by themselves (a database that
//! restarts, storage or a network that blips), and how long an actor waits
//! before it tries again. An actor that meets weather keeps its state,
//! waits with jittered backoff and retries the same step; only a bug (or a
//! panic) makes it fail and spend its supervisor's restart budget.

use std::time::Duration;

use ractor::ActorProcessingErr;
use rand::RngExt;

use crate::{providers::restoration::RestoreError, storage::StorageError};

/// The first wait after a transient error, and the longest: short enough
/// that work resumes within seconds of a dependency's return.
const FIRST: Duration = Duration::from_millis(200);
const LONGEST: Duration = Duration::from_secs(5);

/// Whether a database error can clear by itself: the connection or the
/// server went away, the pool is exhausted, or the transaction lost a race.
pub fn database_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Connection exceptions, insufficient resources, operator
            // intervention (shutdown, recovery), system errors, lost races.
            ["08", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// Whether an error an actor step returned is weather (wait and retry the
/// step) rather than a bug: it, or any error it wraps, is a database, storage
/// or provider outage that can clear.
pub fn is_transient(e: &ActorProcessingErr) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cause {
        if let Some(db) = err.downcast_ref::<sqlx::Error>() {
            return database_is_transient(db);
        }
        if let Some(storage) = err.downcast_ref::<StorageError>() {
            return !matches!(storage, StorageError::NotFound(_) | StorageError::Open(_));
        }
        if let Some(restore) = err.downcast_ref::<RestoreError>() {
            return restore.kind == crate::providers::restoration::ErrorKind::Outage;
        }
        cause = err.source();
    }
    false
}

/// Settles one step's result for an actor: success resets `backoff`;
/// weather sends `again` (the same step) to `myself` after a jittered wait
/// and answers `Ok(true)`; a bug is returned, to spend a restart budget.
pub fn settle<M: ractor::Message>(
    result: Result<(), ActorProcessingErr>,
    backoff: &mut Backoff,
    myself: &ractor::ActorRef<M>,
    again: Option<M>,
) -> Result<bool, ActorProcessingErr> {
    match result {
        Ok(()) => {
            backoff.reset();
            Ok(false)
        }
        Err(e) if is_transient(&e) => {
            let wait = backoff.wait();
            tracing::warn!(error = %e, ?wait, failures = backoff.failures(), "a dependency is away; retrying the step");
            if let Some(again) = again {
                myself.send_after(wait, move || again);
            }
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Jittered exponential backoff for one actor's retries of one step.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next try (and counts this failure).
    pub fn wait(&mut self) -> Duration {
        let exp = FIRST.saturating_mul(1 << self.failures.min(8));
        self.failures = self.failures.saturating_add(1);
        exp.min(LONGEST).mul_f64(rand::rng().random_range(0.75..1.25))
    }

    /// The step went through: start from the first wait again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_weather_and_bugs_are_not() {
        let io: ActorProcessingErr = Box::new(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(is_transient(&io));
        assert!(is_transient(
            &(Box::new(sqlx::Error::PoolTimedOut) as ActorProcessingErr)
        ));
        let bug: ActorProcessingErr = Box::new(sqlx::Error::Protocol("illegal transition".into()));
        assert!(!is_transient(&bug));
        let missing: ActorProcessingErr = Box::new(StorageError::NotFound("k".into()));
        assert!(!is_transient(&missing));
        assert!(!is_transient(&ActorProcessingErr::from("a plain bug")));
    }

    #[test]
    fn backoff_grows_to_a_few_seconds_and_resets() {
        let mut b = Backoff::default();
        let first = b.wait();
        assert!(first <= Duration::from_millis(250), "{first:?}");
        for _ in 0..20 {
            assert!(b.wait() <= LONGEST.mul_f64(1.25));
        }
        assert!(b.wait() >= LONGEST.mul_f64(0.75));
        b.reset();
        assert!(b.wait() <= Duration::from_millis(250));
    }
}
