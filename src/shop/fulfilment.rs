//! Turning what a payment provider says about a checkout into the shop's
//! state, exactly once, in one transaction: a verified Stripe event (the
//! webhook), or the checkout as the provider shows it when asked (the
//! success page's poll and the cleanup sweep, for webhooks late or lost).
//!
//! A payment is honoured only for a checkout this shop opened and only when
//! its total, currency and mode are what that checkout sold; the order is
//! made from the checkout's frozen photos, never from the session's current
//! ones. A payment the shop cannot honour makes no order and is refunded,
//! with an audit row and an operator alert. A refund wins whatever the order
//! of events. Nothing here talks to the network or storage: the caller acts
//! on what [`Applied`] says after the commit.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::refund::{self, OrderRefunded};
use crate::{
    config::Settings,
    db::{
        self,
        checkouts::{CheckoutRow, PaymentContext, SoldFile},
        orders::{Confirmation, NewImage, NewOrder},
        refunds::NewRefund,
    },
    domain::{
        self, CheckoutStatus, IdKind, OrderStatus, UploadSessionStatus,
        payments::{Paid, RefundReason, Sold},
    },
    providers::payments::event::{CheckoutSessionObject, StripeEvent},
    storage::keys,
};

/// What applying an event (or a polled checkout) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was applied before; nothing was done.
    Duplicate,
    /// A paid checkout became this new order.
    OrderCreated(Uuid),
    /// A paid checkout became an order already refunded (the refund came
    /// first): nothing is restored.
    OrderCreatedRefunded(Uuid),
    /// The order for this payment exists already (another event said so first).
    AlreadyFulfilled(Uuid),
    /// The checkout was completed with a delayed payment method.
    AwaitingPayment,
    /// The checkout failed or expired; the upload session can be paid again.
    CheckoutClosed,
    /// Money was given back of an order.
    Refunded(OrderRefunded),
    /// A refund for a payment with no order yet, kept for when it comes.
    RefundKept,
    /// A payment the shop will not honour; refunded when it can be.
    PaymentRefused {
        reason: &'static str,
        refund: Option<Uuid>,
    },
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

/// Where a checkout's news came from.
#[derive(Debug, Clone, Copy)]
struct Source<'a> {
    event_id: Option<&'a str>,
    livemode: bool,
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
    retrying(|| apply_once(pool, settings, event, payload)).await
}

/// Applies the checkout as the provider shows it now: the same transaction
/// a webhook runs, for a webhook late or lost. Racing the webhook (or other
/// polls) is safe: one order.
#[tracing::instrument(skip_all, fields(checkout = %checkout.id))]
pub async fn apply_checkout(
    pool: &PgPool,
    settings: &Settings,
    checkout: &CheckoutSessionObject,
) -> Result<Applied, FulfilmentError> {
    let source = Source {
        event_id: None,
        livemode: checkout.livemode.unwrap_or(false),
    };
    retrying(|| async {
        let mut tx = pool.begin().await?;
        let applied = if checkout.is_paid() {
            settle_paid(&mut tx, settings, checkout, source).await?
        } else if checkout.is_awaiting_payment() {
            await_payment(&mut tx, settings, checkout, source).await?
        } else if checkout.is_expired() {
            close_checkout(&mut tx, checkout, CheckoutStatus::Expired).await?
        } else {
            Applied::Ignored("the checkout is still open")
        };
        tx.commit().await?;
        if applied != Applied::Ignored("the checkout is still open") {
            tracing::info!(?applied, "checkout synced from the provider");
        }
        Ok(applied)
    })
    .await
}

/// Closes a checkout the shop gives up on (`failed` or `expired`) outside
/// any event: the same transaction the provider's event would run.
pub async fn close(
    pool: &PgPool,
    checkout: &CheckoutSessionObject,
    to: CheckoutStatus,
) -> Result<Applied, FulfilmentError> {
    retrying(|| async {
        let mut tx = pool.begin().await?;
        let applied = close_checkout(&mut tx, checkout, to).await?;
        tx.commit().await?;
        Ok(applied)
    })
    .await
}

async fn retrying<F, Fut>(mut run: F) -> Result<Applied, FulfilmentError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Applied, FulfilmentError>>,
{
    let mut tries = 0;
    loop {
        match run().await {
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
    let source = Source {
        event_id: Some(&event.id),
        livemode: event.livemode,
    };
    let applied = match event.event_type.as_str() {
        "checkout.session.completed" => {
            let checkout = event.checkout_session()?;
            if checkout.is_paid() {
                settle_paid(&mut tx, settings, &checkout, source).await?
            } else {
                await_payment(&mut tx, settings, &checkout, source).await?
            }
        }
        "checkout.session.async_payment_succeeded" => {
            settle_paid(&mut tx, settings, &event.checkout_session()?, source).await?
        }
        "checkout.session.async_payment_failed" => {
            close_checkout(&mut tx, &event.checkout_session()?, CheckoutStatus::Failed).await?
        }
        "checkout.session.expired" => {
            close_checkout(&mut tx, &event.checkout_session()?, CheckoutStatus::Expired).await?
        }
        "charge.refunded" => charge_refunded(&mut tx, event).await?,
        _ => Applied::Ignored("event type not handled"),
    };
    tx.commit().await?;
    tracing::info!(?applied, "stripe event applied");
    Ok(applied)
}

/// The checkout row and its upload session, locked in the order every
/// writer takes them (see [`db::checkouts::lock_for_payment`]).
async fn lock_checkout(
    tx: &mut PgConnection,
    checkout: &CheckoutSessionObject,
) -> Result<Option<PaymentContext>, sqlx::Error> {
    let intent = checkout.payment_intent_id();
    if let Some(intent) = &intent {
        db::refunds::lock_payment(tx, intent).await?;
    }
    let locked = db::checkouts::lock_for_payment(tx, &checkout.id, intent.as_deref()).await?;
    hold_for_a_race().await;
    Ok(locked)
}

/// A paid checkout: an order from what it sold, or a refund.
async fn settle_paid(
    tx: &mut PgConnection,
    settings: &Settings,
    checkout: &CheckoutSessionObject,
    source: Source<'_>,
) -> Result<Applied, FulfilmentError> {
    let Some(ctx) = lock_checkout(tx, checkout).await? else {
        return unknown_checkout(tx, settings, checkout, source).await;
    };
    let row = &ctx.checkout;
    if let Some(order_id) = ctx.order_for_checkout {
        return Ok(Applied::AlreadyFulfilled(order_id));
    }
    if row.status() == CheckoutStatus::Refunded {
        return Ok(Applied::Ignored("this payment was refused and refunded before"));
    }
    let sold = Sold {
        amount_total: row.amount_total,
        currency: &row.currency,
        livemode: row.livemode,
    };
    let paid = Paid {
        amount_total: checkout.amount_total,
        currency: checkout.currency.as_deref(),
        livemode: source.livemode,
    };
    if let Err(mismatch) = domain::payments::check(sold, paid) {
        let refusal = Refusal {
            reason: mismatch.reason(),
            refund: RefundReason::PaymentMismatch,
            detail: json!({"mismatch": mismatch.to_string()}),
        };
        return refuse(tx, settings, row, checkout, source, refusal).await;
    }
    let Some(session) = ctx
        .session
        .as_ref()
        .filter(|s| s.status() != UploadSessionStatus::Expired)
    else {
        let refusal = Refusal::photos_gone(json!({"why": "the upload session is gone"}));
        return refuse(tx, settings, row, checkout, source, refusal).await;
    };
    if let Some(order_id) = ctx.order_for_session {
        tracing::error!(%order_id, checkout = %row.id, "second payment for a paid upload session");
        let refusal = Refusal {
            reason: "duplicate_payment",
            refund: RefundReason::DuplicatePayment,
            detail: json!({"order_id": domain::format_id(IdKind::Order, order_id)}),
        };
        return refuse(tx, settings, row, checkout, source, refusal).await;
    }
    let (sold_count, files) = db::checkouts::sold_files(&mut *tx, &row.id, session.id).await?;
    if sold_count == 0 || files.len() as i64 != sold_count {
        let refusal = Refusal::photos_gone(json!({"sold": sold_count, "still_stored": files.len()}));
        return refuse(tx, settings, row, checkout, source, refusal).await;
    }
    let payment_intent = checkout.payment_intent_id();
    let refunded_in_full = ctx.refunded_first.as_ref().is_some_and(|n| n.refunded);
    let order_id = create_order(
        tx,
        settings,
        NewSale {
            row,
            session,
            checkout,
            payment_intent: payment_intent.as_deref(),
            files: &files,
            confirm: !refunded_in_full,
        },
    )
    .await?;
    let ids: Vec<Uuid> = files.iter().map(|f| f.file.id).collect();
    let unsold = db::uploads::mark_paid(tx, session.id, &ids).await?;
    if unsold > 0 {
        tracing::warn!(%order_id, unsold, "a voided checkout was paid: its photos became the order, the rest left");
    }
    db::checkouts::mark_paid(tx, &row.id, payment_intent.as_deref()).await?;
    if let Some(notice) = &ctx.refunded_first {
        let order = db::orders::lock(tx, order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let effect = refund::record_refunded(tx, &order, notice.amount_refunded, notice.refunded).await?;
        if effect.now_refunded {
            tracing::warn!(%order_id, "the payment was refunded before it arrived: the order starts refunded");
            return Ok(Applied::OrderCreatedRefunded(order_id));
        }
    }
    Ok(Applied::OrderCreated(order_id))
}

/// What a paid checkout sold, to become an order.
struct NewSale<'a> {
    row: &'a CheckoutRow,
    session: &'a db::uploads::UploadSessionRow,
    checkout: &'a CheckoutSessionObject,
    payment_intent: Option<&'a str>,
    files: &'a [SoldFile],
    /// Queue the confirmation email (not for an order refunded at birth).
    confirm: bool,
}

/// The order, its images and jobs, the journal entries and the confirmation
/// email row, from what the checkout sold.
async fn create_order(
    tx: &mut PgConnection,
    settings: &Settings,
    sale: NewSale<'_>,
) -> Result<Uuid, sqlx::Error> {
    let NewSale {
        row,
        session,
        checkout,
        payment_intent,
        files,
        confirm,
    } = sale;
    let email = checkout
        .email()
        .map(str::to_owned)
        .or_else(|| session.email.clone())
        .or_else(|| row.email.clone());
    let customer_id = match &email {
        Some(email) => Some(db::orders::upsert_customer(tx, email).await?),
        None => None,
    };
    let order_id = domain::new_id();
    let order = NewOrder {
        id: order_id,
        upload_session_id: session.id,
        checkout_session_id: row.id.clone(),
        payment_intent_id: payment_intent.map(str::to_owned),
        customer_id,
        email: email.clone(),
        status: OrderStatus::Processing,
        access_token_hash: domain::token::hash(&domain::token::order_token(
            settings.app.secret_key.expose(),
            order_id,
        )),
        amount_total: row.amount_total,
        currency: row.currency.clone(),
        image_count: files.len() as i32,
    };
    let images: Vec<NewImage> = files
        .iter()
        .enumerate()
        .map(|(index, sold)| {
            let file = &sold.file;
            let position = index as i32 + 1;
            NewImage {
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
                unit_amount: sold.unit_amount,
                options: sold.options.clone(),
            }
        })
        .collect();
    let key = format!("order:{}:confirmation", order_id.simple());
    let payload = json!({
        "order_id": domain::format_id(IdKind::Order, order_id),
        "photos": images.len(),
        "amount_total": order.amount_total,
        "currency": order.currency,
    });
    let confirmation = email.as_deref().filter(|_| confirm).map(|to| Confirmation {
        idempotency_key: &key,
        to,
        payload: &payload,
        max_attempts: settings.mail.max_attempts as i32,
    });
    db::orders::insert_paid(
        tx,
        &order,
        &images,
        settings.restoration.max_attempts as i32,
        confirmation,
    )
    .await?;
    Ok(order_id)
}

/// Why a paid checkout is turned down.
struct Refusal {
    /// The audit row's reason.
    reason: &'static str,
    refund: RefundReason,
    detail: serde_json::Value,
}

impl Refusal {
    fn photos_gone(detail: serde_json::Value) -> Self {
        Self {
            reason: "photos_gone",
            refund: RefundReason::PhotosGone,
            detail,
        }
    }
}

/// A paid checkout the shop will not honour: no order; the payment is
/// refunded (once per payment and reason), audited and an operator told.
async fn refuse(
    tx: &mut PgConnection,
    settings: &Settings,
    row: &CheckoutRow,
    checkout: &CheckoutSessionObject,
    source: Source<'_>,
    refusal: Refusal,
) -> Result<Applied, FulfilmentError> {
    let payment_intent = checkout.payment_intent_id();
    let paid = checkout.amount_total.unwrap_or(0);
    let currency = checkout.currency.clone().unwrap_or_else(|| row.currency.clone());
    let refund = match &payment_intent {
        Some(intent) if paid > 0 => {
            let key = refund::payment_key(intent, refusal.refund);
            Some(
                refund::request(
                    tx,
                    &NewRefund {
                        order_id: None,
                        checkout_session_id: Some(&row.id),
                        payment_intent_id: intent,
                        amount: paid,
                        payment_amount: paid,
                        currency: &currency,
                        reason: refusal.refund,
                        idempotency_key: &key,
                        detail: &refusal.detail,
                    },
                )
                .await?,
            )
        }
        _ => None,
    };
    let mut detail = refusal.detail.clone();
    detail["amount_paid"] = json!(checkout.amount_total);
    detail["currency_paid"] = json!(checkout.currency);
    detail["livemode"] = json!(source.livemode);
    detail["refund_id"] = json!(refund);
    db::refunds::audit(
        tx,
        &row.id,
        payment_intent.as_deref(),
        source.event_id,
        refusal.reason,
        &detail,
    )
    .await?;
    let from = row.status();
    if from.can_transition_to(CheckoutStatus::Refunded) {
        db::checkouts::set_status(tx, &row.id, from, CheckoutStatus::Refunded).await?;
    }
    alert(tx, settings, &row.id, refusal.reason, checkout, &detail).await?;
    tracing::error!(checkout = %row.id, reason = refusal.reason, ?refund, "payment refused");
    Ok(Applied::PaymentRefused {
        reason: refusal.reason,
        refund,
    })
}

/// A payment event for a checkout this shop never opened: recorded,
/// audited, an operator told, nothing else (it may not even be the shop's money).
async fn unknown_checkout(
    tx: &mut PgConnection,
    settings: &Settings,
    checkout: &CheckoutSessionObject,
    source: Source<'_>,
) -> Result<Applied, FulfilmentError> {
    let detail = json!({
        "client_reference_id": checkout.client_reference_id,
        "amount_paid": checkout.amount_total,
        "currency_paid": checkout.currency,
        "livemode": source.livemode,
    });
    let intent = checkout.payment_intent_id();
    db::refunds::audit(
        tx,
        &checkout.id,
        intent.as_deref(),
        source.event_id,
        "unknown_checkout",
        &detail,
    )
    .await?;
    alert(tx, settings, &checkout.id, "unknown_checkout", checkout, &detail).await?;
    Ok(Applied::Ignored("a checkout this shop never opened"))
}

/// A checkout completed without the money yet (bank debits, vouchers):
/// its photos are kept until the payment succeeds, fails, or its window ends.
async fn await_payment(
    tx: &mut PgConnection,
    settings: &Settings,
    checkout: &CheckoutSessionObject,
    source: Source<'_>,
) -> Result<Applied, FulfilmentError> {
    let Some(PaymentContext {
        checkout: row,
        session,
        ..
    }) = lock_checkout(tx, checkout).await?
    else {
        return unknown_checkout(tx, settings, checkout, source).await;
    };
    if let Some(intent) = checkout.payment_intent_id() {
        db::checkouts::set_payment_intent(tx, &row.id, &intent).await?;
    }
    let from = row.status();
    if from.can_transition_to(CheckoutStatus::AwaitingPayment) {
        db::checkouts::set_status(tx, &row.id, from, CheckoutStatus::AwaitingPayment).await?;
    }
    if let Some(session) = session {
        let status = session.status();
        if status.can_transition_to(UploadSessionStatus::AwaitingPayment) {
            db::uploads::set_status(tx, session.id, status, UploadSessionStatus::AwaitingPayment).await?;
        }
    }
    Ok(Applied::AwaitingPayment)
}

/// A checkout that failed or expired: the upload session can be paid again.
async fn close_checkout(
    tx: &mut PgConnection,
    checkout: &CheckoutSessionObject,
    to: CheckoutStatus,
) -> Result<Applied, FulfilmentError> {
    let Some(PaymentContext {
        checkout: row,
        session,
        ..
    }) = lock_checkout(tx, checkout).await?
    else {
        return Ok(Applied::Ignored("checkout unknown to this shop"));
    };
    if row.status().can_transition_to(to) {
        db::checkouts::set_status(tx, &row.id, row.status(), to).await?;
    }
    let Some(session) = session else {
        return Ok(Applied::CheckoutClosed);
    };
    let still_open = db::checkouts::open_for_session(&mut *tx, session.id).await?;
    let waiting = db::checkouts::awaiting_for_session(&mut *tx, session.id).await?;
    let status = session.status();
    if matches!(
        status,
        UploadSessionStatus::CheckoutStarted | UploadSessionStatus::AwaitingPayment
    ) && still_open.is_empty()
        && !waiting
    {
        db::uploads::set_status(tx, session.id, status, UploadSessionStatus::PaymentFailed).await?;
    }
    Ok(Applied::CheckoutClosed)
}

/// `charge.refunded`: money given back of a payment, whatever the shop
/// knows of it yet.
async fn charge_refunded(tx: &mut PgConnection, event: &StripeEvent) -> Result<Applied, FulfilmentError> {
    let charge = event.charge()?;
    let Some(intent) = charge.payment_intent_id() else {
        return Ok(Applied::Ignored("refund without a payment intent"));
    };
    let refunded = charge.amount_refunded.unwrap_or(0);
    let full = charge.refunded == Some(true);
    db::refunds::lock_payment(tx, &intent).await?;
    let Some(order) = db::orders::lock_by_payment_intent(tx, &intent).await? else {
        // Stripe does not order its events: the payment may come later.
        db::refunds::record_notice(tx, &intent, refunded, full, &event.id).await?;
        return Ok(Applied::RefundKept);
    };
    // Stripe telling of refunds the shop made itself: their effect on the
    // order was applied when each was done (`refund::execute`). Read again
    // here, a full refund the shop made of a failed order would stop the
    // work an operator's retry has since restarted.
    if refunded <= db::refunds::committed_for_payment(&mut *tx, &intent).await? {
        db::orders::set_amount_refunded(tx, order.id, refunded.max(order.amount_refunded)).await?;
        return Ok(Applied::Refunded(OrderRefunded {
            order_id: Some(order.id),
            ..OrderRefunded::default()
        }));
    }
    let effect = refund::record_refunded(tx, &order, refunded, full).await?;
    Ok(Applied::Refunded(effect))
}

/// Holds a paid transaction after its locks for as long as the
/// `fulfilment::paid_locked` failpoint says (`return(MS)`), so that a test
/// can land a refund inside it. Nothing in a normal build.
async fn hold_for_a_race() {
    let hold = (|| {
        fail::fail_point!("fulfilment::paid_locked", |ms: Option<String>| ms
            .and_then(|ms| ms.parse::<u64>().ok()));
        None
    })();
    if let Some(ms) = hold {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Queues one admin alert per checkout and reason.
async fn alert(
    tx: &mut PgConnection,
    settings: &Settings,
    checkout_id: &str,
    reason: &str,
    checkout: &CheckoutSessionObject,
    detail: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    tracing::error!(checkout = checkout_id, reason, "payment needs an operator");
    let payload = json!({
        "reason": reason,
        "checkout_session_id": checkout_id,
        "payment_intent": checkout.payment_intent_id(),
        "amount_total": checkout.amount_total,
        "currency": checkout.currency,
        "customer_email": checkout.email(),
        "detail": detail,
    });
    let key = format!("checkout:{checkout_id}:{reason}");
    db::emails::enqueue_admin_alert(tx, &settings.mail, &key, None, &payload)
        .await
        .map(drop)
}
