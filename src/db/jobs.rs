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

/// Starts the job's next attempt and returns its number, in one statement
/// (one round trip, one commit): `pending → queued → processing` for a
/// first attempt, whose image goes `uploaded → processing` with its journal
/// entry; `queued → processing` for a retry that is due. `None` when the
/// rows are not in those states (another actor moved them, the original is
/// not stored yet, the retry is not due, or the order is no longer
/// processing: a refund on any instance stops new attempts everywhere).
pub async fn begin_attempt(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    image_id: Uuid,
    provider: &str,
) -> Result<Option<i32>, sqlx::Error> {
    for (from, to) in [
        (JobStatus::Pending, JobStatus::Queued),
        (JobStatus::Queued, JobStatus::Processing),
    ] {
        from.transition(to)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    }
    ImageStatus::Uploaded
        .transition(ImageStatus::Processing)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    sqlx::query_scalar(
        "WITH job AS (
             UPDATE restoration_jobs j SET status = 'processing', attempts = attempts + 1, provider = $3,
                    external_id = NULL, next_attempt_at = NULL, started_at = now(), updated_at = now()
             FROM images i
             WHERE j.id = $1 AND i.id = $2 AND j.image_id = i.id
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = j.order_id AND o.status = 'processing')
               AND ((j.status = 'pending' AND i.status = 'uploaded')
                 OR (j.status = 'queued' AND i.status = 'processing'
                     AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= now())))
             RETURNING j.attempts),
         image AS (
             UPDATE images SET status = 'processing', updated_at = now()
             WHERE id = $2 AND status = 'uploaded' AND EXISTS (SELECT 1 FROM job)
             RETURNING id, order_id),
         entry AS (
             INSERT INTO order_events (order_id, image_id, kind, status)
             SELECT order_id, id, 'image', 'processing' FROM image)
         SELECT attempts FROM job",
    )
    .bind(job_id)
    .bind(image_id)
    .bind(provider)
    .fetch_optional(db)
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

/// The attempt restored the photo, in one statement: the job
/// `processing → completed`, its image `processing → completed` with the
/// restored photo's key and size, and the journal entry. False when the job
/// was not processing.
pub async fn finish_restored(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    restored_key: &str,
    bytes: i64,
) -> Result<bool, sqlx::Error> {
    JobStatus::Processing
        .transition(JobStatus::Completed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    ImageStatus::Processing
        .transition(ImageStatus::Completed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let completed: Option<i64> = sqlx::query_scalar(
        "WITH job AS (
             UPDATE restoration_jobs SET status = 'completed', finished_at = now(), updated_at = now(),
                    last_error = NULL
             WHERE id = $1 AND status = 'processing'
             RETURNING image_id),
         image AS (
             UPDATE images SET status = 'completed', restored_key = $2, restored_bytes = $3, error = NULL,
                    completed_at = now(), updated_at = now()
             WHERE id = (SELECT image_id FROM job) AND status = 'processing'
             RETURNING id, order_id),
         entry AS (
             INSERT INTO order_events (order_id, image_id, kind, status)
             SELECT order_id, id, 'image', 'completed' FROM image)
         SELECT count(*) FROM job",
    )
    .bind(job_id)
    .bind(restored_key)
    .bind(bytes)
    .fetch_optional(db)
    .await?;
    Ok(completed.unwrap_or(0) == 1)
}
