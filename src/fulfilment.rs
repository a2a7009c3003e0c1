//! Applying a verified Stripe event to the shop, in one transaction.
//!
//! The event's `webhook_events` row, the order, its images, their restoration
//! jobs, the journal entries and the confirmation email row are committed
//! together or not at all; a second delivery of the same event finds the row
//! and changes nothing. Nothing here talks to the network or to storage: the
//! caller hands the new order to the actors after the commit.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    config::Settings,
    db::{self, emails::EmailKind, orders::NewImage, orders::NewOrder},
    domain::{self, CheckoutStatus, IdKind, ImageStatus, OrderStatus, UploadSessionStatus},
    providers::payments::event::{CheckoutSessionObject, StripeEvent},
    storage::keys,
};

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was applied before; nothing was done.
    Duplicate,
    /// A paid checkout became this new order.
    OrderCreated(Uuid),
    /// The order for this payment exists already (another event said so first).
    AlreadyFulfilled(Uuid),
    /// The checkout failed or expired; the upload session can be paid again.
    CheckoutClosed,
    Refunded(Uuid),
    PartiallyRefunded(Uuid),
    /// Recorded, but nothing for the shop to do.
    Ignored(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum FulfilmentError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the event's object is not what its type promises: {0}")]
    BadPayload(#[from] serde_json::Error),
}

/// Applies `event` (whose raw JSON is `payload`) exactly once. A
/// transaction that lost a deadlock is run again (it changed nothing).
#[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type))]
pub async fn apply(
    pool: &PgPool,
    settings: &Settings,
    event: &StripeEvent,
    payload: &serde_json::Value,
) -> Result<Applied, FulfilmentError> {
    let mut tries = 0;
    loop {
        match apply_once(pool, settings, event, payload).await {
            Err(FulfilmentError::Database(e)) if db::is_retryable(&e) && tries < 3 => {
                tries += 1;
                tracing::warn!(error = %e, tries, "fulfilment transaction lost a race; running it again");
            }
            result => return result,
        }
    }
}

async fn apply_once(
    pool: &PgPool,
    settings: &Settings,
    event: &StripeEvent,
    payload: &serde_json::Value,
) -> Result<Applied, FulfilmentError> {
    let mut tx = pool.begin().await?;
    if !db::webhooks::record(&mut tx, &event.id, "stripe", &event.event_type, payload).await? {
        return Ok(Applied::Duplicate);
    }
    let applied = match event.event_type.as_str() {
        "checkout.session.completed" => {
            let checkout = event.checkout_session()?;
            if checkout.is_paid() {
                create_order(&mut tx, settings, &checkout).await?
            } else {
                Applied::Ignored("checkout completed; the payment is still pending")
            }
        }
        "checkout.session.async_payment_succeeded" => {
            create_order(&mut tx, settings, &event.checkout_session()?).await?
        }
        "checkout.session.async_payment_failed" => {
            close_checkout(&mut tx, &event.checkout_session()?, CheckoutStatus::Failed).await?
        }
        "checkout.session.expired" => {
            close_checkout(&mut tx, &event.checkout_session()?, CheckoutStatus::Expired).await?
        }
        "charge.refunded" => refund(&mut tx, event).await?,
        _ => Applied::Ignored("event type not handled"),
    };
    tx.commit().await?;
    tracing::info!(?applied, "stripe event applied");
    Ok(applied)
}

async fn create_order(
    tx: &mut PgConnection,
    settings: &Settings,
    checkout: &CheckoutSessionObject,
) -> Result<Applied, FulfilmentError> {
    let Some(session_id) = checkout
        .upload_session_ref()
        .and_then(|r| domain::parse_id(IdKind::UploadSession, r))
    else {
        return Ok(Applied::Ignored(
            "the checkout names no upload session of this shop",
        ));
    };
    let Some(session) = db::uploads::lock_session(tx, session_id).await? else {
        alert(tx, settings, &checkout.id, "paid_for_unknown_session", checkout).await?;
        return Ok(Applied::Ignored("paid for an unknown upload session"));
    };
    if let Some(order) = db::orders::by_upload_session(&mut *tx, session_id).await? {
        if order.stripe_checkout_session_id != checkout.id {
            tracing::error!(order_id = %order.id, checkout = %checkout.id, "second payment for a paid upload session");
            alert(tx, settings, &checkout.id, "duplicate_payment", checkout).await?;
        }
        return Ok(Applied::AlreadyFulfilled(order.id));
    }
    let status = session.status();
    if status.transition(UploadSessionStatus::Paid).is_err() {
        alert(tx, settings, &checkout.id, "paid_for_expired_session", checkout).await?;
        return Ok(Applied::Ignored("paid for an upload session that has expired"));
    }
    let files = db::uploads::list_files(&mut *tx, session_id).await?;
    if files.is_empty() {
        alert(tx, settings, &checkout.id, "paid_for_empty_session", checkout).await?;
        return Ok(Applied::Ignored("paid for an upload session without photos"));
    }
    let checkout_row = db::checkouts::get(&mut *tx, &checkout.id).await?;
    // A checkout for an older set of photos can still be paid (its expiry at
    // the provider failed): the order gets the photos there are now, and an
    // operator is told the payment does not match them.
    let expected = settings.pricing.unit_amount * files.len() as i64;
    if checkout.amount_total.is_some_and(|paid| paid != expected) {
        alert(tx, settings, &checkout.id, "amount_mismatch", checkout).await?;
    }
    let email = checkout
        .email()
        .map(str::to_owned)
        .or_else(|| session.email.clone())
        .or_else(|| checkout_row.as_ref().and_then(|c| c.email.clone()));
    let customer_id = match &email {
        Some(email) => Some(db::orders::upsert_customer(tx, email).await?),
        None => None,
    };

    let order_id = domain::new_id();
    let quantity = files.len() as i32;
    let order = NewOrder {
        id: order_id,
        upload_session_id: session_id,
        checkout_session_id: checkout.id.clone(),
        payment_intent_id: checkout.payment_intent_id(),
        customer_id,
        email: email.clone(),
        status: OrderStatus::Processing,
        access_token_hash: domain::token::hash(&domain::token::order_token(
            settings.app.secret_key.expose(),
            order_id,
        )),
        amount_total: checkout
            .amount_total
            .unwrap_or(settings.pricing.unit_amount * i64::from(quantity)),
        currency: checkout
            .currency
            .clone()
            .unwrap_or_else(|| settings.pricing.currency.clone()),
        image_count: quantity,
    };
    db::orders::insert_order(tx, &order).await?;
    db::events::append(
        tx,
        order_id,
        None,
        OrderStatus::Processing.as_str(),
        &json!({"images": quantity}),
    )
    .await?;
    let max_attempts = settings.restoration.max_attempts as i32;
    for (index, file) in files.iter().enumerate() {
        let position = index as i32 + 1;
        let image = NewImage {
            id: domain::new_id(),
            job_id: domain::new_id(),
            file_upload_id: file.id,
            position,
            filename: file.filename.clone(),
            stem: file.stem.clone(),
            ext: file.ext.clone(),
            content_type: file.content_type.clone(),
            bytes: file.bytes,
            width: file.width,
            height: file.height,
            temp_key: file.storage_key.clone(),
            original_key: keys::original(order_id, position as u32, &file.stem, &file.ext),
        };
        db::orders::insert_image(tx, order_id, &image, max_attempts).await?;
        db::events::append(
            tx,
            order_id,
            Some(image.id),
            ImageStatus::Pending.as_str(),
            &json!({}),
        )
        .await?;
    }
    if let Some(to) = &email {
        let payload = json!({
            "order_id": domain::format_id(IdKind::Order, order_id),
            "photos": quantity,
            "amount_total": order.amount_total,
            "currency": order.currency,
        });
        db::emails::enqueue(
            tx,
            &format!("order:{}:confirmation", order_id.simple()),
            Some(order_id),
            EmailKind::OrderConfirmation,
            to,
            &payload,
            settings.mail.max_attempts as i32,
        )
        .await?;
    }
    db::uploads::set_status(tx, session_id, status, UploadSessionStatus::Paid).await?;
    if let Some(row) = checkout_row {
        let from = row.status();
        if from.can_transition_to(CheckoutStatus::Paid) {
            db::checkouts::set_status(tx, &row.id, from, CheckoutStatus::Paid).await?;
        }
    }
    Ok(Applied::OrderCreated(order_id))
}

/// A checkout that failed or expired: the upload session can be paid again.
async fn close_checkout(
    tx: &mut PgConnection,
    checkout: &CheckoutSessionObject,
    to: CheckoutStatus,
) -> Result<Applied, FulfilmentError> {
    let Some(row) = db::checkouts::get(&mut *tx, &checkout.id).await? else {
        return Ok(Applied::Ignored("checkout unknown to this shop"));
    };
    let Some(session) = db::uploads::lock_session(tx, row.upload_session_id).await? else {
        return Ok(Applied::Ignored("upload session gone"));
    };
    if row.status().can_transition_to(to) {
        db::checkouts::set_status(tx, &row.id, row.status(), to).await?;
    }
    let still_open = db::checkouts::open_for_session(&mut *tx, session.id).await?;
    if session.status() == UploadSessionStatus::CheckoutStarted && still_open.is_empty() {
        db::uploads::set_status(
            tx,
            session.id,
            UploadSessionStatus::CheckoutStarted,
            UploadSessionStatus::PaymentFailed,
        )
        .await?;
    }
    Ok(Applied::CheckoutClosed)
}

async fn refund(tx: &mut PgConnection, event: &StripeEvent) -> Result<Applied, FulfilmentError> {
    let charge = event.charge()?;
    let Some(intent) = charge.payment_intent_id() else {
        return Ok(Applied::Ignored("refund without a payment intent"));
    };
    let Some(order) = db::orders::lock_by_payment_intent(tx, &intent).await? else {
        return Ok(Applied::Ignored("refund for a payment this shop does not know"));
    };
    let refunded = charge.amount_refunded.unwrap_or(0);
    db::orders::set_amount_refunded(tx, order.id, refunded).await?;
    let full = charge.refunded == Some(true) || refunded >= order.amount_total;
    if !full {
        return Ok(Applied::PartiallyRefunded(order.id));
    }
    let from = order.status();
    if from.can_transition_to(OrderStatus::Refunded) {
        db::orders::set_status(tx, order.id, from, OrderStatus::Refunded).await?;
        let cancelled =
            db::orders::cancel_unstarted_jobs(tx, order.id, "cancelled: the order was refunded").await?;
        db::events::append(
            tx,
            order.id,
            None,
            OrderStatus::Refunded.as_str(),
            &json!({"amount_refunded": refunded, "jobs_cancelled": cancelled}),
        )
        .await?;
    }
    Ok(Applied::Refunded(order.id))
}

/// Queues one admin alert per checkout and reason.
async fn alert(
    tx: &mut PgConnection,
    settings: &Settings,
    checkout_id: &str,
    reason: &str,
    checkout: &CheckoutSessionObject,
) -> Result<(), sqlx::Error> {
    tracing::error!(checkout = checkout_id, reason, "payment needs an operator");
    let payload = json!({
        "reason": reason,
        "checkout_session_id": checkout_id,
        "payment_intent": checkout.payment_intent_id(),
        "amount_total": checkout.amount_total,
        "currency": checkout.currency,
        "customer_email": checkout.email(),
    });
    let key = format!("checkout:{checkout_id}:{reason}");
    db::emails::enqueue_admin_alert(tx, &settings.mail, &key, None, &payload)
        .await
        .map(drop)
}
