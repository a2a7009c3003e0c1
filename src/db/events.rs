//! `order_events`: the append-only journal of transitions (SSE and audits).

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

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
