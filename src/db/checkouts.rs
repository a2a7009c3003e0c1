//! `checkout_sessions` and `checkout_photos`: every checkout the shop opened
//! at its payment provider, with exactly what it sold.

use std::time::Duration;

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    refunds::RefundNotice,
    uploads::{FileRow, UploadSessionRow},
};
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
    /// The options sold for it, in chain order.
    pub options: Vec<String>,
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
    // Comma-joined per photo (option ids hold no commas): arrays of arrays
    // must be rectangular.
    let options: Vec<String> = photos.iter().map(|p| p.options.join(",")).collect();
    sqlx::query(
        "INSERT INTO checkout_photos (checkout_session_id, position, file_upload_id, unit_amount, options)
         SELECT $1, t.position, t.file, t.amount, coalesce(string_to_array(nullif(t.options, ''), ','), '{}')
         FROM UNNEST($2::int4[], $3::uuid[], $4::int8[], $5::text[]) AS t(position, file, amount, options)",
    )
    .bind(&row.id)
    .bind(&positions)
    .bind(&files)
    .bind(&amounts)
    .bind(&options)
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
    pub options: Vec<String>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Option<i64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

pub async fn photo_views(db: impl PgExecutor<'_>, id: &str) -> Result<Vec<SoldPhotoView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.file_upload_id, p.unit_amount, p.options, f.filename, f.content_type, f.bytes, f.width, f.height
         FROM checkout_photos p LEFT JOIN file_uploads f ON f.id = p.file_upload_id
         WHERE p.checkout_session_id = $1 ORDER BY p.position",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// A checkout a payment names, locked with its upload session, and what
/// the shop already knows of that payment: every question the payment
/// paths ask before they decide, in two statements.
#[derive(Debug, Clone)]
pub struct PaymentContext {
    pub checkout: CheckoutRow,
    /// Locked; `None` once swept.
    pub session: Option<UploadSessionRow>,
    /// The order this checkout already made.
    pub order_for_checkout: Option<Uuid>,
    /// The order the upload session already has (paid by another checkout).
    pub order_for_session: Option<Uuid>,
    /// A refund Stripe told of before this payment.
    pub refunded_first: Option<RefundNotice>,
}

#[derive(sqlx::FromRow)]
struct LockedCheckout {
    #[sqlx(flatten)]
    checkout: CheckoutRow,
    order_for_checkout: Option<Uuid>,
    order_for_session: Option<Uuid>,
    notice_amount_refunded: Option<i64>,
    notice_refunded: Option<bool>,
}

/// Locks the upload session first and the checkout second (the order every
/// writer of both takes, so payment paths, uploads and new checkouts queue
/// instead of deadlocking); `None` for a checkout the shop never opened.
pub async fn lock_for_payment(
    conn: &mut PgConnection,
    id: &str,
    payment_intent: Option<&str>,
) -> Result<Option<PaymentContext>, sqlx::Error> {
    let session: Option<UploadSessionRow> = sqlx::query_as(
        "SELECT id, status, email, created_at, expires_at FROM upload_sessions
         WHERE id = (SELECT upload_session_id FROM checkout_sessions WHERE id = $1) FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let locked: Option<LockedCheckout> = sqlx::query_as(
        "SELECT c.id, c.upload_session_id, c.provider, c.status, c.url, c.quantity, c.unit_amount, c.amount_total,
                c.currency, c.email, c.idempotency_key, c.livemode, c.line_items, c.payment_intent_id, c.created_at,
                c.expires_at,
                (SELECT o.id FROM orders o WHERE o.stripe_checkout_session_id = c.id) AS order_for_checkout,
                (SELECT o.id FROM orders o WHERE o.upload_session_id = c.upload_session_id) AS order_for_session,
                n.amount_refunded AS notice_amount_refunded, n.refunded AS notice_refunded
         FROM checkout_sessions c LEFT JOIN refund_notices n ON n.payment_intent_id = $2
         WHERE c.id = $1 FOR NO KEY UPDATE OF c",
    )
    .bind(id)
    .bind(payment_intent)
    .fetch_optional(conn)
    .await?;
    Ok(locked.map(|l| PaymentContext {
        checkout: l.checkout,
        session,
        order_for_checkout: l.order_for_checkout,
        order_for_session: l.order_for_session,
        refunded_first: l.notice_amount_refunded.map(|amount_refunded| RefundNotice {
            amount_refunded,
            refunded: l.notice_refunded.unwrap_or(false),
        }),
    }))
}

/// A photo a checkout sold that its session still holds, at its price.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SoldFile {
    pub unit_amount: i64,
    /// The options sold for it, in chain order.
    pub options: Vec<String>,
    #[sqlx(flatten)]
    pub file: FileRow,
}

/// The photos the checkout sold that session `session_id` still holds, in
/// order, and how many it sold.
pub async fn sold_files(
    db: impl PgExecutor<'_>,
    id: &str,
    session_id: Uuid,
) -> Result<(i64, Vec<SoldFile>), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        sold: i64,
        #[sqlx(flatten)]
        file: SoldFile,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "WITH p AS (SELECT file_upload_id, position, unit_amount, options FROM checkout_photos
                    WHERE checkout_session_id = $1)
         SELECT (SELECT count(*) FROM p) AS sold, p.unit_amount, p.options, f.id, f.session_id, f.filename, f.stem, f.ext,
                f.content_type, f.bytes, f.width, f.height, f.sha256, f.storage_key, f.created_at
         FROM p JOIN file_uploads f ON f.id = p.file_upload_id AND f.session_id = $2
         ORDER BY p.position",
    )
    .bind(id)
    .bind(session_id)
    .fetch_all(db)
    .await?;
    let sold = rows.first().map_or(0, |r| r.sold);
    Ok((sold, rows.into_iter().map(|r| r.file).collect()))
}

/// The checkout is paid (by `payment_intent`), from any state a payment may
/// land in.
pub async fn mark_paid(
    conn: &mut PgConnection,
    id: &str,
    payment_intent: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let from: Vec<&str> = CheckoutStatus::ALL
        .iter()
        .filter(|s| s.can_transition_to(CheckoutStatus::Paid))
        .map(|s| s.as_str())
        .collect();
    let done = sqlx::query(
        "UPDATE checkout_sessions SET status = 'paid', payment_intent_id = coalesce($2, payment_intent_id),
                updated_at = now()
         WHERE id = $1 AND status = ANY($3)",
    )
    .bind(id)
    .bind(payment_intent)
    .bind(&from)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
