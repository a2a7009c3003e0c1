//! Restoration providers: turn one stored original into one stored restored
//! photo. `replicate` calls Replicate's predictions API, `local` runs the
//! embedded engine, `instant` copies the input (for benchmarks of the
//! orchestration itself).

pub mod instant;
pub mod local;
pub mod metadata;
pub mod outputs;
pub mod replicate;
pub mod signature;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::{domain::chain::Step, storage::Storage};

/// One attempt of one job, as the pool hands it to a provider.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub job_id: Uuid,
    pub attempt: u32,
    /// Storage key of the original.
    pub input_key: String,
    pub content_type: String,
    /// Storage key the restored photo must be written to.
    pub output_key: String,
    /// The provider's id for this attempt's work, when it was submitted
    /// before (a restart resumes it instead of submitting again).
    pub external_id: Option<String>,
    /// The chain step this attempt runs: what is done to the input.
    pub step: Step,
    /// A seed for models that take one: set when the customer asked for a
    /// redo, so the chain does not give back the same result.
    pub seed: Option<u64>,
}

/// What a finished attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub output_key: String,
    pub bytes: u64,
}

/// Whether retrying can help, and whether the try counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying cannot help (the model refused the input).
    Permanent,
    /// The attempt ran and failed; another may succeed. Spends an attempt.
    Transient,
    /// The provider turned the attempt away before it ran (429): wait as
    /// asked; no attempt is spent.
    Throttled,
    /// The shop's own storage or database was away: wait it out; no attempt
    /// is spent.
    Outage,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Permanent => "permanent",
            ErrorKind::Transient => "transient",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Outage => "outage",
        }
    }

    /// Whether the try spends one of the photo's attempts.
    pub fn is_charged(self) -> bool {
        matches!(self, ErrorKind::Permanent | ErrorKind::Transient)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RestoreError {
    pub kind: ErrorKind,
    pub message: String,
    /// When the provider said how long to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The provider's work for this attempt finished and is paid for, but
    /// its result could not be fetched or stored: resume this id (fetch the
    /// output again) instead of starting new, paid work.
    pub resume: Option<String>,
}

impl RestoreError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            resume: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..Self::new(ErrorKind::Throttled, message)
        }
    }

    pub fn outage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Outage, message)
    }

    /// This error, to be retried by fetching `external_id`'s result again.
    pub fn resuming(mut self, external_id: &str) -> Self {
        self.resume = Some(external_id.to_owned());
        if self.kind == ErrorKind::Transient {
            self.kind = ErrorKind::Outage;
        }
        self
    }
}

impl From<crate::storage::StorageError> for RestoreError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::NotFound(key) => {
                RestoreError::permanent(format!("the original photo {key} is missing"))
            }
            e => RestoreError::outage(format!("storage: {e}")),
        }
    }
}

/// Records a provider's id for an attempt before the provider waits on it,
/// so a restart can resume instead of submitting again: `(job, attempt,
/// external id)`. `Ok(false)` when the attempt is no longer this
/// instance's (its write was fenced off): the work must be abandoned.
pub type RecordSubmission =
    Arc<dyn Fn(Uuid, u32, String) -> BoxFuture<'static, Result<bool, String>> + Send + Sync>;

/// A restoration provider (config `restoration.provider`).
pub trait Restorer: Send + Sync {
    /// `replicate`, `local` or `instant`, as stored on the job.
    fn name(&self) -> &'static str;

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest,
        record: RecordSubmission,
    ) -> BoxFuture<'a, Result<Restored, RestoreError>>;

    /// Stops the provider's work `external_id` (a refunded order's attempt
    /// in flight), best effort; providers that run in process have nothing
    /// to cancel (their result is discarded).
    fn cancel<'a>(&'a self, external_id: &'a str) -> BoxFuture<'a, ()> {
        let _ = external_id;
        Box::pin(async {})
    }
}

/// Restores one photo file into another with the configured provider, by way
/// of a scratch storage directory (the same path a shop's photo takes).
/// Returns the restored photo's size.
pub async fn restore_file(
    settings: &crate::config::Settings,
    input: &std::path::Path,
    output: &std::path::Path,
) -> Result<u64, RestoreError> {
    let data = tokio::fs::read(input)
        .await
        .map_err(|e| RestoreError::permanent(format!("cannot read {}: {e}", input.display())))?;
    let format = image::guess_format(&data)
        .map_err(|_| RestoreError::permanent(format!("{} is not a photo", input.display())))?;
    let scratch = tempfile::tempdir().map_err(|e| RestoreError::transient(e.to_string()))?;
    let storage = Storage::local(scratch.path()).map_err(|e| RestoreError::transient(e.to_string()))?;
    let ext = format.extensions_str().first().copied().unwrap_or("img");
    let request = RestoreRequest {
        job_id: Uuid::now_v7(),
        attempt: 1,
        input_key: format!("input.{ext}"),
        content_type: format.to_mime_type().to_owned(),
        output_key: format!("output.{ext}"),
        external_id: None,
        step: Step::Repair,
        seed: None,
    };
    storage.put(&request.input_key, data.into()).await?;
    let restorer = from_settings(settings, storage.clone(), replicate::PredictionNotices::default())?;
    let record: RecordSubmission = Arc::new(|_, _, _| Box::pin(async { Ok(true) }));
    let restored = restorer.restore(&request, record).await?;
    let bytes = storage.get(&restored.output_key).await?;
    tokio::fs::write(output, &bytes)
        .await
        .map_err(|e| RestoreError::permanent(format!("cannot write {}: {e}", output.display())))?;
    Ok(restored.bytes)
}

/// The provider the configuration names.
pub fn from_settings(
    settings: &crate::config::Settings,
    storage: Storage,
    notices: replicate::PredictionNotices,
) -> Result<Arc<dyn Restorer>, RestoreError> {
    use crate::config::RestorationProvider;
    Ok(match settings.restoration_provider() {
        RestorationProvider::Instant => Arc::new(instant::InstantRestorer::new(storage)),
        RestorationProvider::Local => Arc::new(local::LocalRestorer::new(
            storage,
            crate::validation::PhotoLimits::from_settings(&settings.uploads),
            crate::restoration::Options {
                keep_tone: settings.restoration.keep_tone,
            },
        )),
        RestorationProvider::Replicate => Arc::new(replicate::ReplicateRestorer::new(
            &settings.replicate,
            &settings.options,
            &settings.uploads,
            storage,
            notices,
        )?),
    })
}
