//! An order's outcome, once every photo is done: its status from its
//! images, the refund of the photos it could not restore, and its one
//! outcome email, in one transaction.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::refund;
use crate::{
    config::Settings,
    db::{self, emails::EmailKind, refunds::NewRefund},
    domain::{IdKind, ImageStatus, OrderStatus, format_id, payments::RefundReason},
};

/// What finishing an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub status: OrderStatus,
    pub failed_images: usize,
    /// The refund queued for the failed photos, if any.
    pub refund: Option<Uuid>,
}

/// Records an order's outcome from its images (all completed → completed;
/// some failed → completed with `failed_images`; all failed → failed),
/// queues the refund of the failed photos (`refunds.partial`; a total
/// failure always) and the one outcome email that says so. `None` for an
/// order not processing, or with photos still going.
pub async fn finish_order(
    db: &PgPool,
    settings: &Settings,
    order_id: Uuid,
) -> Result<Option<Finished>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(order) = db::orders::lock(&mut tx, order_id).await? else {
        return Ok(None);
    };
    if order.status() != OrderStatus::Processing {
        return Ok(None);
    }
    let images = db::orders::images(&mut *tx, order_id).await?;
    if images.iter().any(|i| !i.status().is_terminal()) {
        return Ok(None);
    }
    let failed: Vec<_> = images
        .iter()
        .filter(|i| i.status() == ImageStatus::Failed)
        .collect();
    let all_failed = failed.len() == images.len();
    let status = if all_failed {
        OrderStatus::Failed
    } else {
        OrderStatus::Completed
    };
    db::orders::finish(&mut tx, order_id, status, failed.len() as i32).await?;
    db::events::append(
        &mut tx,
        order_id,
        None,
        status.as_str(),
        &json!({"completed": images.len() - failed.len(), "failed": failed.len()}),
    )
    .await?;
    let refund = match (
        &order.stripe_payment_intent_id,
        all_failed || settings.refunds.partial,
    ) {
        (Some(intent), true) if !failed.is_empty() => {
            let unrefunded = db::orders::failed_unrefunded(&mut tx, order_id).await?;
            let committed = db::refunds::committed_for_payment(&mut *tx, intent).await?;
            let amounts: Vec<i64> = unrefunded.iter().map(|(_, amount)| *amount).collect();
            let amount = crate::domain::payments::failed_photos_refund(
                &amounts,
                all_failed,
                order.amount_total,
                committed.max(order.amount_refunded),
            );
            if amount > 0 {
                let key = format!(
                    "refund-{}-failed-photos-r{}",
                    format_id(IdKind::Order, order_id),
                    order.retry_round
                );
                let images: Vec<Uuid> = unrefunded.iter().map(|(id, _)| *id).collect();
                let detail = json!({"images": images.iter().map(|i| format_id(IdKind::Image, *i)).collect::<Vec<_>>()});
                let id = refund::request(
                    &mut tx,
                    &NewRefund {
                        order_id: Some(order_id),
                        checkout_session_id: Some(&order.stripe_checkout_session_id),
                        payment_intent_id: intent,
                        amount,
                        payment_amount: order.amount_total,
                        currency: &order.currency,
                        reason: RefundReason::FailedPhotos,
                        idempotency_key: &key,
                        detail: &detail,
                    },
                )
                .await?;
                db::refunds::assign_images(&mut tx, id, &images).await?;
                Some((id, amount))
            } else {
                None
            }
        }
        _ => None,
    };
    if let Some(email) = &order.email {
        let kind = if status == OrderStatus::Completed {
            EmailKind::RestorationComplete
        } else {
            EmailKind::RestorationFailed
        };
        let payload = json!({
            "order_id": format_id(IdKind::Order, order_id),
            "photos": images.len(),
            "failed_photos": failed.iter().map(|i| json!({"filename": i.filename, "error": i.error})).collect::<Vec<_>>(),
            "refund_amount": refund.map(|(_, amount)| amount),
            "currency": order.currency,
        });
        let key = match order.retry_round {
            0 => format!("order:{}:outcome", order_id.simple()),
            round => format!("order:{}:outcome:retry{round}", order_id.simple()),
        };
        db::emails::enqueue(
            &mut tx,
            &key,
            Some(order_id),
            kind,
            email,
            &payload,
            settings.mail.max_attempts as i32,
        )
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("restoreclick_orders_total", "status" => status.as_str()).increment(1);
    tracing::info!(%order_id, status = status.as_str(), failed = failed.len(), refund = ?refund, "order finished");
    Ok(Some(Finished {
        status,
        failed_images: failed.len(),
        refund: refund.map(|(id, _)| id),
    }))
}

/// An order whose actor keeps crashing fails cleanly: its unfinished photos
/// fail, an admin alert is queued, and it finishes like any other (the
/// customer's email and refund included).
pub async fn fail_order(
    db: &PgPool,
    settings: &Settings,
    order_id: Uuid,
    reason: &str,
) -> Result<Option<Finished>, sqlx::Error> {
    let mut tx = db.begin().await?;
    db::orders::fail_unfinished(&mut tx, order_id, reason).await?;
    let payload =
        json!({"reason": "order_crashed", "order_id": format_id(IdKind::Order, order_id), "error": reason});
    let key = format!("order:{}:crashed", order_id.simple());
    db::emails::enqueue_admin_alert(&mut tx, &settings.mail, &key, Some(order_id), &payload).await?;
    tx.commit().await?;
    finish_order(db, settings, order_id).await
}
