//! `download_links`: expiring, use-counted links to an order's ZIP.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

pub async fn insert(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    token_hash: &[u8],
    expires_at: OffsetDateTime,
    max_uses: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO download_links (id, order_id, token_hash, expires_at, max_uses) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(crate::domain::new_id())
    .bind(order_id)
    .bind(token_hash)
    .bind(expires_at)
    .bind(max_uses)
    .execute(db)
    .await
    .map(drop)
}

/// Spends one use of the link, atomically: the order it opens, or `None`
/// when the link is unknown, expired or used up. Concurrent downloads
/// race on the row, and exactly `max_uses` of them win.
pub async fn spend(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE download_links SET uses = uses + 1, last_used_at = now()
         WHERE token_hash = $1 AND uses < max_uses AND expires_at > now()
         RETURNING order_id",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}
