//! `POST /api/checkout` and `GET /api/checkout/{checkout_session_id}`.
//!
//! A checkout is opened at the payment provider with an idempotency key made
//! from the session, the attempt number and the photo set, so a retried call
//! yields the same checkout, and a new attempt (payment retry) a fresh one.

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{
    AppState,
    error::{ApiError, ApiResult},
    upload::expire_at_provider,
};
use crate::{
    db::{self, checkouts::CheckoutRow},
    domain::{self, CheckoutStatus, IdKind, UploadSessionStatus, token},
    providers::payments::{CheckoutRequest, PaymentError},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/checkout", post(create))
        .route("/api/checkout/{checkout_session_id}", get(show))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateCheckout {
    session_id: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CheckoutCreated {
    checkout_session_id: String,
    checkout_url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// Extra time the photos are kept past the end of a checkout, so a payment
/// made in its last minute still finds them.
const KEEP_AFTER_CHECKOUT: time::Duration = time::Duration::hours(1);

#[utoipa::path(post, path = "/api/checkout", tag = "checkout", request_body(content_type = "application/json", description = "{\"session_id\": \"ups_…\", \"email\": \"optional\"}"), responses((status = 200, description = "checkout_session_id and checkout_url"), (status = 404, description = "unknown session"), (status = 409, description = "already paid (details.order_id)"), (status = 410, description = "expired"), (status = 422, description = "empty session or bad email")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateCheckout>, JsonRejection>,
) -> ApiResult<Json<CheckoutCreated>> {
    let Json(body) = body.map_err(|e| match (ApiError::body_timeout(&e), e.status()) {
        (Some(timeout), _) => timeout,
        (None, axum::http::StatusCode::PAYLOAD_TOO_LARGE) => ApiError::from_status(e.status(), e.body_text()),
        (None, _) => ApiError::bad_request("invalid_json", e.body_text()),
    })?;
    let email = match body.email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) if is_plausible_email(e) => Some(e.to_owned()),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_email",
                "the email address is not valid",
            ));
        }
        None => None,
    };
    let session_id = domain::parse_id(IdKind::UploadSession, &body.session_id)
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    let session = db::uploads::get_session(&state.db, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    let now = OffsetDateTime::now_utc();
    refuse_unpayable(&state, &session, now).await?;
    let files = db::uploads::list_files(&state.db, session_id).await?;
    if files.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_session",
            "upload at least one photo before paying",
        ));
    }

    let pricing = &state.settings.pricing;
    let quantity = files.len() as u32;
    let attempt = db::checkouts::count_for_session(&state.db, session_id).await? + 1;
    let photo_set = Sha256::digest(
        files
            .iter()
            .map(|f| f.id.simple().to_string())
            .collect::<String>(),
    );
    let upload_ref = domain::format_id(IdKind::UploadSession, session_id);
    let public = state.settings.public_url();
    let request = CheckoutRequest {
        upload_session_id: session_id,
        upload_session_ref: upload_ref.clone(),
        quantity,
        unit_amount: pricing.unit_amount,
        currency: pricing.currency.clone(),
        product_name: pricing.product_name.clone(),
        email: email.clone().or(session.email.clone()),
        success_url: format!("{public}/success?session_id={{CHECKOUT_SESSION_ID}}"),
        cancel_url: format!("{public}/?session_id={upload_ref}&checkout=cancelled"),
        expires_at: now + state.settings.payments.checkout_ttl,
        idempotency_key: format!(
            "checkout-{upload_ref}-{attempt}-{}",
            &hex::encode(photo_set)[..16]
        ),
    };
    let created = state
        .payments
        .create_checkout(&request)
        .await
        .map_err(provider_error)?;

    let mut tx = state.db.begin().await?;
    let locked = db::uploads::lock_session(&mut tx, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    refuse_unpayable(&state, &locked, now).await?;
    let earlier = db::checkouts::open_for_session(&mut *tx, session_id).await?;
    for old in earlier.iter().filter(|c| c.id != created.id) {
        db::checkouts::set_status(&mut tx, &old.id, CheckoutStatus::Open, CheckoutStatus::Expired).await?;
    }
    db::checkouts::insert(
        &mut tx,
        &CheckoutRow {
            id: created.id.clone(),
            upload_session_id: session_id,
            provider: state.payments.name().to_owned(),
            status: CheckoutStatus::Open.as_str().to_owned(),
            url: created.url.clone(),
            quantity: quantity as i32,
            unit_amount: pricing.unit_amount,
            amount_total: pricing.unit_amount * i64::from(quantity),
            currency: pricing.currency.clone(),
            email: request.email.clone(),
            idempotency_key: request.idempotency_key.clone(),
            created_at: now,
            expires_at: created.expires_at,
        },
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
    expire_at_provider(
        &state,
        earlier
            .into_iter()
            .filter(|c| c.id != created.id)
            .map(|c| c.id)
            .collect(),
    );
    tracing::info!(session_id = %session_id, checkout = %created.id, quantity, "checkout opened");
    Ok(Json(CheckoutCreated {
        checkout_session_id: created.id,
        checkout_url: created.url,
        expires_at: created.expires_at,
    }))
}

async fn refuse_unpayable(
    state: &AppState,
    session: &db::uploads::UploadSessionRow,
    now: OffsetDateTime,
) -> ApiResult<()> {
    if session.status() == UploadSessionStatus::Paid {
        let order = db::orders::by_upload_session(&state.db, session.id).await?;
        return Err(
            ApiError::conflict("already_paid", "this upload session is already paid")
                .with_details(json!({"order_id": order.map(|o| domain::format_id(IdKind::Order, o.id))})),
        );
    }
    if session.is_expired(now) {
        return Err(ApiError::gone(
            "session_expired",
            "this upload session has expired; please upload again",
        ));
    }
    Ok(())
}

fn provider_error(e: PaymentError) -> ApiError {
    match e {
        PaymentError::Rejected { status, message } => {
            tracing::error!(status, %message, "the payment provider refused the checkout");
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "payment_provider_error",
                "the payment provider refused the checkout; please try again later",
            )
        }
        PaymentError::Unavailable(message) => {
            tracing::warn!(%message, "the payment provider is unavailable");
            ApiError::unavailable("the payment provider is unavailable; please try again")
        }
    }
}

/// Enough to catch typing slips; the provider checks the rest.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[derive(Debug, Serialize)]
pub(crate) struct CheckoutState {
    status: &'static str,
    order_id: Option<String>,
    order_token: Option<String>,
}

/// For the success page. The checkout session id is the secret here.
#[utoipa::path(get, path = "/api/checkout/{checkout_session_id}", tag = "checkout", params(("checkout_session_id" = String, Path)), responses((status = 200, description = "status, and order_id and order_token once paid"), (status = 404, description = "unknown checkout")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(checkout_id): Path<String>,
) -> ApiResult<Json<CheckoutState>> {
    if let Some(order) = db::orders::by_checkout_session(&state.db, &checkout_id).await? {
        return Ok(Json(CheckoutState {
            status: "paid",
            order_id: Some(domain::format_id(IdKind::Order, order.id)),
            order_token: Some(token::order_token(
                state.settings.app.secret_key.expose(),
                order.id,
            )),
        }));
    }
    let row = db::checkouts::get(&state.db, &checkout_id)
        .await?
        .ok_or_else(|| ApiError::not_found("checkout session"))?;
    let mut status = row.status();
    if status == CheckoutStatus::Open && row.expires_at <= OffsetDateTime::now_utc() {
        status = CheckoutStatus::Expired;
    }
    Ok(Json(CheckoutState {
        status: status.api_status(),
        order_id: None,
        order_token: None,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn plausible_emails() {
        for ok in ["a@b.co", "first.last+tag@example.com"] {
            assert!(super::is_plausible_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a b@c.de", "a@.de", "a@de."] {
            assert!(!super::is_plausible_email(bad), "{bad}");
        }
    }
}
