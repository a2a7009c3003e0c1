//! `order_events`: the append-only journal of transitions (SSE and audits).

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One journal entry, as the live-progress stream sends it.
#[derive(Debug, sqlx::FromRow)]
pub struct JournalEntry {
    pub id: i64,
    pub image_id: Option<Uuid>,
    pub kind: String,
    pub status: String,
    pub detail: Value,
    pub created_at: time::OffsetDateTime,
}

/// The id of the order's latest entry (0 before the first).
pub async fn last_id(pool: &PgPool, order_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM order_events WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
}

/// The order's entries after `after`, oldest first, at most `limit`.
pub async fn since(
    pool: &PgPool,
    order_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<JournalEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, image_id, kind, status, detail, created_at FROM order_events
         WHERE order_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(order_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Appends one transition of an order (`image_id = None`) or of one of its images.
pub async fn append(
    conn: &mut PgConnection,
    order_id: Uuid,
    image_id: Option<Uuid>,
    status: &str,
    detail: &Value,
) -> Result<(), sqlx::Error> {
    let kind = if image_id.is_some() { "image" } else { "order" };
    sqlx::query(
        "INSERT INTO order_events (order_id, image_id, kind, status, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(image_id)
    .bind(kind)
    .bind(status)
    .bind(detail)
    .execute(conn)
    .await
    .map(drop)
}
