//! `customers`, `orders`, `images` and `restoration_jobs`.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{ImageStatus, OrderStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub upload_session_id: Uuid,
    pub stripe_checkout_session_id: String,
    pub stripe_payment_intent_id: Option<String>,
    pub email: Option<String>,
    pub status: String,
    pub access_token_hash: Vec<u8>,
    pub amount_total: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub image_count: i32,
    pub failed_images: i32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
    pub refunded_at: Option<OffsetDateTime>,
    pub purged_at: Option<OffsetDateTime>,
    /// How many times an operator reopened the order to retry photos.
    pub retry_round: i32,
}

impl OrderRow {
    pub fn status(&self) -> OrderStatus {
        self.status.parse().unwrap_or(OrderStatus::Failed)
    }

    /// Refunded in full (a refund moved it to `refunded`): it delivers
    /// nothing any more.
    pub fn is_fully_refunded(&self) -> bool {
        self.status() == OrderStatus::Refunded
    }
}

const ORDER_COLUMNS: &str = "id, upload_session_id, stripe_checkout_session_id, stripe_payment_intent_id, email, status, access_token_hash, amount_total, amount_refunded, currency, image_count, failed_images, created_at, updated_at, completed_at, refunded_at, purged_at, retry_round";

/// An image with what its restoration job says about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub position: i32,
    pub filename: String,
    pub stem: String,
    pub ext: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i32,
    pub height: i32,
    pub status: String,
    pub temp_key: String,
    pub original_key: String,
    pub restored_key: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    /// What the customer paid for this photo.
    pub unit_amount: i64,
    /// The refund that gave its price back, if one did.
    pub refund_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
    /// The options the customer bought for it, in chain order.
    pub options: Vec<String>,
    /// Its job's status, the step it is on and its attempts when that step
    /// began (`None`, 0, 0 without a job).
    pub job_status: Option<String>,
    pub step: i32,
    pub step_attempts_from: i32,
    /// Its completed steps' positions, and the attempts each took.
    pub finished_steps: Vec<i32>,
    pub finished_attempts: Vec<i32>,
}

impl ImageRow {
    pub fn status(&self) -> ImageStatus {
        self.status.parse().unwrap_or(ImageStatus::Failed)
    }
}

/// Images with their jobs' attempts and errors; callers add the `WHERE`.
const IMAGE_SELECT: &str = "SELECT i.id, i.order_id, i.position, i.filename, i.stem, i.ext, i.content_type,
        i.bytes, i.width, i.height, i.status, i.temp_key, i.original_key, i.restored_key,
        coalesce(i.error, j.last_error) AS error, coalesce(j.attempts, 0) AS attempts, i.unit_amount, i.refund_id,
        i.created_at, i.completed_at, i.options, j.status AS job_status, coalesce(j.step, 0) AS step,
        coalesce(j.step_attempts_from, 0) AS step_attempts_from,
        ARRAY(SELECT s.position FROM image_steps s WHERE s.image_id = i.id AND s.status = 'completed'
              ORDER BY s.position) AS finished_steps,
        ARRAY(SELECT s.attempts FROM image_steps s WHERE s.image_id = i.id AND s.status = 'completed'
              ORDER BY s.position) AS finished_attempts
    FROM images i LEFT JOIN restoration_jobs j ON j.image_id = i.id";

/// A new order, written in the webhook's transaction.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Uuid,
    pub upload_session_id: Uuid,
    pub checkout_session_id: String,
    pub payment_intent_id: Option<String>,
    pub customer_id: Option<Uuid>,
    pub email: Option<String>,
    pub status: OrderStatus,
    pub access_token_hash: Vec<u8>,
    pub amount_total: i64,
    pub currency: String,
    pub image_count: i32,
}

/// A new image of an order, with its restoration job.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub id: Uuid,
    pub job_id: Uuid,
    pub file_upload_id: Uuid,
    pub position: i32,
    pub filename: String,
    pub stem: String,
    pub ext: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i32,
    pub height: i32,
    pub temp_key: String,
    pub original_key: String,
    /// What the customer paid for this photo (its share of the checkout).
    pub unit_amount: i64,
    /// The options it was sold with, in chain order (its steps after the repair).
    pub options: Vec<String>,
}

/// The customer with this email, made if new. A returning customer's row
/// is only read, never locked, so their concurrent orders do not queue on it.
pub async fn upsert_customer(conn: &mut PgConnection, email: &str) -> Result<Uuid, sqlx::Error> {
    let email = email.trim().to_lowercase();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO customers (id, email) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING RETURNING id",
    )
    .bind(crate::domain::new_id())
    .bind(&email)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => {
            sqlx::query_scalar("SELECT id FROM customers WHERE email = $1")
                .bind(&email)
                .fetch_one(conn)
                .await
        }
    }
}

/// The confirmation email written with a new order.
#[derive(Debug, Clone)]
pub struct Confirmation<'a> {
    pub idempotency_key: &'a str,
    pub to: &'a str,
    pub payload: &'a serde_json::Value,
    pub max_attempts: i32,
}

/// A paid order in one statement: the order, its images with their chains'
/// steps and their restoration jobs (`pending`, on the repair), the journal entries (the order's, then each
/// image's) and the confirmation email row. One round trip whatever the
/// number of photos.
pub async fn insert_paid(
    conn: &mut PgConnection,
    order: &NewOrder,
    images: &[NewImage],
    max_attempts: i32,
    confirmation: Option<Confirmation<'_>>,
) -> Result<(), sqlx::Error> {
    let column = |f: fn(&NewImage) -> String| images.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = images.iter().map(|i| i.id).collect();
    let jobs: Vec<Uuid> = images.iter().map(|i| i.job_id).collect();
    let files: Vec<Uuid> = images.iter().map(|i| i.file_upload_id).collect();
    let positions: Vec<i32> = images.iter().map(|i| i.position).collect();
    let bytes: Vec<i64> = images.iter().map(|i| i.bytes).collect();
    let widths: Vec<i32> = images.iter().map(|i| i.width).collect();
    let heights: Vec<i32> = images.iter().map(|i| i.height).collect();
    let amounts: Vec<i64> = images.iter().map(|i| i.unit_amount).collect();
    // One comma-joined list per image (option ids hold no commas): arrays of
    // arrays must be rectangular, a list per photo is not.
    let options = column(|i| i.options.join(","));
    let journal = serde_json::json!({"images": images.len()});
    sqlx::query(
        "WITH o AS (
             INSERT INTO orders (id, upload_session_id, stripe_checkout_session_id, stripe_payment_intent_id,
                                 customer_id, email, status, access_token_hash, amount_total, currency, image_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id),
         i AS (
             INSERT INTO images (id, order_id, file_upload_id, position, filename, stem, ext, content_type,
                                 bytes, width, height, status, temp_key, original_key, unit_amount, options)
             SELECT t.id, (SELECT id FROM o), t.file, t.position, t.filename, t.stem, t.ext, t.content_type,
                    t.bytes, t.width, t.height, 'pending', t.temp_key, t.original_key, t.amount,
                    coalesce(string_to_array(nullif(t.options, ''), ','), '{}')
             FROM UNNEST($12::uuid[], $13::uuid[], $14::int4[], $15::text[], $16::text[], $17::text[], $18::text[],
                         $19::int8[], $20::int4[], $21::int4[], $22::text[], $23::text[], $24::int8[], $33::text[])
                  AS t(id, file, position, filename, stem, ext, content_type, bytes, width, height, temp_key,
                       original_key, amount, options)
             RETURNING id, options),
         steps AS (
             INSERT INTO image_steps (image_id, position, name)
             SELECT i.id, s.n - 1, s.name
             FROM i, unnest(array_prepend('repair', i.options)) WITH ORDINALITY AS s(name, n)),
         j AS (
             INSERT INTO restoration_jobs (id, image_id, order_id, status, max_attempts)
             SELECT t.job, t.image, (SELECT id FROM o), 'pending', $25
             FROM UNNEST($26::uuid[], $12::uuid[]) AS t(job, image)),
         journal AS (
             INSERT INTO order_events (order_id, image_id, kind, status, detail)
             SELECT id, NULL, 'order', $7, $27 FROM o
             UNION ALL
             SELECT (SELECT id FROM o), t.image, 'image', 'pending', '{}'::jsonb
             FROM UNNEST($12::uuid[]) AS t(image)),
         mail AS (
             INSERT INTO email_queue (id, idempotency_key, order_id, kind, to_email, payload, max_attempts)
             SELECT $28, $29, id, 'order_confirmation', $30, $31, $32 FROM o WHERE $29::text IS NOT NULL
             ON CONFLICT (idempotency_key) DO NOTHING)
         SELECT count(*) FROM o",
    )
    .bind(order.id)
    .bind(order.upload_session_id)
    .bind(&order.checkout_session_id)
    .bind(&order.payment_intent_id)
    .bind(order.customer_id)
    .bind(&order.email)
    .bind(order.status.as_str())
    .bind(&order.access_token_hash)
    .bind(order.amount_total)
    .bind(&order.currency)
    .bind(order.image_count)
    .bind(&ids)
    .bind(&files)
    .bind(&positions)
    .bind(column(|i| i.filename.clone()))
    .bind(column(|i| i.stem.clone()))
    .bind(column(|i| i.ext.clone()))
    .bind(column(|i| i.content_type.clone()))
    .bind(&bytes)
    .bind(&widths)
    .bind(&heights)
    .bind(column(|i| i.temp_key.clone()))
    .bind(column(|i| i.original_key.clone()))
    .bind(&amounts)
    .bind(max_attempts)
    .bind(&jobs)
    .bind(&journal)
    .bind(crate::domain::new_id())
    .bind(confirmation.as_ref().map(|c| c.idempotency_key))
    .bind(confirmation.as_ref().map(|c| c.to))
    .bind(confirmation.as_ref().map(|c| c.payload))
    .bind(confirmation.as_ref().map_or(1, |c| c.max_attempts))
    .bind(&options)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn by_checkout_session(
    db: impl PgExecutor<'_>,
    checkout_id: &str,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE stripe_checkout_session_id = $1"
    )))
    .bind(checkout_id)
    .fetch_optional(db)
    .await
}

pub async fn by_upload_session(
    db: impl PgExecutor<'_>,
    upload_session_id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE upload_session_id = $1"
    )))
    .bind(upload_session_id)
    .fetch_optional(db)
    .await
}

/// The order paid by `payment_intent`, locked for the caller's transaction.
pub async fn lock_by_payment_intent(
    conn: &mut PgConnection,
    payment_intent: &str,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE stripe_payment_intent_id = $1 FOR NO KEY UPDATE"
    )))
    .bind(payment_intent)
    .fetch_optional(conn)
    .await
}

/// The order's images in their order, with attempts counted by their jobs.
pub async fn images(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Vec<ImageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{IMAGE_SELECT} WHERE i.order_id = $1 ORDER BY i.position"
    )))
    .bind(order_id)
    .fetch_all(db)
    .await
}

/// Moves an order from `from` to `to`; false when it was not in `from`.
pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    from: OrderStatus,
    to: OrderStatus,
) -> Result<bool, sqlx::Error> {
    from.transition(to)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE orders SET status = $3, updated_at = now(),
                completed_at = CASE WHEN $3 IN ('completed', 'failed') THEN now() ELSE completed_at END,
                refunded_at = CASE WHEN $3 = 'refunded' THEN now() ELSE refunded_at END
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_amount_refunded(conn: &mut PgConnection, id: Uuid, amount: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE orders SET amount_refunded = greatest(amount_refunded, $2), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(amount)
    .execute(conn)
    .await
    .map(drop)
}

/// Moves an image from `from` to `to`; false when it was not in `from`.
pub async fn set_image_status(
    conn: &mut PgConnection,
    image_id: Uuid,
    from: ImageStatus,
    to: ImageStatus,
    error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    from.transition(to)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE images SET status = $3, error = coalesce($4, error), updated_at = now(),
                completed_at = CASE WHEN $3 IN ('completed', 'failed') THEN now() ELSE completed_at END
         WHERE id = $1 AND status = $2",
    )
    .bind(image_id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(error)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `pending → uploaded` for the order's photos whose originals were just
/// stored, with their journal entries, in one statement.
pub async fn originals_stored(
    conn: &mut PgConnection,
    order_id: Uuid,
    images: &[Uuid],
) -> Result<u64, sqlx::Error> {
    if images.is_empty() {
        return Ok(0);
    }
    ImageStatus::Pending
        .transition(ImageStatus::Uploaded)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "WITH stored AS (
             UPDATE images SET status = 'uploaded', updated_at = now()
             WHERE order_id = $1 AND id = ANY($2) AND status = 'pending'
             RETURNING id)
         INSERT INTO order_events (order_id, image_id, kind, status)
         SELECT $1, id, 'image', 'uploaded' FROM stored",
    )
    .bind(order_id)
    .bind(images)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Live orders with photos still waiting in temp storage: work a restart must resume.
pub async fn awaiting_originals(db: impl PgExecutor<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT o.id FROM orders o JOIN images i ON i.order_id = o.id
         WHERE o.status = 'processing' AND i.status = 'pending'",
    )
    .fetch_all(db)
    .await
}

/// One image with its job's attempts.
pub async fn image(db: impl PgExecutor<'_>, image_id: Uuid) -> Result<Option<ImageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{IMAGE_SELECT} WHERE i.id = $1")))
        .bind(image_id)
        .fetch_optional(db)
        .await
}

/// The order, locked for the caller's transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR NO KEY UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Records the outcome of a finished order: its status and failed photos.
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    to: OrderStatus,
    failed_images: i32,
) -> Result<bool, sqlx::Error> {
    OrderStatus::Processing
        .transition(to)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE orders SET status = $2, failed_images = $3, completed_at = now(), updated_at = now(),
                owner_id = NULL, lease_until = NULL
         WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(failed_images)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails every unfinished image and job of an order (it cannot go on).
pub async fn fail_unfinished(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE restoration_jobs SET status = 'failed', last_error = $2, error_kind = 'permanent',
                next_attempt_at = NULL, finished_at = now(), updated_at = now()
         WHERE order_id = $1 AND status IN ('pending', 'queued', 'processing')",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "UPDATE images SET status = 'failed', error = $2, completed_at = now(), updated_at = now()
         WHERE order_id = $1 AND status IN ('pending', 'uploaded', 'processing')",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// `completed | failed → processing` for an operator's retry: the order is
/// unleased (any instance may take it) and starts a new retry round, whose
/// number it returns.
pub async fn reopen(
    conn: &mut PgConnection,
    id: Uuid,
    from: OrderStatus,
) -> Result<Option<i32>, sqlx::Error> {
    from.transition(OrderStatus::Processing)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    sqlx::query_scalar(
        "UPDATE orders SET status = 'processing', retry_round = retry_round + 1, completed_at = NULL,
                owner_id = NULL, lease_until = NULL, updated_at = now()
         WHERE id = $1 AND status = $2 RETURNING retry_round",
    )
    .bind(id)
    .bind(from.as_str())
    .fetch_optional(conn)
    .await
}

/// The order's failed photos whose price was not given back yet, with that price.
pub async fn failed_unrefunded(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, unit_amount FROM images
         WHERE order_id = $1 AND status = 'failed' AND refund_id IS NULL ORDER BY position",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

/// The provider ids of the order's attempts in flight (to cancel them).
pub async fn predictions_in_flight(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT external_id FROM restoration_jobs
         WHERE order_id = $1 AND status = 'processing' AND external_id IS NOT NULL",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}
