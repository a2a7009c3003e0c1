//! Checkouts: opening one that freezes what it sells, voiding open ones
//! before the photos change, and asking the provider about one whose
//! payment event has not arrived.

use std::{collections::BTreeMap, time::Duration};

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::fulfilment::{self, Applied, FulfilmentError};
use crate::{
    config::Settings,
    db::{
        self,
        checkouts::{CheckoutRow, FrozenPhoto},
        uploads::UploadSessionRow,
    },
    domain::{self, CheckoutStatus, IdKind, UploadSessionStatus, options::Choice},
    providers::payments::{CheckoutRequest, PaymentError, PaymentProvider},
};

/// Extra time the photos are kept past the end of a checkout, so a payment
/// made in its last minute still finds them.
const KEEP_AFTER_CHECKOUT: time::Duration = time::Duration::hours(1);

/// What the checkout workflows need.
#[derive(Clone, Copy)]
pub struct CheckoutDeps<'a> {
    pub db: &'a PgPool,
    pub settings: &'a Settings,
    pub payments: &'a dyn PaymentProvider,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("unknown upload session")]
    NotFound,
    #[error("this upload session is already paid")]
    Paid { order_id: Option<Uuid> },
    #[error("this upload session has expired; please upload again")]
    Expired,
    #[error("upload at least one photo before paying")]
    Empty,
    #[error("a payment for these photos is on its way; wait for it to succeed or fail")]
    AwaitingPayment,
    #[error("options were chosen for photos that are not in this upload session")]
    UnknownPhotos(Vec<Uuid>),
    #[error(transparent)]
    Provider(#[from] PaymentError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The options a checkout sells: every photo's, and those photos whose own
/// choice replaces it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub every: Choice,
    pub per_photo: BTreeMap<Uuid, Choice>,
}

/// A checkout the customer can be sent to.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: String,
    pub url: String,
    pub expires_at: OffsetDateTime,
    /// Earlier checkouts of the session this one replaces (to expire at the provider).
    pub replaced: Vec<String>,
}

/// Opens a checkout for the session's photos as they are now, with the
/// options chosen, and records exactly what it sells: the photos, their
/// prices, the line items, the currency, the total and the mode. A retried
/// call (same session, same attempt, same photos and options) yields the
/// same checkout at the provider.
pub async fn open(
    deps: CheckoutDeps<'_>,
    session_id: Uuid,
    email: Option<String>,
    selection: &Selection,
) -> Result<Opened, CheckoutError> {
    let session = db::uploads::get_session(deps.db, session_id)
        .await?
        .ok_or(CheckoutError::NotFound)?;
    let now = OffsetDateTime::now_utc();
    refuse_unpayable(deps.db, &session, now).await?;
    let files = db::uploads::list_files(deps.db, session_id).await?;
    if files.is_empty() {
        return Err(CheckoutError::Empty);
    }
    let strangers: Vec<Uuid> = selection
        .per_photo
        .keys()
        .filter(|id| !files.iter().any(|f| f.id == **id))
        .copied()
        .collect();
    if !strangers.is_empty() {
        return Err(CheckoutError::UnknownPhotos(strangers));
    }
    let choices: Vec<&Choice> = files
        .iter()
        .map(|f| selection.per_photo.get(&f.id).unwrap_or(&selection.every))
        .collect();
    let pricing = &deps.settings.pricing;
    let quote = super::options::price_list(deps.settings).quote(&choices);
    let attempt = db::checkouts::count_for_session(deps.db, session_id).await? + 1;
    // The photos and what each is to get: a changed choice is another checkout.
    let photo_set = Sha256::digest(
        files
            .iter()
            .zip(&choices)
            .map(|(f, choice)| match choice.ids().join(",") {
                ids if ids.is_empty() => f.id.simple().to_string(),
                ids => format!("{}:{ids};", f.id.simple()),
            })
            .collect::<String>(),
    );
    let upload_ref = domain::format_id(IdKind::UploadSession, session_id);
    let public = deps.settings.public_url();
    let request = CheckoutRequest {
        upload_session_id: session_id,
        upload_session_ref: upload_ref.clone(),
        quantity: files.len() as u32,
        line_items: quote.line_items.clone(),
        currency: quote.currency.clone(),
        email: email.clone().or(session.email.clone()),
        success_url: format!("{public}/success?session_id={{CHECKOUT_SESSION_ID}}"),
        cancel_url: format!("{public}/?session_id={upload_ref}&checkout=cancelled"),
        expires_at: now + deps.settings.payments.checkout_ttl,
        idempotency_key: format!(
            "checkout-{upload_ref}-{attempt}-{}",
            &hex::encode(photo_set)[..16]
        ),
    };
    let created = deps.payments.create_checkout(&request).await?;

    let mut tx = deps.db.begin().await?;
    let locked = db::uploads::lock_session(&mut tx, session_id)
        .await?
        .ok_or(CheckoutError::NotFound)?;
    refuse_unpayable(deps.db, &locked, now).await?;
    // Recorded as quoted even if the photos changed while the provider
    // answered: the provider's checkout sells exactly this set, and a
    // payment for it must find what it bought.
    let earlier = db::checkouts::open_for_session(&mut *tx, session_id).await?;
    for old in earlier.iter().filter(|c| c.id != created.id) {
        db::checkouts::set_status(&mut tx, &old.id, CheckoutStatus::Open, CheckoutStatus::Expired).await?;
    }
    let frozen: Vec<FrozenPhoto> = files
        .iter()
        .zip(quote.photo_amounts.iter().zip(&choices))
        .enumerate()
        .map(|(index, (file, (amount, choice)))| FrozenPhoto {
            position: index as i32 + 1,
            file_upload_id: file.id,
            unit_amount: *amount,
            options: choice.ids().into_iter().map(str::to_owned).collect(),
        })
        .collect();
    db::checkouts::insert(
        &mut tx,
        &CheckoutRow {
            id: created.id.clone(),
            upload_session_id: Some(session_id),
            provider: deps.payments.name().to_owned(),
            status: CheckoutStatus::Open.as_str().to_owned(),
            url: created.url.clone(),
            quantity: files.len() as i32,
            unit_amount: pricing.unit_amount,
            amount_total: quote.amount_total,
            currency: quote.currency.clone(),
            email: request.email.clone(),
            idempotency_key: request.idempotency_key.clone(),
            livemode: created.livemode,
            line_items: sqlx::types::Json(quote.line_items.clone()),
            payment_intent_id: None,
            created_at: now,
            expires_at: created.expires_at,
        },
        &frozen,
    )
    .await?;
    db::uploads::extend_expiry(&mut tx, session_id, created.expires_at + KEEP_AFTER_CHECKOUT).await?;
    if let Some(email) = &email {
        db::uploads::set_email(&mut tx, session_id, email).await?;
    }
    let status = locked.status();
    if status != UploadSessionStatus::CheckoutStarted {
        db::uploads::set_status(&mut tx, session_id, status, UploadSessionStatus::CheckoutStarted).await?;
    }
    tx.commit().await?;
    // The upload session's id is its customer's key: kept out of the logs.
    tracing::info!(checkout = %created.id, photos = files.len(), amount_total = quote.amount_total,
                   "checkout opened");
    let replaced = earlier
        .into_iter()
        .filter(|c| c.id != created.id)
        .map(|c| c.id)
        .collect();
    Ok(Opened {
        id: created.id,
        url: created.url,
        expires_at: created.expires_at,
        replaced,
    })
}

async fn refuse_unpayable(
    db: &PgPool,
    session: &UploadSessionRow,
    now: OffsetDateTime,
) -> Result<(), CheckoutError> {
    match session.status() {
        UploadSessionStatus::Paid => {
            let order = db::orders::by_upload_session(db, session.id).await?;
            Err(CheckoutError::Paid {
                order_id: order.map(|o| o.id),
            })
        }
        UploadSessionStatus::AwaitingPayment => Err(CheckoutError::AwaitingPayment),
        _ if session.is_expired(now) => Err(CheckoutError::Expired),
        _ => Ok(()),
    }
}

/// Why open checkouts could not be voided.
#[derive(Debug, thiserror::Error)]
pub enum VoidError {
    /// The customer paid meanwhile: the payment was applied (an order made
    /// or refused), and the photos may no longer change.
    #[error("this upload session was paid meanwhile; its photos can no longer change")]
    Paid(Applied),
    /// The provider could not be asked to close it; it may still be paid.
    #[error("a checkout for these photos is open and cannot be closed right now: {0}")]
    StillOpen(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Fulfilment(#[from] FulfilmentError),
}

/// Closes every open checkout of the session at the provider before its
/// photos change, so none can be paid for the old set. Returns the ids
/// closed; the caller marks them expired in the transaction that changes
/// the photos (and refuses the change if a new one opened meanwhile).
pub async fn void_open(deps: CheckoutDeps<'_>, session_id: Uuid) -> Result<Vec<String>, VoidError> {
    let open = db::checkouts::open_for_session(deps.db, session_id).await?;
    let mut voided = Vec::with_capacity(open.len());
    for checkout in open {
        match deps.payments.expire_checkout(&checkout.id).await {
            Ok(()) => voided.push(checkout.id),
            Err(PaymentError::Rejected { message, .. }) => {
                // Closed already, or paid: the provider knows which.
                let remote = deps
                    .payments
                    .retrieve_checkout(&checkout.id)
                    .await
                    .map_err(|e| VoidError::StillOpen(e.to_string()))?;
                match remote {
                    Some(remote) if remote.is_paid() || remote.is_awaiting_payment() => {
                        let applied = fulfilment::apply_checkout(deps.db, deps.settings, &remote).await?;
                        return Err(VoidError::Paid(applied));
                    }
                    Some(remote) if remote.is_expired() => voided.push(checkout.id),
                    _ => return Err(VoidError::StillOpen(message)),
                }
            }
            Err(PaymentError::Unavailable(message)) => return Err(VoidError::StillOpen(message)),
        }
    }
    if !voided.is_empty() {
        tracing::info!(checkouts = ?voided, "open checkouts voided before the photos change");
    }
    Ok(voided)
}

/// Asks the provider about a checkout whose payment event has not arrived
/// (at most once per `payments.sync_interval` across instances) and applies
/// what it says through the webhook's own transaction. `None` when it was
/// not asked (too soon, settled already, or a provider with no record).
pub async fn sync(deps: CheckoutDeps<'_>, checkout_id: &str) -> Result<Option<Applied>, FulfilmentError> {
    if !db::checkouts::claim_sync(deps.db, checkout_id, deps.settings.payments.sync_interval).await? {
        return Ok(None);
    }
    sync_claimed(deps, checkout_id).await
}

async fn sync_claimed(deps: CheckoutDeps<'_>, checkout_id: &str) -> Result<Option<Applied>, FulfilmentError> {
    let remote = match deps.payments.retrieve_checkout(checkout_id).await {
        Ok(Some(remote)) => remote,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(checkout = checkout_id, error = %e, "cannot ask the payment provider about a checkout");
            return Ok(None);
        }
    };
    if remote.id != checkout_id {
        tracing::error!(checkout = checkout_id, answered = %remote.id, "the provider answered for another checkout");
        return Ok(None);
    }
    fulfilment::apply_checkout(deps.db, deps.settings, &remote)
        .await
        .map(Some)
}

/// The cleanup sweep's part: checkouts left open past their expiry and
/// delayed payments, asked about (each at most hourly) and settled; a
/// delayed payment past its window is given up. Returns what was applied.
pub async fn sweep_unsettled(deps: CheckoutDeps<'_>) -> Result<Vec<Applied>, FulfilmentError> {
    let ids =
        db::checkouts::claim_unsettled(deps.db, deps.payments.name(), Duration::from_secs(3600), 100).await?;
    let mut applied = Vec::new();
    for id in ids {
        if let Some(a) = sync_claimed(deps, &id).await? {
            applied.push(a);
        }
    }
    let window = deps.settings.payments.async_payment_window;
    for id in db::checkouts::awaiting_past(deps.db, window, 100).await? {
        applied.push(give_up(deps, &id).await?);
    }
    Ok(applied)
}

/// A delayed payment that never came within its window: the checkout
/// fails and its session can be paid again (or swept).
async fn give_up(deps: CheckoutDeps<'_>, checkout_id: &str) -> Result<Applied, FulfilmentError> {
    let failed = crate::providers::payments::event::CheckoutSessionObject {
        id: checkout_id.to_owned(),
        ..Default::default()
    };
    let applied = fulfilment::close(deps.db, &failed, CheckoutStatus::Failed).await?;
    tracing::warn!(checkout = checkout_id, window = ?deps.settings.payments.async_payment_window,
                   "a delayed payment did not arrive within its window; the checkout fails");
    Ok(applied)
}
