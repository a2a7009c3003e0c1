//! `restoration_jobs` (and the image rows their outcomes complete): every
//! step of an attempt is checkpointed here before the work it stands for.

use std::time::Duration;

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
    /// The position of the chain step the job is on (`image_steps`).
    pub step: i32,
    /// The job's attempts when that step began.
    pub step_attempts_from: i32,
    /// The seed a redo asked for, for the models that take one.
    pub seed: Option<i64>,
}

impl JobRow {
    pub fn status(&self) -> JobStatus {
        self.status.parse().unwrap_or(JobStatus::Failed)
    }
}

const COLUMNS: &str = "id, image_id, order_id, status, provider, attempts, max_attempts, external_id, next_attempt_at, last_error, step, step_attempts_from, seed";

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

/// What asking to start an attempt found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Begun {
    /// The attempt started; its number.
    Started(i32),
    /// A retry not due yet, by the database's clock: ask again after this long.
    NotDue(Duration),
    /// The rows are not in a state to start (another actor moved them, the
    /// original is not stored yet, the order stopped being processed here).
    Moved,
}

/// Starts the job's next attempt, in one statement (one round trip, one
/// commit): `pending → queued → processing` for a first attempt, whose
/// image goes `uploaded → processing` with its journal entry; `queued →
/// processing` for a retry that is due. Only for an order still
/// `processing` and held by `owner` (a refund, or another instance taking
/// the lease, stops new attempts everywhere). Due times are compared by the
/// database's clock alone; a retry not due says how long to wait.
pub async fn begin_attempt(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    image_id: Uuid,
    provider: &str,
    owner: &str,
) -> Result<Begun, sqlx::Error> {
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
    let (started, wait): (Option<i32>, Option<f64>) = sqlx::query_as(
        "WITH job AS (
             UPDATE restoration_jobs j SET status = 'processing', attempts = attempts + 1, provider = $3,
                    external_id = NULL, next_attempt_at = NULL, started_at = now(), updated_at = now()
             FROM images i
             WHERE j.id = $1 AND i.id = $2 AND j.image_id = i.id
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = j.order_id AND o.status = 'processing'
                                                    AND o.owner_id = $4)
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
         SELECT (SELECT attempts FROM job),
                (SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM restoration_jobs
                 WHERE id = $1 AND status = 'queued' AND next_attempt_at > now())",
    )
    .bind(job_id)
    .bind(image_id)
    .bind(provider)
    .bind(owner)
    .fetch_one(db)
    .await?;
    Ok(match (started, wait) {
        (Some(attempt), _) => Begun::Started(attempt),
        (None, Some(secs)) => Begun::NotDue(Duration::from_secs_f64(secs.max(0.0))),
        (None, None) => Begun::Moved,
    })
}

/// Records the provider's id for attempt `attempt`, before it is waited on;
/// false (a no-op) when the attempt is no longer this instance's.
pub async fn record_external_id(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
    owner: &str,
    external_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE restoration_jobs SET external_id = $4, updated_at = now() WHERE id = $1 AND status = 'processing' AND attempts = $2
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = restoration_jobs.order_id AND o.owner_id = $3) AND external_id IS NULL",
    )
    .bind(id)
    .bind(attempt)
    .bind(owner)
    .bind(external_id)
    .execute(db)
    .await?;
    fenced(done.rows_affected() == 1, id, "record the provider's id")
}

fn fenced(done: bool, id: Uuid, what: &str) -> Result<bool, sqlx::Error> {
    if !done {
        tracing::warn!(job_id = %id, what, "the attempt is no longer this instance's; nothing written");
    }
    Ok(done)
}

/// `processing → queued` after a failed attempt, due again in `wait` by the
/// database's clock. An uncharged failure (throttled, or the shop's own
/// outage) gives its attempt back, while its run of uncharged failures is
/// younger than `uncharged_deadline`; false when that run is older (the
/// caller charges it) or the attempt is no longer this instance's.
#[allow(clippy::too_many_arguments)]
pub async fn retry_after(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    owner: &str,
    wait: Duration,
    error: &str,
    kind: &str,
    uncharged_deadline: Option<Duration>,
) -> Result<bool, sqlx::Error> {
    JobStatus::Processing
        .transition(JobStatus::Queued)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE restoration_jobs SET status = 'queued', next_attempt_at = now() + make_interval(secs => $4),
                last_error = $5, error_kind = $6, external_id = NULL, updated_at = now(),
                attempts = attempts - CASE WHEN $7::float8 IS NULL THEN 0 ELSE 1 END,
                uncharged_since = CASE WHEN $7::float8 IS NULL THEN NULL ELSE coalesce(uncharged_since, now()) END
         WHERE id = $1 AND status = 'processing' AND attempts = $2
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = restoration_jobs.order_id AND o.owner_id = $3)
           AND ($7::float8 IS NULL OR uncharged_since IS NULL
                OR uncharged_since > now() - make_interval(secs => $7))",
    )
    .bind(id)
    .bind(attempt)
    .bind(owner)
    .bind(wait.as_secs_f64())
    .bind(error)
    .bind(kind)
    .bind(uncharged_deadline.map(|d| d.as_secs_f64()))
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

/// Attempt `attempt` failed for good: `processing → failed`, its image
/// `processing → failed` with the error and the journal entry, in one
/// statement. False (a no-op) when the attempt is no longer this
/// instance's or no longer running.
pub async fn fail_attempt(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
    owner: &str,
    error: &str,
    kind: &str,
) -> Result<bool, sqlx::Error> {
    JobStatus::Processing
        .transition(JobStatus::Failed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    ImageStatus::Processing
        .transition(ImageStatus::Failed)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let failed: Option<i64> = sqlx::query_scalar(
        "WITH job AS (
             UPDATE restoration_jobs SET status = 'failed', last_error = $4, error_kind = $5,
                    next_attempt_at = NULL, finished_at = now(), updated_at = now(), uncharged_since = NULL
             WHERE id = $1 AND status = 'processing' AND attempts = $2
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = restoration_jobs.order_id AND o.owner_id = $3)
             RETURNING image_id),
         image AS (
             UPDATE images SET status = 'failed', error = $4, completed_at = now(), updated_at = now()
             WHERE id = (SELECT image_id FROM job) AND status = 'processing'
             RETURNING id, order_id),
         entry AS (
             INSERT INTO order_events (order_id, image_id, kind, status, detail)
             SELECT order_id, id, 'image', 'failed', jsonb_build_object('error', $4::text) FROM image)
         SELECT count(*) FROM job",
    )
    .bind(id)
    .bind(attempt)
    .bind(owner)
    .bind(error)
    .bind(kind)
    .fetch_optional(db)
    .await?;
    fenced(failed.unwrap_or(0) == 1, id, "record the failure")
}

/// The attempt's step was the chain's last and restored the photo, in one
/// statement: the job `processing → completed`, its step completed with
/// the output, its image `processing → completed` with the restored
/// photo's key and size, and the journal entry. False (a no-op) when the
/// attempt is no longer this instance's or no longer running.
pub async fn finish_restored(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    attempt: i32,
    owner: &str,
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
        "WITH old AS (SELECT step, step_attempts_from, provider, external_id FROM restoration_jobs WHERE id = $1),
         job AS (
             UPDATE restoration_jobs SET status = 'completed', finished_at = now(), updated_at = now(),
                    last_error = NULL, uncharged_since = NULL
             WHERE id = $1 AND status = 'processing' AND attempts = $2
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = restoration_jobs.order_id AND o.owner_id = $3)
             RETURNING image_id, attempts),
         step AS (
             UPDATE image_steps s SET status = 'completed', attempts = job.attempts - old.step_attempts_from,
                    provider = old.provider, external_id = old.external_id, output_key = $4,
                    output_bytes = $5, finished_at = now()
             FROM job, old WHERE s.image_id = job.image_id AND s.position = old.step),
         image AS (
             UPDATE images SET status = 'completed', restored_key = $4, restored_bytes = $5, error = NULL,
                    completed_at = now(), updated_at = now()
             WHERE id = (SELECT image_id FROM job) AND status = 'processing'
             RETURNING id, order_id),
         entry AS (
             INSERT INTO order_events (order_id, image_id, kind, status)
             SELECT order_id, id, 'image', 'completed' FROM image)
         SELECT count(*) FROM job",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(owner)
    .bind(restored_key)
    .bind(bytes)
    .fetch_optional(db)
    .await?;
    fenced(completed.unwrap_or(0) == 1, job_id, "record the restored photo")
}

/// A step that is not the chain's last finished, in one statement: its row
/// completed with the stored output, and the job moved to the next step,
/// `processing → queued`, due now, with a fresh budget of `step_attempts`
/// (attempt numbers go on counting, so an answer for this step's attempt can
/// never be taken for the next step's), and a journal entry for the live
/// progress. False (a no-op) when the attempt is no longer this instance's,
/// no longer running, or no longer on step `step`.
#[allow(clippy::too_many_arguments)]
pub async fn advance_step(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    attempt: i32,
    owner: &str,
    step: i32,
    output_key: &str,
    bytes: i64,
    step_attempts: i32,
) -> Result<bool, sqlx::Error> {
    JobStatus::Processing
        .transition(JobStatus::Queued)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let advanced: Option<i64> = sqlx::query_scalar(
        "WITH old AS (SELECT step_attempts_from, provider, external_id FROM restoration_jobs WHERE id = $1),
         job AS (
             UPDATE restoration_jobs SET step = step + 1, step_attempts_from = attempts, status = 'queued',
                    max_attempts = attempts + $7, external_id = NULL, next_attempt_at = now(),
                    last_error = NULL, error_kind = NULL, uncharged_since = NULL, updated_at = now()
             WHERE id = $1 AND status = 'processing' AND attempts = $2 AND step = $4
               AND EXISTS (SELECT 1 FROM orders o WHERE o.id = restoration_jobs.order_id AND o.owner_id = $3)
             RETURNING image_id, order_id, attempts),
         step AS (
             UPDATE image_steps s SET status = 'completed', attempts = job.attempts - old.step_attempts_from,
                    provider = old.provider, external_id = old.external_id, output_key = $5,
                    output_bytes = $6, finished_at = now()
             FROM job, old WHERE s.image_id = job.image_id AND s.position = $4
             RETURNING s.name, s.position, job.order_id, job.image_id),
         entry AS (
             INSERT INTO order_events (order_id, image_id, kind, status, detail)
             SELECT order_id, image_id, 'image', 'processing',
                    jsonb_build_object('step', name, 'position', position, 'step_status', 'completed')
             FROM step)
         SELECT count(*) FROM job",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(owner)
    .bind(step)
    .bind(output_key)
    .bind(bytes)
    .bind(step_attempts.max(1))
    .fetch_optional(db)
    .await?;
    fenced(advanced.unwrap_or(0) == 1, job_id, "record the finished step")
}

/// The stored output of the image's step at `position` (the next step's
/// input), once that step is completed.
pub async fn step_output(
    db: impl PgExecutor<'_>,
    image_id: Uuid,
    position: i32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT output_key FROM image_steps WHERE image_id = $1 AND position = $2 AND status = 'completed'",
    )
    .bind(image_id)
    .bind(position)
    .fetch_optional(db)
    .await
    .map(Option::flatten)
}

/// A customer's redo of a restored photo, in one statement: the job
/// `completed → queued` at the chain's first step with a fresh budget of
/// `attempts` and `seed`, every step `pending` again, and the image
/// `completed → processing` (its restored photo stays until the new one
/// replaces it). False when the job is not completed.
pub async fn redo(
    conn: &mut PgConnection,
    job_id: Uuid,
    attempts: i32,
    seed: i64,
) -> Result<bool, sqlx::Error> {
    JobStatus::Completed
        .transition(JobStatus::Queued)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    ImageStatus::Completed
        .transition(ImageStatus::Processing)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done: Option<i64> = sqlx::query_scalar(
        "WITH job AS (
             UPDATE restoration_jobs SET status = 'queued', step = 0, step_attempts_from = attempts,
                    max_attempts = attempts + $2, seed = $3, external_id = NULL, next_attempt_at = now(),
                    last_error = NULL, error_kind = NULL, uncharged_since = NULL, finished_at = NULL,
                    updated_at = now()
             WHERE id = $1 AND status = 'completed'
             RETURNING image_id),
         steps AS (
             UPDATE image_steps SET status = 'pending', attempts = 0, external_id = NULL, finished_at = NULL
             WHERE image_id = (SELECT image_id FROM job)),
         image AS (
             UPDATE images SET status = 'processing', completed_at = NULL, updated_at = now()
             WHERE id = (SELECT image_id FROM job) AND status = 'completed'
             RETURNING id)
         SELECT count(*) FROM image",
    )
    .bind(job_id)
    .bind(attempts.max(1))
    .bind(seed)
    .fetch_optional(conn)
    .await?;
    Ok(done.unwrap_or(0) == 1)
}
