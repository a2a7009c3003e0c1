//! An operator's retry of a failed photo (`POST /admin/jobs/{id}/retry`).
//!
//! Only a finished order is reopened (while an order is live its actor,
//! perhaps on another instance, owns its photos). In one transaction the job
//! goes `failed → queued` with a fresh budget of attempts, its image
//! `failed → processing`, the order `completed | failed → processing` in a
//! new retry round (so its outcome email is sent again, once), and the
//! journal says so. The order is then handed to the actors like a new one.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::Settings,
    db,
    domain::{JobStatus, OrderStatus},
    storage::Storage,
};

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no such restoration job")]
    NotFound,
    #[error("the job is {0}, not failed: only a failed photo can be retried")]
    NotFailed(JobStatus),
    #[error("the order is still {0}: retry its photos once it has finished")]
    OrderLive(OrderStatus),
    #[error("the order was refunded")]
    Refunded,
    #[error("the order's photos were deleted")]
    Purged,
    #[error("the photo's original was never stored, so there is nothing to restore")]
    NoOriginal,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// What a retry reopened.
#[derive(Debug, Clone, Copy)]
pub struct Retried {
    pub job_id: Uuid,
    pub image_id: Uuid,
    pub order_id: Uuid,
    pub retry_round: i32,
}

pub async fn retry_job(
    db: &PgPool,
    storage: &Storage,
    settings: &Settings,
    job_id: Uuid,
) -> Result<Retried, RetryError> {
    let mut tx = db.begin().await?;
    let job = db::jobs::by_id(&mut *tx, job_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    // The order first, as every writer of an order's rows locks it.
    let order = db::orders::lock(&mut tx, job.order_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    let job = db::jobs::lock(&mut tx, job_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    let status = order.status();
    match status {
        OrderStatus::Refunded => return Err(RetryError::Refunded),
        _ if order.purged_at.is_some() => return Err(RetryError::Purged),
        s if s.is_live() => return Err(RetryError::OrderLive(s)),
        _ => {}
    }
    if job.status() != JobStatus::Failed {
        return Err(RetryError::NotFailed(job.status()));
    }
    let image = db::orders::image(&mut *tx, job.image_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    if storage.size(&image.original_key).await?.is_none() {
        return Err(RetryError::NoOriginal);
    }
    let extra = settings.restoration.max_attempts as i32;
    if !db::jobs::retry_failed(&mut tx, &job, extra).await? {
        return Err(RetryError::NotFailed(job.status()));
    }
    let retry_round = db::orders::reopen(&mut tx, order.id, status)
        .await?
        .ok_or(RetryError::OrderLive(status))?;
    let detail = json!({"retry_round": retry_round, "by": "operator"});
    db::events::append(&mut tx, order.id, Some(image.id), "processing", &detail).await?;
    db::events::append(&mut tx, order.id, None, "processing", &detail).await?;
    tx.commit().await?;
    tracing::info!(order_id = %order.id, %job_id, retry_round, "failed photo reopened for a retry");
    Ok(Retried {
        job_id,
        image_id: image.id,
        order_id: order.id,
        retry_round,
    })
}
