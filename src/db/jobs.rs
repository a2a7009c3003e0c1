//! `restoration_jobs` (and the image rows their outcomes complete): every
//! step of an attempt is checkpointed here before the work it stands for.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{ImageStatus, JobStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub image_id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub provider: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub external_id: Option<String>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

impl JobRow {
    pub fn status(&self) -> JobStatus {
        self.status.parse().unwrap_or(JobStatus::Failed)
    }
}

const COLUMNS: &str = "id, image_id, order_id, status, provider, attempts, max_attempts, external_id, next_attempt_at, last_error";

pub async fn by_image(db: impl PgExecutor<'_>, image_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM restoration_jobs WHERE image_id = $1"
    )))
    .bind(image_id)
    .fetch_optional(db)
    .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM restoration_jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The job, locked for the caller's transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM restoration_jobs WHERE id = $1 FOR NO KEY UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// `failed → queued` for an operator's retry: due now, with `extra_attempts`
/// more than it has spent; its image goes back to `processing`, its error cleared.
pub async fn retry_failed(
    conn: &mut PgConnection,
    job: &JobRow,
    extra_attempts: i32,
) -> Result<bool, sqlx::Error> {
    JobStatus::Failed
        .transition(JobStatus::Queued)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    ImageStatus::Failed
        .transition(ImageStatus::Processing)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE restoration_jobs SET status = 'queued', max_attempts = attempts + $2, next_attempt_at = now(),
                external_id = NULL, last_error = NULL, error_kind = NULL, finished_at = NULL, updated_at = now()
         WHERE id = $1 AND status = 'failed'",
    )
    .bind(job.id)
    .bind(extra_attempts)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let done = sqlx::query(
        "UPDATE images SET status = 'processing', error = NULL, completed_at = NULL, updated_at = now()
         WHERE id = $1 AND status = 'failed'",
    )
    .bind(job.image_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a job between two states that carry no extra facts.
async fn set(conn: &mut PgConnection, id: Uuid, from: JobStatus, to: JobStatus) -> Result<bool, sqlx::Error> {
    from.transition(to)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE restoration_jobs SET status = $3, updated_at = now(),
                next_attempt_at = CASE WHEN $3 = 'queued' THEN coalesce(next_attempt_at, now()) ELSE next_attempt_at END
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `pending → queued`: the job waits for the pool.
pub async fn queue(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    set(conn, id, JobStatus::Pending, JobStatus::Queued).await
}

/// `queued → processing`: a new attempt starts; returns its number.
pub async fn start_attempt(
    conn: &mut PgConnection,
    id: Uuid,
    provider: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE restoration_jobs SET status = 'processing', attempts = attempts + 1, provider = $2,
                external_id = NULL, next_attempt_at = NULL, started_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'queued' RETURNING attempts",
    )
    .bind(id)
    .bind(provider)
    .fetch_optional(conn)
    .await
}

/// Records the provider's id for the running attempt, before it is waited on.
pub async fn record_external_id(
    db: impl PgExecutor<'_>,
    id: Uuid,
    external_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE restoration_jobs SET external_id = $2, updated_at = now()
         WHERE id = $1 AND status = 'processing' AND external_id IS NULL",
    )
    .bind(id)
    .bind(external_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `processing → queued` after a transient failure, due again at `at`.
pub async fn retry_at(
    conn: &mut PgConnection,
    id: Uuid,
    at: OffsetDateTime,
    error: &str,
    kind: &str,
) -> Result<bool, sqlx::Error> {
    JobStatus::Processing
        .transition(JobStatus::Queued)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE restoration_jobs SET status = 'queued', next_attempt_at = $2, last_error = $3, error_kind = $4,
                external_id = NULL, updated_at = now()
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(at)
    .bind(error)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The job ends `failed`, keeping its error.
pub async fn fail(
    conn: &mut PgConnection,
    id: Uuid,
    from: JobStatus,
    error: &str,
    kind: &str,
) -> Result<bool, sqlx::Error> {
    from.transition(JobStatus::Failed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE restoration_jobs SET status = 'failed', last_error = $3, error_kind = $4, next_attempt_at = NULL,
                finished_at = now(), updated_at = now()
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(error)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `processing → completed`.
pub async fn complete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    JobStatus::Processing
        .transition(JobStatus::Completed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE restoration_jobs SET status = 'completed', finished_at = now(), updated_at = now(), last_error = NULL
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The image's restored photo is stored: `processing → completed`.
pub async fn image_restored(
    conn: &mut PgConnection,
    image_id: Uuid,
    restored_key: &str,
    bytes: i64,
) -> Result<bool, sqlx::Error> {
    ImageStatus::Processing
        .transition(ImageStatus::Completed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE images SET status = 'completed', restored_key = $2, restored_bytes = $3, error = NULL,
                completed_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(image_id)
    .bind(restored_key)
    .bind(bytes)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
