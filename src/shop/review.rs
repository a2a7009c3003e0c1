//! The customer's review of a restored photo (`POST
//! /api/orders/{id}/images/{image_id}/redo` or `…/refund`): for
//! `review.days` after the order first finished, once per photo, either the
//! photo's chain runs again with a fresh seed, or its price is refunded
//! through the payment provider.
//!
//! One transaction records the review (a photo has at most one), does what
//! it asks (reopens the order with the photo's job back at its first step,
//! or writes the refund row), journals it and queues the email. The same
//! request again with the same `Idempotency-Key` is answered as the first
//! was; any other second request is refused.

use rand::RngExt;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::refund::{self, Executed, RefundDeps};
use crate::{
    db::{
        self,
        emails::EmailKind,
        refunds::NewRefund,
        reviews::{NewReview, ReviewRow},
    },
    domain::{
        IdKind, ImageStatus, OrderStatus, format_id,
        payments::RefundReason,
        review::{self, ReviewAction},
    },
    storage::Storage,
};

/// The longest note a customer may leave with a redo.
pub const MAX_NOTE_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no such photo in this order")]
    NotFound,
    #[error("the note is longer than {MAX_NOTE_CHARS} characters")]
    NoteTooLong,
    #[error("the order is still {0}: ask once it has finished")]
    NotFinished(OrderStatus),
    #[error(
        "this photo was not restored, so there is nothing to redo or refund (a failed photo is refunded by itself)"
    )]
    NotRestored,
    #[error("this photo's review was used already (a {0})")]
    Used(ReviewAction),
    #[error("the review window closed on {0}")]
    WindowClosed(OffsetDateTime),
    #[error("the shop has no review window")]
    NoWindow,
    #[error("the order was refunded")]
    Refunded,
    #[error("the order's photos were deleted")]
    Purged,
    #[error("this order has no payment to refund")]
    NoPayment,
    #[error("nothing is left of the payment to refund")]
    NothingLeft,
    #[error("the photo's original is gone, so it cannot be restored again")]
    NoOriginal,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// What a customer asked, for one photo of one order.
#[derive(Debug, Clone)]
pub struct ReviewRequest<'a> {
    pub order_id: Uuid,
    pub image_id: Uuid,
    pub action: ReviewAction,
    pub note: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

/// What an accepted review did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub action: ReviewAction,
    pub order_id: Uuid,
    pub image_id: Uuid,
    /// The refund written, for a refund.
    pub refund_id: Option<Uuid>,
    pub refund_amount: Option<i64>,
    /// The order's retry round the redo opened.
    pub retry_round: Option<i32>,
    /// This answers a repeat of an accepted request (nothing was done again).
    pub repeated: bool,
}

/// Records and carries out one review. For a refund the provider is called
/// after the commit (the `Refunder` finishes it if this try cannot); a redo
/// leaves the reopened order for the caller to hand to the actors.
pub async fn request(
    deps: RefundDeps<'_>,
    storage: &Storage,
    asked: &ReviewRequest<'_>,
) -> Result<Accepted, ReviewError> {
    let note = asked.note.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS) {
        return Err(ReviewError::NoteTooLong);
    }
    let mut tx = deps.db.begin().await?;
    // The order first, as every writer of an order's rows locks it.
    let order = db::orders::lock(&mut tx, asked.order_id)
        .await?
        .ok_or(ReviewError::NotFound)?;
    let image = db::orders::image(&mut *tx, asked.image_id)
        .await?
        .filter(|i| i.order_id == order.id)
        .ok_or(ReviewError::NotFound)?;
    if let Some(done) = db::reviews::for_image(&mut tx, image.id).await? {
        return repeated(&done, asked, order.id);
    }
    let status = order.status();
    match status {
        OrderStatus::Refunded => return Err(ReviewError::Refunded),
        _ if order.purged_at.is_some() => return Err(ReviewError::Purged),
        s if s.is_live() => return Err(ReviewError::NotFinished(s)),
        _ => {}
    }
    let days = deps.settings.review.days;
    let opened = db::reviews::window_opened(&mut *tx, order.id)
        .await?
        .or(order.completed_at)
        .ok_or(ReviewError::NotFinished(status))?;
    let closes = review::closes_at(opened, days).ok_or(ReviewError::NoWindow)?;
    if !review::is_open(opened, days, OffsetDateTime::now_utc()) {
        return Err(ReviewError::WindowClosed(closes));
    }
    if image.status() != ImageStatus::Completed || image.refund_id.is_some() {
        return Err(ReviewError::NotRestored);
    }
    let order_ref = format_id(IdKind::Order, order.id);
    let image_ref = format_id(IdKind::Image, image.id);
    let mut accepted = Accepted {
        action: asked.action,
        order_id: order.id,
        image_id: image.id,
        refund_id: None,
        refund_amount: None,
        retry_round: None,
        repeated: false,
    };
    match asked.action {
        ReviewAction::Redo => {
            if storage.size(&image.original_key).await?.is_none() {
                return Err(ReviewError::NoOriginal);
            }
            let job = db::jobs::by_image(&mut *tx, image.id)
                .await?
                .ok_or(ReviewError::NotRestored)?;
            let seed = rand::rng().random_range(0..i64::MAX);
            let attempts = deps.settings.restoration.max_attempts as i32;
            if !db::jobs::redo(&mut tx, job.id, attempts, seed).await? {
                return Err(ReviewError::NotRestored);
            }
            accepted.retry_round = Some(
                db::orders::reopen(&mut tx, order.id, status)
                    .await?
                    .ok_or(ReviewError::NotFinished(status))?,
            );
        }
        ReviewAction::Refund => {
            let intent = order
                .stripe_payment_intent_id
                .as_deref()
                .ok_or(ReviewError::NoPayment)?;
            let committed = db::refunds::committed_for_payment(&mut *tx, intent).await?;
            let amount = review::photo_refund(
                image.unit_amount,
                order.amount_total,
                committed.max(order.amount_refunded),
            );
            if amount == 0 {
                return Err(ReviewError::NothingLeft);
            }
            let key = format!("refund-{order_ref}-review-{image_ref}");
            let id = refund::request(
                &mut tx,
                &NewRefund {
                    order_id: Some(order.id),
                    checkout_session_id: Some(&order.stripe_checkout_session_id),
                    payment_intent_id: intent,
                    amount,
                    payment_amount: order.amount_total,
                    currency: &order.currency,
                    reason: RefundReason::Customer,
                    idempotency_key: &key,
                    detail: &json!({"images": [image_ref]}),
                },
            )
            .await?;
            db::refunds::assign_images(&mut tx, id, &[image.id]).await?;
            accepted.refund_id = Some(id);
            accepted.refund_amount = Some(amount);
        }
    }
    let recorded = db::reviews::insert(
        &mut tx,
        &NewReview {
            image_id: image.id,
            order_id: order.id,
            action: asked.action.as_str(),
            note,
            idempotency_key: asked.idempotency_key,
            refund_id: accepted.refund_id,
        },
    )
    .await?;
    if !recorded {
        // Only under the order's lock is a review written: this cannot race.
        return Err(ReviewError::Used(asked.action));
    }
    let detail = json!({"review": asked.action.as_str(), "note": note, "refund_amount": accepted.refund_amount,
                        "retry_round": accepted.retry_round});
    let image_status = match asked.action {
        ReviewAction::Redo => ImageStatus::Processing,
        ReviewAction::Refund => ImageStatus::Completed,
    };
    db::events::append(&mut tx, order.id, Some(image.id), image_status.as_str(), &detail).await?;
    if asked.action == ReviewAction::Redo {
        db::events::append(&mut tx, order.id, None, OrderStatus::Processing.as_str(), &detail).await?;
    }
    if let Some(email) = &order.email {
        let payload = json!({
            "order_id": order_ref,
            "action": asked.action.as_str(),
            "filename": image.filename,
            "note": note,
            "refund_amount": accepted.refund_amount,
            "currency": order.currency,
        });
        db::emails::enqueue(
            &mut tx,
            &format!("image:{}:review", image.id.simple()),
            Some(order.id),
            EmailKind::ReviewAccepted,
            email,
            &payload,
            deps.settings.mail.max_attempts as i32,
        )
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("restoreclick_reviews_total", "action" => asked.action.as_str()).increment(1);
    tracing::info!(order_id = %order_ref, image_id = %image_ref, action = asked.action.as_str(),
                   refund = ?accepted.refund_amount, "the customer's review accepted");
    if let Some(id) = accepted.refund_id {
        match refund::execute_now(deps, id).await {
            Ok(Some(Executed::Failed { error })) => {
                tracing::error!(error, "the customer's refund was refused; an operator is told")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the customer's refund is left to the Refunder"),
        }
    }
    Ok(accepted)
}

/// A second request for a photo already reviewed: the same request again
/// (same action and `Idempotency-Key`) is answered as the first was.
fn repeated(done: &ReviewRow, asked: &ReviewRequest<'_>, order_id: Uuid) -> Result<Accepted, ReviewError> {
    let action = done
        .action
        .parse::<ReviewAction>()
        .map_err(|()| sqlx::Error::Protocol(format!("image_reviews.action holds {:?}", done.action)))?;
    let same = action == asked.action
        && asked.idempotency_key.is_some()
        && asked.idempotency_key == done.idempotency_key.as_deref();
    if !same {
        return Err(ReviewError::Used(action));
    }
    Ok(Accepted {
        action,
        order_id,
        image_id: done.image_id,
        refund_id: done.refund_id,
        refund_amount: None,
        retry_round: None,
        repeated: true,
    })
}
