//! What the Monitor measures, in one round trip: the queues, and the
//! restoration jobs finished within the alert windows (orders refunded are
//! left out: their photos were cancelled, not failed).

use std::time::Duration;

use sqlx::PgExecutor;

#[derive(Debug, Clone, Copy, Default, PartialEq, sqlx::FromRow)]
pub struct Measurements {
    /// Restoration jobs not finished (pending, queued, processing).
    pub restoration_depth: i64,
    /// Emails not sent yet (pending, sending).
    pub email_depth: i64,
    /// 95th percentile of the attempts finished in the slow-processing window, seconds.
    pub p95_seconds: Option<f64>,
    pub timed_jobs: i64,
    /// Jobs finished in the error-rate window, and how many of them failed.
    pub finished_jobs: i64,
    pub failed_jobs: i64,
}

pub async fn measure(
    db: impl PgExecutor<'_>,
    slow_window: Duration,
    error_window: Duration,
) -> Result<Measurements, sqlx::Error> {
    sqlx::query_as(
        "WITH timed AS (
             SELECT extract(epoch FROM j.finished_at - j.started_at)::float8 AS seconds
             FROM restoration_jobs j JOIN orders o ON o.id = j.order_id
             WHERE j.finished_at > now() - make_interval(secs => $1) AND j.started_at IS NOT NULL
               AND j.status IN ('completed', 'failed') AND o.status <> 'refunded'),
         finished AS (
             SELECT j.status FROM restoration_jobs j JOIN orders o ON o.id = j.order_id
             WHERE j.finished_at > now() - make_interval(secs => $2)
               AND j.status IN ('completed', 'failed') AND o.status <> 'refunded')
         SELECT
             (SELECT count(*) FROM restoration_jobs WHERE status IN ('pending', 'queued', 'processing')) AS restoration_depth,
             (SELECT count(*) FROM email_queue WHERE status IN ('pending', 'sending')) AS email_depth,
             (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) FROM timed) AS p95_seconds,
             (SELECT count(*) FROM timed) AS timed_jobs,
             (SELECT count(*) FROM finished) AS finished_jobs,
             (SELECT count(*) FROM finished WHERE status = 'failed') AS failed_jobs",
    )
    .bind(slow_window.as_secs_f64())
    .bind(error_window.as_secs_f64())
    .fetch_one(db)
    .await
}
