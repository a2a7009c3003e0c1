//! `refunds`, `refund_notices` and `payment_audit`: money the shop gives
//! back, refunds Stripe told of before their payment, and payments the shop
//! turned down.
//!
//! A refund row is an outbox entry: written (`pending`) in the transaction
//! that decides it, claimed with a lease by one instance's `Refunder`,
//! completed after the provider answered. Every completion is fenced by the
//! claimer's name, so a lease taken over mid-call cannot be completed twice.

use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{RefundStatus, payments::RefundReason};

/// A refund to write.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub order_id: Option<Uuid>,
    pub checkout_session_id: Option<&'a str>,
    pub payment_intent_id: &'a str,
    pub amount: i64,
    /// The whole payment this refund is part of.
    pub payment_amount: i64,
    pub currency: &'a str,
    pub reason: RefundReason,
    /// Same key, same refund: at the provider and here.
    pub idempotency_key: &'a str,
    pub detail: &'a Value,
}

/// Writes a refund unless one with the same key exists; returns its id
/// either way.
pub async fn insert(conn: &mut PgConnection, refund: &NewRefund<'_>) -> Result<Uuid, sqlx::Error> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO refunds (id, order_id, checkout_session_id, payment_intent_id, amount, payment_amount,
                              currency, reason, idempotency_key, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(crate::domain::new_id())
    .bind(refund.order_id)
    .bind(refund.checkout_session_id)
    .bind(refund.payment_intent_id)
    .bind(refund.amount)
    .bind(refund.payment_amount)
    .bind(refund.currency)
    .bind(refund.reason.as_str())
    .bind(refund.idempotency_key)
    .bind(refund.detail)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        None => {
            sqlx::query_scalar("SELECT id FROM refunds WHERE idempotency_key = $1")
                .bind(refund.idempotency_key)
                .fetch_one(conn)
                .await
        }
    }
}

/// A refund as the `Refunder` works on it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: Uuid,
    pub order_id: Option<Uuid>,
    pub checkout_session_id: Option<String>,
    pub payment_intent_id: String,
    pub amount: i64,
    pub payment_amount: i64,
    pub currency: String,
    pub reason: String,
    pub idempotency_key: String,
    pub attempts: i32,
}

/// Claims up to `limit` due refunds for `owner` until `lease_secs` from now:
/// `pending` ones whose time has come, `sending` ones whose claimer's lease
/// ran out, and with `include_own` those this instance's name held before a
/// restart. Each claim counts an attempt.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    owner: &str,
    lease_secs: f64,
    limit: i64,
    include_own: bool,
) -> Result<Vec<RefundRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE refunds SET status = 'sending', locked_by = $1, attempts = attempts + 1,
                lease_until = now() + make_interval(secs => $2), updated_at = now()
         WHERE id IN (
             SELECT id FROM refunds
             WHERE (status = 'pending' AND next_attempt_at <= now())
                OR (status = 'sending' AND (lease_until < now() OR ($4 AND locked_by = $1)))
             ORDER BY next_attempt_at
             LIMIT $3
             FOR NO KEY UPDATE SKIP LOCKED)
         RETURNING id, order_id, checkout_session_id, payment_intent_id, amount, payment_amount, currency,
                   reason, idempotency_key, attempts",
    )
    .bind(owner)
    .bind(lease_secs)
    .bind(limit)
    .bind(include_own)
    .fetch_all(db)
    .await
}

/// Claims one pending refund for `owner` (a caller that wants it done now).
pub async fn claim_one(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: &str,
    lease_secs: f64,
) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE refunds SET status = 'sending', locked_by = $2, attempts = attempts + 1,
                lease_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND status = 'pending'
         RETURNING id, order_id, checkout_session_id, payment_intent_id, amount, payment_amount, currency,
                   reason, idempotency_key, attempts",
    )
    .bind(id)
    .bind(owner)
    .bind(lease_secs)
    .fetch_optional(db)
    .await
}

/// A refund's state, for a caller that waits on it.
pub async fn status(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT status, provider_refund_id FROM refunds WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// `sending → succeeded` with the provider's refund id; false when this
/// instance no longer holds the row.
pub async fn mark_succeeded(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    provider_refund_id: &str,
) -> Result<bool, sqlx::Error> {
    transition(RefundStatus::Sending, RefundStatus::Succeeded)?;
    let done = sqlx::query(
        "UPDATE refunds SET status = 'succeeded', provider_refund_id = $3, locked_by = NULL, lease_until = NULL,
                last_error = NULL, completed_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'sending' AND locked_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(provider_refund_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `sending → pending`, due again in `wait` by the database's clock.
pub async fn retry_after(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: &str,
    wait: std::time::Duration,
    error: &str,
) -> Result<bool, sqlx::Error> {
    transition(RefundStatus::Sending, RefundStatus::Pending)?;
    let done = sqlx::query(
        "UPDATE refunds SET status = 'pending', next_attempt_at = now() + make_interval(secs => $3),
                last_error = $4, locked_by = NULL,
                lease_until = NULL, updated_at = now()
         WHERE id = $1 AND status = 'sending' AND locked_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(wait.as_secs_f64())
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `sending → failed` for good.
pub async fn mark_failed(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    error: &str,
) -> Result<bool, sqlx::Error> {
    transition(RefundStatus::Sending, RefundStatus::Failed)?;
    let done = sqlx::query(
        "UPDATE refunds SET status = 'failed', last_error = $3, locked_by = NULL, lease_until = NULL,
                completed_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'sending' AND locked_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn transition(from: RefundStatus, to: RefundStatus) -> Result<(), sqlx::Error> {
    from.transition(to)
        .map(drop)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))
}

/// What the provider has been asked to give back of a payment, and has:
/// the total of its succeeded refunds.
pub async fn succeeded_for_payment(
    db: impl PgExecutor<'_>,
    payment_intent: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::int8 FROM refunds WHERE payment_intent_id = $1 AND status = 'succeeded'",
    )
    .bind(payment_intent)
    .fetch_one(db)
    .await
}

/// What is promised back of a payment and not failed: what a new refund
/// must leave room for.
pub async fn committed_for_payment(
    db: impl PgExecutor<'_>,
    payment_intent: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::int8 FROM refunds WHERE payment_intent_id = $1 AND status <> 'failed'",
    )
    .bind(payment_intent)
    .fetch_one(db)
    .await
}

/// A refund as the order view shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundView {
    pub id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub status: String,
    pub provider_refund_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

/// The order's refunds, oldest first.
pub async fn for_order(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Vec<RefundView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, amount, currency, reason, status, provider_refund_id, created_at, completed_at
         FROM refunds WHERE order_id = $1 ORDER BY created_at, id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await
}

/// Marks `images` as given back by `refund_id` (each at most once).
pub async fn assign_images(
    conn: &mut PgConnection,
    refund_id: Uuid,
    images: &[Uuid],
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE images SET refund_id = $1, updated_at = now() WHERE id = ANY($2) AND refund_id IS NULL",
    )
    .bind(refund_id)
    .bind(images)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// A `charge.refunded` the shop has no order for (yet).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundNotice {
    pub amount_refunded: i64,
    pub refunded: bool,
}

/// Serialises everything the shop does about one payment within a
/// transaction: its order being made and its refund being heard. Without
/// it, a refund arriving while the payment's order is being written finds
/// no order (not yet committed) and the paid transaction, having already
/// looked for a refund notice, makes a live order of a refunded payment.
pub async fn lock_payment(conn: &mut PgConnection, payment_intent: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('payment:' || $1, 0))")
        .bind(payment_intent)
        .execute(conn)
        .await
        .map(drop)
}

/// Keeps (or raises) what Stripe said was refunded of a payment.
pub async fn record_notice(
    conn: &mut PgConnection,
    payment_intent: &str,
    amount_refunded: i64,
    refunded: bool,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refund_notices (payment_intent_id, amount_refunded, refunded, event_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (payment_intent_id) DO UPDATE
         SET amount_refunded = greatest(refund_notices.amount_refunded, EXCLUDED.amount_refunded),
             refunded = refund_notices.refunded OR EXCLUDED.refunded,
             event_id = EXCLUDED.event_id, received_at = now()",
    )
    .bind(payment_intent)
    .bind(amount_refunded)
    .bind(refunded)
    .bind(event_id)
    .execute(conn)
    .await
    .map(drop)
}

/// One audit row for a payment the shop turned down or could not honour.
pub async fn audit(
    conn: &mut PgConnection,
    checkout_session_id: &str,
    payment_intent: Option<&str>,
    event_id: Option<&str>,
    reason: &str,
    detail: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_audit (checkout_session_id, payment_intent_id, event_id, reason, detail)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(checkout_session_id)
    .bind(payment_intent)
    .bind(event_id)
    .bind(reason)
    .bind(detail)
    .execute(conn)
    .await
    .map(drop)
}
