//! Queries of the cleanup sweeps. Each row is claimed with `SKIP LOCKED`,
//! so instances sweeping at once share the work instead of repeating it.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// One unpaid upload session past its expiry, locked for the caller's
/// transaction; `None` when there is none (or all are being swept). A
/// session waiting for a delayed payment is never abandoned.
pub async fn next_abandoned_session(conn: &mut PgConnection) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM upload_sessions WHERE status NOT IN ('paid', 'awaiting_payment') AND expires_at < now()
         ORDER BY expires_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED",
    )
    .fetch_optional(conn)
    .await
}

pub async fn delete_session(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM upload_sessions WHERE id = $1 AND status NOT IN ('paid', 'awaiting_payment')")
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes download links that can no longer be used.
pub async fn delete_dead_links(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM download_links WHERE expires_at < now() OR uses >= max_uses")
        .execute(db)
        .await
        .map(|r| r.rows_affected())
}

/// Finished orders whose photos are past retention, oldest first.
pub async fn due_for_purge(
    db: impl PgExecutor<'_>,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM orders
         WHERE purged_at IS NULL AND status IN ('completed', 'failed', 'refunded')
           AND coalesce(completed_at, refunded_at, updated_at) < $1
         ORDER BY completed_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records that an order's photos are gone; returns when.
pub async fn mark_purged(db: impl PgExecutor<'_>, id: Uuid) -> Result<OffsetDateTime, sqlx::Error> {
    sqlx::query_scalar("UPDATE orders SET purged_at = coalesce(purged_at, now()), updated_at = now() WHERE id = $1 RETURNING purged_at")
        .bind(id)
        .fetch_one(db)
        .await
}
