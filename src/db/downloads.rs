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
/// when the link is unknown, expired, used up, or its order was refunded
/// in full (a refunded order delivers nothing, and spends no use).
/// Concurrent downloads race on the row, and exactly `max_uses` of them win.
pub async fn spend(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE download_links d SET uses = d.uses + 1, last_used_at = now()
         FROM orders o
         WHERE d.token_hash = $1 AND d.uses < d.max_uses AND d.expires_at > now()
           AND o.id = d.order_id AND o.status <> 'refunded'
         RETURNING d.order_id",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Whether the link exists and opens an order that was refunded.
pub async fn opens_refunded_order(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM download_links d JOIN orders o ON o.id = d.order_id
                        WHERE d.token_hash = $1
                          AND o.status = 'refunded')",
    )
    .bind(token_hash)
    .fetch_one(db)
    .await
}
