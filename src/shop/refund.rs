//! Refunds: deciding one (a `refunds` row in the caller's transaction),
//! doing it (the provider call, by the `Refunder` or by a caller that wants
//! it done now), and what money given back does to its order.
//!
//! The row is committed before the provider is called and completed after,
//! with the same idempotency key on every try: a crash between the call and
//! the completion retries the call, and the provider refunds once.

use std::time::Duration;

use rand::RngExt;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    config::Settings,
    db::{
        self,
        orders::OrderRow,
        refunds::{NewRefund, RefundRow},
    },
    domain::{IdKind, OrderStatus, backoff, format_id, payments::RefundReason},
    providers::payments::{PaymentError, PaymentProvider, RefundRequest},
};

/// How long a claimed refund stays its claimer's.
pub const LEASE: Duration = Duration::from_secs(60);
/// The longest wait between two attempts of one refund.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What a refund needs from the shop.
#[derive(Clone, Copy)]
pub struct RefundDeps<'a> {
    pub db: &'a PgPool,
    pub settings: &'a Settings,
    pub payments: &'a dyn PaymentProvider,
    /// This instance's name, which fences the completion.
    pub owner: &'a str,
}

/// What money given back did to its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderRefunded {
    pub order_id: Option<Uuid>,
    /// The order is refunded in full now (and was not before): its work stopped.
    pub now_refunded: bool,
    /// Predictions in flight to cancel at the restoration provider.
    pub cancel: Vec<String>,
}

/// Records that `total_refunded` of the order's payment has been given back
/// (a cumulative figure: Stripe's `amount_refunded`, or the shop's own
/// succeeded refunds). A full refund ends a live or completed order:
/// `refunded`, its unfinished photos and jobs cancelled, its photos no
/// longer delivered, in this transaction; the caller cancels the returned
/// predictions after the commit. A failed order, which delivered nothing,
/// stays `failed` with its money back.
pub async fn record_refunded(
    tx: &mut PgConnection,
    order: &OrderRow,
    total_refunded: i64,
    provider_says_full: bool,
) -> Result<OrderRefunded, sqlx::Error> {
    db::orders::set_amount_refunded(tx, order.id, total_refunded).await?;
    let mut effect = OrderRefunded {
        order_id: Some(order.id),
        ..OrderRefunded::default()
    };
    let full = provider_says_full || (order.amount_total > 0 && total_refunded >= order.amount_total);
    let from = order.status();
    if !full || from == OrderStatus::Failed || !from.can_transition_to(OrderStatus::Refunded) {
        return Ok(effect);
    }
    effect.cancel = db::orders::predictions_in_flight(tx, order.id).await?;
    let cancelled = db::orders::fail_unfinished(tx, order.id, "cancelled: the order was refunded").await?;
    db::orders::set_status(tx, order.id, from, OrderStatus::Refunded).await?;
    db::events::append(
        tx,
        order.id,
        None,
        OrderStatus::Refunded.as_str(),
        &json!({"amount_refunded": total_refunded.max(order.amount_refunded), "photos_cancelled": cancelled}),
    )
    .await?;
    effect.now_refunded = true;
    tracing::info!(order_id = %order.id, total_refunded, cancelled, "order refunded in full; its work stops");
    Ok(effect)
}

/// Writes a refund (once per `refund.idempotency_key`) in the caller's
/// transaction; the `Refunder` does it after the commit.
pub async fn request(tx: &mut PgConnection, refund: &NewRefund<'_>) -> Result<Uuid, sqlx::Error> {
    let id = db::refunds::insert(tx, refund).await?;
    tracing::info!(refund_id = %id, reason = refund.reason.as_str(), amount = refund.amount,
                   payment_intent = refund.payment_intent_id, "refund queued");
    Ok(id)
}

/// How one try of a refund ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    Succeeded {
        provider_refund_id: String,
        effect: OrderRefunded,
    },
    /// A transient failure: tried again at `at`.
    Retrying { at: OffsetDateTime, error: String },
    /// Refused by the provider, or out of attempts: an operator is told.
    Failed { error: String },
    /// Another instance took the row over meanwhile; it completes it.
    Lost,
}

/// Does one claimed refund at the provider and completes its row.
#[tracing::instrument(skip_all, fields(refund_id = %row.id))]
pub async fn execute(deps: RefundDeps<'_>, row: &RefundRow) -> Result<Executed, sqlx::Error> {
    let previously = db::refunds::succeeded_for_payment(deps.db, &row.payment_intent_id).await?;
    let reference = match (row.order_id, &row.checkout_session_id) {
        (Some(order), _) => format_id(IdKind::Order, order),
        (None, Some(checkout)) => checkout.clone(),
        (None, None) => row.payment_intent_id.clone(),
    };
    let request = RefundRequest {
        payment_intent: row.payment_intent_id.clone(),
        amount: row.amount,
        amount_total: row.payment_amount,
        previously_refunded: previously,
        reference,
        reason: row.reason.clone(),
        idempotency_key: row.idempotency_key.clone(),
    };
    let outcome = deps.payments.refund(&request).await;
    fail::fail_point!("refund::after_provider_call");
    let executed = match outcome {
        Ok(provider_refund_id) => succeeded(deps, row, provider_refund_id).await?,
        Err(PaymentError::Rejected { status, message }) => {
            failed(
                deps,
                row,
                &format!("the payment provider refused the refund ({status}): {message}"),
            )
            .await?
        }
        Err(PaymentError::Unavailable(message))
            if row.attempts >= deps.settings.refunds.max_attempts as i32 =>
        {
            failed(
                deps,
                row,
                &format!("still failing after {} attempts: {message}", row.attempts),
            )
            .await?
        }
        Err(PaymentError::Unavailable(message)) => {
            let jitter = rand::rng().random_range(0.75..1.25);
            let wait = backoff::delay(
                deps.settings.refunds.backoff_base,
                MAX_BACKOFF,
                row.attempts.max(1) as u32,
                jitter,
            );
            let at = OffsetDateTime::now_utc() + wait;
            if db::refunds::retry_after(deps.db, row.id, deps.owner, wait, &message).await? {
                tracing::warn!(?wait, error = %message, "refund will be retried");
                Executed::Retrying { at, error: message }
            } else {
                Executed::Lost
            }
        }
    };
    let label = match &executed {
        Executed::Succeeded { .. } => "succeeded",
        Executed::Retrying { .. } => "retried",
        Executed::Failed { .. } => "failed",
        Executed::Lost => "lost",
    };
    metrics::counter!("restoreclick_refunds_total", "reason" => row.reason.clone(), "outcome" => label)
        .increment(1);
    Ok(executed)
}

async fn succeeded(
    deps: RefundDeps<'_>,
    row: &RefundRow,
    provider_refund_id: String,
) -> Result<Executed, sqlx::Error> {
    let mut tx = deps.db.begin().await?;
    // The order first, as every writer of an order's rows locks it.
    let order = match row.order_id {
        Some(id) => db::orders::lock(&mut tx, id).await?,
        None => None,
    };
    if !db::refunds::mark_succeeded(&mut tx, row.id, deps.owner, &provider_refund_id).await? {
        tracing::warn!("the refund was taken over while the provider answered; its new holder completes it");
        return Ok(Executed::Lost);
    }
    let effect = match order {
        // The failed photos' own price back: their photos have already
        // stopped, so it stops nothing else, even when it is the whole
        // amount and an operator's retry has reopened the order since. A
        // photo the customer had refunded in the review window is the same:
        // that one photo's price, and the order stays as it is.
        Some(order)
            if row.reason == RefundReason::FailedPhotos.as_str()
                || row.reason == RefundReason::Customer.as_str() =>
        {
            let total = db::refunds::succeeded_for_payment(&mut *tx, &row.payment_intent_id).await?;
            db::orders::set_amount_refunded(&mut tx, order.id, total).await?;
            OrderRefunded {
                order_id: Some(order.id),
                ..OrderRefunded::default()
            }
        }
        Some(order) => {
            let total = db::refunds::succeeded_for_payment(&mut *tx, &row.payment_intent_id).await?;
            record_refunded(&mut tx, &order, total, false).await?
        }
        None => OrderRefunded::default(),
    };
    tx.commit().await?;
    tracing::info!(provider_refund_id, amount = row.amount, reason = %row.reason, "refund done");
    Ok(Executed::Succeeded {
        provider_refund_id,
        effect,
    })
}

async fn failed(deps: RefundDeps<'_>, row: &RefundRow, error: &str) -> Result<Executed, sqlx::Error> {
    let mut tx = deps.db.begin().await?;
    if !db::refunds::mark_failed(&mut tx, row.id, deps.owner, error).await? {
        return Ok(Executed::Lost);
    }
    let payload = json!({
        "reason": "refund_failed",
        "refund_id": row.id,
        "order_id": row.order_id.map(|o| format_id(IdKind::Order, o)),
        "checkout_session_id": row.checkout_session_id,
        "payment_intent": row.payment_intent_id,
        "amount": row.amount,
        "currency": row.currency,
        "refund_reason": row.reason,
        "error": error,
    });
    db::emails::enqueue_admin_alert(
        &mut tx,
        &deps.settings.mail,
        &format!("refund:{}:failed", row.id.simple()),
        row.order_id,
        &payload,
    )
    .await?;
    tx.commit().await?;
    tracing::error!(error, amount = row.amount, "refund failed; an operator is told");
    Ok(Executed::Failed {
        error: error.to_owned(),
    })
}

/// Claims refund `id` and does it now (an operator waiting on it); `None`
/// when another instance holds it already (its `Refunder` does it).
pub async fn execute_now(deps: RefundDeps<'_>, id: Uuid) -> Result<Option<Executed>, sqlx::Error> {
    let Some(row) = db::refunds::claim_one(deps.db, id, deps.owner, LEASE.as_secs_f64()).await? else {
        return Ok(None);
    };
    execute(deps, &row).await.map(Some)
}

/// The idempotency key of a refund decided for a payment (not an order):
/// the same for the webhook, the poll and the sweep, so however many of
/// them see the payment, one refund is made.
pub fn payment_key(payment_intent: &str, reason: RefundReason) -> String {
    format!("refund-{payment_intent}-{}", reason.as_str())
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorRefundError {
    #[error("no such order")]
    NotFound,
    #[error("this order has no payment to refund")]
    NoPayment,
    #[error("this order is refunded already")]
    AlreadyRefunded,
    #[error("the amount must be between 1 and {max}")]
    InvalidAmount { max: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An operator's refund, queued and then tried at once.
#[derive(Debug, Clone)]
pub struct OperatorRefund {
    pub refund_id: Uuid,
    pub amount: i64,
    /// How the immediate try ended; `None` when another instance holds it.
    pub executed: Option<Executed>,
}

/// Refunds `amount` (default: all that is left) of an order's payment for
/// an operator. The key is made from what was committed back before and the
/// amount, so a repeated request refunds once.
pub async fn operator_refund(
    deps: RefundDeps<'_>,
    order_id: Uuid,
    amount: Option<i64>,
) -> Result<OperatorRefund, OperatorRefundError> {
    let mut tx = deps.db.begin().await?;
    let order = db::orders::lock(&mut tx, order_id)
        .await?
        .ok_or(OperatorRefundError::NotFound)?;
    let intent = order
        .stripe_payment_intent_id
        .clone()
        .ok_or(OperatorRefundError::NoPayment)?;
    let committed = db::refunds::committed_for_payment(&mut *tx, &intent).await?;
    let refundable = order.amount_total - committed.max(order.amount_refunded);
    if refundable <= 0 || order.status() == OrderStatus::Refunded {
        return Err(OperatorRefundError::AlreadyRefunded);
    }
    let amount = amount.unwrap_or(refundable);
    if amount <= 0 || amount > refundable {
        return Err(OperatorRefundError::InvalidAmount { max: refundable });
    }
    let order_ref = format_id(IdKind::Order, order_id);
    let key = format!("refund-{order_ref}-operator-{committed}-{amount}");
    let refund_id = request(
        &mut tx,
        &NewRefund {
            order_id: Some(order_id),
            checkout_session_id: Some(&order.stripe_checkout_session_id),
            payment_intent_id: &intent,
            amount,
            payment_amount: order.amount_total,
            currency: &order.currency,
            reason: RefundReason::Operator,
            idempotency_key: &key,
            detail: &json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    let executed = execute_now(deps, refund_id).await?;
    Ok(OperatorRefund {
        refund_id,
        amount,
        executed,
    })
}
