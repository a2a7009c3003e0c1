//! Restoration providers: turn one stored original into one stored restored
//! photo. `replicate` calls Replicate's predictions API, `local` runs the
//! embedded engine, `instant` copies the input (for benchmarks of the
//! orchestration itself).

pub mod instant;
pub mod local;
pub mod replicate;
pub mod signature;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::storage::Storage;

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
}

/// What a finished attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub output_key: String,
    pub bytes: u64,
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Permanent,
    Transient,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Permanent => "permanent",
            ErrorKind::Transient => "transient",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RestoreError {
    pub kind: ErrorKind,
    pub message: String,
    /// When the provider said how long to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl RestoreError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<crate::storage::StorageError> for RestoreError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::NotFound(key) => {
                RestoreError::permanent(format!("the original photo {key} is missing"))
            }
            e => RestoreError::transient(e.to_string()),
        }
    }
}

/// Records a provider's id for an attempt before the provider waits on it,
/// so a restart can resume instead of submitting again.
pub type RecordSubmission = Arc<dyn Fn(Uuid, String) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

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
    };
    storage.put(&request.input_key, data.into()).await?;
    let restorer = from_settings(settings, storage.clone(), replicate::PredictionNotices::default())?;
    let record: RecordSubmission = Arc::new(|_, _| Box::pin(async { Ok(()) }));
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
        RestorationProvider::Local => Arc::new(local::LocalRestorer::new(storage)),
        RestorationProvider::Replicate => Arc::new(replicate::ReplicateRestorer::new(
            &settings.replicate,
            storage,
            notices,
        )?),
    })
}
