//! `image_reviews`: the customer's one redo or refund of a restored photo
//! within the review window, and when that window opened.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// A photo's review, as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReviewRow {
    pub image_id: Uuid,
    pub action: String,
    pub idempotency_key: Option<String>,
    pub refund_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

/// The photo's review, locked for the caller's transaction.
pub async fn for_image(conn: &mut PgConnection, image_id: Uuid) -> Result<Option<ReviewRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT image_id, action, idempotency_key, refund_id, created_at FROM image_reviews
         WHERE image_id = $1 FOR NO KEY UPDATE",
    )
    .bind(image_id)
    .fetch_optional(conn)
    .await
}

/// A review to record.
#[derive(Debug, Clone)]
pub struct NewReview<'a> {
    pub image_id: Uuid,
    pub order_id: Uuid,
    pub action: &'a str,
    pub note: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub refund_id: Option<Uuid>,
}

/// Records the photo's review; false when it has one already (a photo is
/// reviewed once).
pub async fn insert(conn: &mut PgConnection, review: &NewReview<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO image_reviews (image_id, order_id, action, note, idempotency_key, refund_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (image_id) DO NOTHING",
    )
    .bind(review.image_id)
    .bind(review.order_id)
    .bind(review.action)
    .bind(review.note)
    .bind(review.idempotency_key)
    .bind(review.refund_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The reviews of an order's photos: (image, action).
pub async fn for_order(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT image_id, action FROM image_reviews WHERE order_id = $1")
        .bind(order_id)
        .fetch_all(db)
        .await
}

/// When the order first finished, by its journal (a redo reopens the order
/// and finishes it again; the window stays where it opened).
pub async fn window_opened(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(created_at) FROM order_events
         WHERE order_id = $1 AND kind = 'order' AND status IN ('completed', 'failed')",
    )
    .bind(order_id)
    .fetch_one(db)
    .await
}
