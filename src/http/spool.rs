//! Upload parts spooled to unnamed temporary files as they arrive, so that a
//! batch of fifty 50 MiB photos costs disk, not memory. Each part is hashed
//! and counted on the way; one over the size limit is drained, not kept.
//! Every read waits no longer than the body's minimum rate allows.

use std::path::{Path, PathBuf};

use axum::{
    extract::multipart::{Field, Multipart, MultipartError},
    http::StatusCode,
};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::ApiError;
use crate::{config::UploadSettings, domain::pace::BodyPace, validation::Rejection};

/// One part on disk. The file has no name: it is gone when dropped, even
/// after a crash.
#[derive(Debug)]
pub struct Spooled {
    pub file: std::fs::File,
    pub bytes: u64,
    pub sha256: String,
}

/// Where parts are spooled: `uploads.spool_dir`, or the system's temp dir.
pub fn dir(uploads: &UploadSettings) -> PathBuf {
    if uploads.spool_dir.trim().is_empty() {
        std::env::temp_dir()
    } else {
        PathBuf::from(uploads.spool_dir.trim())
    }
}

/// The minimum rate of an upload body, from `uploads.min_body_rate`.
pub fn pace(uploads: &UploadSettings) -> BodyPace {
    BodyPace::new(
        uploads.min_body_rate,
        uploads.min_body_rate_grace,
        std::time::Instant::now(),
    )
}

/// The next part, within the body's deadline.
pub async fn next_field<'a>(
    multipart: &'a mut Multipart,
    pace: &BodyPace,
) -> Result<Option<Field<'a>>, ApiError> {
    within(pace.deadline(), pace.rate(), multipart.next_field())
        .await?
        .map_err(multipart_error)
}

/// Reads the rest of `field` to a spooled file, or to nothing when it
/// grows past `limit` (then the answer is the rejection, the body still
/// read to its end so that the client hears it).
pub async fn spool(
    field: &mut Field<'_>,
    pace: &mut BodyPace,
    limit: u64,
    dir: &Path,
) -> Result<Result<Spooled, Rejection>, ApiError> {
    let file = tempfile::tempfile_in(dir).map_err(spool_error)?;
    let mut out = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut too_large = false;
    while let Some(chunk) = next_chunk(field, pace).await? {
        if too_large || bytes + chunk.len() as u64 > limit {
            too_large = true;
            continue;
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(spool_error)?;
        bytes += chunk.len() as u64;
    }
    if too_large {
        return Ok(Err(Rejection::TooLarge { limit }));
    }
    out.flush().await.map_err(spool_error)?;
    Ok(Ok(Spooled {
        file: out.into_std().await,
        bytes,
        sha256: hex::encode(hasher.finalize()),
    }))
}

/// Reads and forgets the rest of `field`.
pub async fn drain(field: &mut Field<'_>, pace: &mut BodyPace) -> Result<(), ApiError> {
    while next_chunk(field, pace).await?.is_some() {}
    Ok(())
}

async fn next_chunk(field: &mut Field<'_>, pace: &mut BodyPace) -> Result<Option<Bytes>, ApiError> {
    let chunk = within(pace.deadline(), pace.rate(), field.chunk())
        .await?
        .map_err(multipart_error)?;
    if let Some(chunk) = &chunk {
        pace.received(chunk.len());
    }
    Ok(chunk)
}

async fn within<T>(
    deadline: Option<std::time::Instant>,
    rate: u64,
    read: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    match deadline {
        None => Ok(read.await),
        Some(at) => tokio::time::timeout_at(at.into(), read)
            .await
            .map_err(|_| too_slow(rate)),
    }
}

fn too_slow(rate: u64) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the upload arrived slower than the minimum of {} KB/s; send it again on a better connection",
            (rate / 1024).max(1)
        ),
    )
}

fn spool_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "cannot spool an upload part");
    ApiError::unavailable("the shop cannot take uploads right now; please try again")
}

pub fn multipart_error(e: MultipartError) -> ApiError {
    if let Some(timeout) = ApiError::body_timeout(&e) {
        return timeout;
    }
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request_too_large"
    } else {
        "invalid_multipart"
    };
    ApiError::new(status, code, e.body_text())
}
