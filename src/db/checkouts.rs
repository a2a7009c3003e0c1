//! `checkout_sessions` and `checkout_photos`: every checkout the shop opened
//! at its payment provider, with exactly what it sold.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{CheckoutStatus, payments::LineItem};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckoutRow {
    pub id: String,
    /// `None` once the upload session was swept (the checkout is kept).
    pub upload_session_id: Option<Uuid>,
    pub provider: String,
    pub status: String,
    pub url: String,
    pub quantity: i32,
    pub unit_amount: i64,
    pub amount_total: i64,
    pub currency: String,
    pub email: Option<String>,
    pub idempotency_key: String,
    pub livemode: bool,
    pub line_items: sqlx::types::Json<Vec<LineItem>>,
    pub payment_intent_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl CheckoutRow {
    pub fn status(&self) -> CheckoutStatus {
        self.status.parse().unwrap_or(CheckoutStatus::Expired)
    }
}

/// A photo a checkout sold, at its price.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FrozenPhoto {
    pub position: i32,
    pub file_upload_id: Uuid,
    pub unit_amount: i64,
}

const COLUMNS: &str = "id, upload_session_id, provider, status, url, quantity, unit_amount, amount_total, currency, email, idempotency_key, livemode, line_items, payment_intent_id, created_at, expires_at";

/// Records a checkout and the photos it sold; a second insert of the same id
/// (an idempotent retry at the provider) is a no-op.
pub async fn insert(
    conn: &mut PgConnection,
    row: &CheckoutRow,
    photos: &[FrozenPhoto],
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO checkout_sessions (id, upload_session_id, provider, status, url, quantity, unit_amount,
                                        amount_total, currency, email, idempotency_key, livemode, line_items, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&row.id)
    .bind(row.upload_session_id)
    .bind(&row.provider)
    .bind(&row.status)
    .bind(&row.url)
    .bind(row.quantity)
    .bind(row.unit_amount)
    .bind(row.amount_total)
    .bind(&row.currency)
    .bind(&row.email)
    .bind(&row.idempotency_key)
    .bind(row.livemode)
    .bind(&row.line_items)
    .bind(row.expires_at)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(());
    }
    let positions: Vec<i32> = photos.iter().map(|p| p.position).collect();
    let files: Vec<Uuid> = photos.iter().map(|p| p.file_upload_id).collect();
    let amounts: Vec<i64> = photos.iter().map(|p| p.unit_amount).collect();
    sqlx::query(
        "INSERT INTO checkout_photos (checkout_session_id, position, file_upload_id, unit_amount)
         SELECT $1, * FROM UNNEST($2::int4[], $3::uuid[], $4::int8[])",
    )
    .bind(&row.id)
    .bind(&positions)
    .bind(&files)
    .bind(&amounts)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<CheckoutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkout_sessions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The checkout, locked until the transaction ends: every payment path
/// (webhook, poll, sweep) for one checkout runs one at a time.
pub async fn lock(conn: &mut PgConnection, id: &str) -> Result<Option<CheckoutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkout_sessions WHERE id = $1 FOR NO KEY UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The photos the checkout sold, in order.
pub async fn photos(db: impl PgExecutor<'_>, id: &str) -> Result<Vec<FrozenPhoto>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, file_upload_id, unit_amount FROM checkout_photos
         WHERE checkout_session_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

pub async fn count_for_session(db: impl PgExecutor<'_>, upload_session_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM checkout_sessions WHERE upload_session_id = $1")
        .bind(upload_session_id)
        .fetch_one(db)
        .await
}

/// The session's checkouts that can still be paid.
pub async fn open_for_session(
    db: impl PgExecutor<'_>,
    upload_session_id: Uuid,
) -> Result<Vec<CheckoutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkout_sessions WHERE upload_session_id = $1 AND status = 'open' ORDER BY created_at"
    )))
    .bind(upload_session_id)
    .fetch_all(db)
    .await
}

/// Moves a checkout from `from` to `to`; false when it was not in `from`.
pub async fn set_status(
    conn: &mut PgConnection,
    id: &str,
    from: CheckoutStatus,
    to: CheckoutStatus,
) -> Result<bool, sqlx::Error> {
    from.transition(to)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE checkout_sessions SET status = $3, updated_at = now() WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps the payment the provider named for this checkout.
pub async fn set_payment_intent(
    conn: &mut PgConnection,
    id: &str,
    payment_intent: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE checkout_sessions SET payment_intent_id = $2, updated_at = now()
         WHERE id = $1 AND payment_intent_id IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(payment_intent)
    .execute(conn)
    .await
    .map(drop)
}

/// Takes the right to ask the provider about this checkout now: true at
/// most once per `every` (across instances), so a success page polling
/// fast costs the provider one call every `every`.
pub async fn claim_sync(db: impl PgExecutor<'_>, id: &str, every: Duration) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE checkout_sessions SET synced_at = now()
         WHERE id = $1 AND status IN ('open', 'awaiting_payment')
           AND (synced_at IS NULL OR synced_at < now() - make_interval(secs => $2))",
    )
    .bind(id)
    .bind(every.as_secs_f64())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Checkouts at `provider` whose fate the shop has not heard and should ask
/// about, claimed for one sync each (at most once per `every`): open ones
/// past their expiry, and ones waiting for a delayed payment.
pub async fn claim_unsettled(
    db: impl PgExecutor<'_>,
    provider: &str,
    every: Duration,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE checkout_sessions SET synced_at = now()
         WHERE id IN (
             SELECT id FROM checkout_sessions
             WHERE provider = $1
               AND ((status = 'open' AND expires_at < now()) OR status = 'awaiting_payment')
               AND (synced_at IS NULL OR synced_at < now() - make_interval(secs => $2))
             ORDER BY expires_at
             LIMIT $3
             FOR NO KEY UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(provider)
    .bind(every.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Whether the upload session has a checkout waiting for a delayed payment
/// (its photos must stay).
pub async fn awaiting_for_session(
    db: impl PgExecutor<'_>,
    upload_session_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM checkout_sessions WHERE upload_session_id = $1 AND status = 'awaiting_payment')",
    )
    .bind(upload_session_id)
    .fetch_one(db)
    .await
}

/// Checkouts waiting for a delayed payment longer than `window` past their
/// expiry: the payment is not coming.
pub async fn awaiting_past(
    db: impl PgExecutor<'_>,
    window: Duration,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM checkout_sessions
         WHERE status = 'awaiting_payment' AND expires_at + make_interval(secs => $1) < now()
         ORDER BY expires_at LIMIT $2",
    )
    .bind(window.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A photo a checkout sold, as `GET /api/checkout/{id}` shows it (the
/// upload row may be gone: then only its id and price are known).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SoldPhotoView {
    pub file_upload_id: Uuid,
    pub unit_amount: i64,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Option<i64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

pub async fn photo_views(db: impl PgExecutor<'_>, id: &str) -> Result<Vec<SoldPhotoView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.file_upload_id, p.unit_amount, f.filename, f.content_type, f.bytes, f.width, f.height
         FROM checkout_photos p LEFT JOIN file_uploads f ON f.id = p.file_upload_id
         WHERE p.checkout_session_id = $1 ORDER BY p.position",
    )
    .bind(id)
    .fetch_all(db)
    .await
}
