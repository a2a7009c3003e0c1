//! `POST /api/checkout` and `GET /api/checkout/{checkout_session_id}`.
//!
//! Opening a checkout is the `shop::checkout` workflow (it freezes what the
//! checkout sells); the success page's view of one shows that record and,
//! while no order exists, has the shop ask the provider (rate-limited) so a
//! lost or late webhook does not leave a paid customer waiting.

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    routing::{get, post},
};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{
    AppState,
    error::{ApiError, ApiResult},
};
use crate::{
    db,
    domain::{self, CheckoutStatus, IdKind, options::ChoiceError, payments::LineItem, token},
    providers::payments::PaymentError,
    shop::{
        checkout::{self as workflow, CheckoutDeps, CheckoutError, Selection},
        options,
    },
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
    /// Options for every photo, beside its repair.
    #[serde(default)]
    options: Vec<String>,
    /// Options for single photos (`fil_…`), replacing `options` for them.
    #[serde(default)]
    photo_options: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CheckoutCreated {
    checkout_session_id: String,
    checkout_url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

impl AppState {
    pub(crate) fn checkout_deps(&self) -> CheckoutDeps<'_> {
        CheckoutDeps {
            db: &self.db,
            settings: &self.settings,
            payments: self.payments.as_ref(),
        }
    }
}

#[utoipa::path(post, path = "/api/checkout", tag = "checkout", request_body(content_type = "application/json", description = "{\"session_id\": \"ups_…\", \"email\": \"optional\", \"options\": [\"faces\"] (optional, every photo), \"photo_options\": {\"fil_…\": [\"colorize\"]} (optional, replacing options for that photo)}"), responses((status = 200, description = "checkout_session_id and checkout_url"), (status = 400, description = "not JSON, or not the body described"), (status = 404, description = "unknown session"), (status = 409, description = "already paid (details.order_id), or a delayed payment is on its way (payment_pending)"), (status = 410, description = "expired"), (status = 422, description = "empty session, bad email, or options that are unknown, unavailable, conflicting or for photos not in the session (invalid_options, details.options)"), (status = 429, description = "too many checkouts from this address or for this session (rate_limited, with Retry-After)"), (status = 502, description = "the payment provider refused the checkout"), (status = 503, description = "the payment provider is unavailable")))]
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
    let selection = selection(&state, &body)?;
    state.checkouts_per_session.check(&session_id).map_err(|wait| {
        super::rate_limit::refused(
            "checkout_per_session",
            wait,
            "too many checkouts opened for this upload session; retry after the time given",
        )
    })?;
    let opened = workflow::open(state.checkout_deps(), session_id, email, &selection)
        .await
        .map_err(checkout_error)?;
    expire_at_provider(&state, opened.replaced);
    Ok(Json(CheckoutCreated {
        checkout_session_id: opened.id,
        checkout_url: opened.url,
        expires_at: opened.expires_at,
    }))
}

/// The options asked for, checked against what the shop sells: every
/// problem is listed in `details.options`, with the photo it was for.
fn selection(state: &AppState, body: &CreateCheckout) -> ApiResult<Selection> {
    let mut problems: Vec<Value> = Vec::new();
    let read = |ids: &[String], photo: Option<&str>, problems: &mut Vec<Value>| {
        options::choose(&state.settings, ids)
            .map_err(|errors| problems.extend(errors.iter().map(|e| option_problem(e, photo))))
            .unwrap_or_default()
    };
    let every = read(&body.options, None, &mut problems);
    let mut per_photo = BTreeMap::new();
    for (photo, ids) in &body.photo_options {
        let choice = read(ids, Some(photo), &mut problems);
        match domain::parse_id(IdKind::File, photo) {
            Some(id) => {
                per_photo.insert(id, choice);
            }
            None => problems.push(unknown_photo(photo, "not a photo id (fil_…)")),
        }
    }
    if problems.is_empty() {
        Ok(Selection { every, per_photo })
    } else {
        Err(invalid_options(problems))
    }
}

fn option_problem(e: &ChoiceError, photo: Option<&str>) -> Value {
    let (option, problem) = match e {
        ChoiceError::Unknown(id) => (id.clone(), "unknown"),
        ChoiceError::Unavailable(o) => (o.as_str().to_owned(), "unavailable"),
        ChoiceError::Conflicting(a, b) => (format!("{a}+{b}"), "conflicting"),
    };
    json!({"option": option, "photo": photo, "problem": problem, "message": e.to_string()})
}

fn unknown_photo(photo: &str, message: &str) -> Value {
    json!({"photo": photo, "problem": "unknown_photo", "message": message})
}

fn invalid_options(problems: Vec<Value>) -> ApiError {
    ApiError::unprocessable(
        "invalid_options",
        "some of the options chosen cannot be bought here",
    )
    .with_details(json!({"options": problems}))
}

fn checkout_error(e: CheckoutError) -> ApiError {
    match e {
        CheckoutError::NotFound => ApiError::not_found("upload session"),
        CheckoutError::Paid { order_id } => {
            ApiError::conflict("already_paid", "this upload session is already paid")
                .with_details(json!({"order_id": order_id.map(|o| domain::format_id(IdKind::Order, o))}))
        }
        CheckoutError::Expired => ApiError::gone("session_expired", e.to_string()),
        CheckoutError::Empty => ApiError::unprocessable("empty_session", e.to_string()),
        CheckoutError::AwaitingPayment => ApiError::conflict("payment_pending", e.to_string()),
        CheckoutError::UnknownPhotos(photos) => invalid_options(
            photos
                .into_iter()
                .map(|p| {
                    unknown_photo(
                        &domain::format_id(IdKind::File, p),
                        "not a photo of this upload session",
                    )
                })
                .collect(),
        ),
        CheckoutError::Provider(e) => provider_error(e),
        CheckoutError::Database(e) => e.into(),
    }
}

/// Closes checkouts a newer one replaced, in the background (best effort:
/// a payment that lands on one anyway buys what it sold, or is refunded).
pub fn expire_at_provider(state: &AppState, checkout_ids: Vec<String>) {
    if checkout_ids.is_empty() {
        return;
    }
    let payments = state.payments.clone();
    tokio::spawn(async move {
        for id in checkout_ids {
            if let Err(e) = payments.expire_checkout(&id).await {
                tracing::warn!(checkout = %id, error = %e, "cannot expire a replaced checkout");
            }
        }
    });
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
    checkout_session_id: String,
    /// `pending` (also while a delayed payment is on its way), `paid`,
    /// `failed`, `expired`, or `refunded` (a payment the shop refused).
    status: &'static str,
    /// `awaiting_payment` while a delayed payment method is on its way.
    payment_status: Option<&'static str>,
    order_id: Option<String>,
    order_token: Option<String>,
    amount_total: i64,
    currency: String,
    line_items: Vec<LineItem>,
    files: Vec<SoldFile>,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// A photo the checkout sold.
#[derive(Debug, Serialize)]
struct SoldFile {
    id: String,
    filename: Option<String>,
    content_type: Option<String>,
    bytes: Option<i64>,
    width: Option<i32>,
    height: Option<i32>,
    unit_amount: i64,
    /// The options sold for it, in chain order.
    options: Vec<String>,
}

/// For the success page. The checkout session id is the secret here.
#[utoipa::path(get, path = "/api/checkout/{checkout_session_id}", tag = "checkout", params(("checkout_session_id" = String, Path)), responses((status = 200, description = "status, what the checkout sold (files, line_items, amount_total, currency), and order_id and order_token once paid"), (status = 404, description = "unknown checkout")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(checkout_id): Path<String>,
) -> ApiResult<Json<CheckoutState>> {
    let mut row = db::checkouts::get(&state.db, &checkout_id)
        .await?
        .ok_or_else(|| ApiError::not_found("checkout session"))?;
    let mut order = db::orders::by_checkout_session(&state.db, &checkout_id).await?;
    if order.is_none()
        && matches!(
            row.status(),
            CheckoutStatus::Open | CheckoutStatus::AwaitingPayment
        )
    {
        // The webhook may be late or lost: ask the provider (rate-limited).
        match workflow::sync(state.checkout_deps(), &checkout_id).await {
            Ok(Some(applied)) => {
                state.actors.follow_up(&applied);
                order = db::orders::by_checkout_session(&state.db, &checkout_id).await?;
                row = db::checkouts::get(&state.db, &checkout_id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("checkout session"))?;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(checkout = %checkout_id, error = %e, "cannot settle a checkout from the provider")
            }
        }
    }
    let mut status = row.status();
    if status == CheckoutStatus::Open && row.expires_at <= OffsetDateTime::now_utc() {
        status = CheckoutStatus::Expired;
    }
    let files = db::checkouts::photo_views(&state.db, &checkout_id)
        .await?
        .into_iter()
        .map(|p| SoldFile {
            id: domain::format_id(IdKind::File, p.file_upload_id),
            filename: p.filename,
            content_type: p.content_type,
            bytes: p.bytes,
            width: p.width,
            height: p.height,
            unit_amount: p.unit_amount,
            options: p.options,
        })
        .collect();
    let (order_id, order_token) = match &order {
        Some(order) => (
            Some(domain::format_id(IdKind::Order, order.id)),
            Some(token::order_token(
                state.settings.app.secret_key.expose(),
                order.id,
            )),
        ),
        None => (None, None),
    };
    Ok(Json(CheckoutState {
        checkout_session_id: row.id.clone(),
        status: if order.is_some() {
            "paid"
        } else {
            status.api_status()
        },
        payment_status: (status == CheckoutStatus::AwaitingPayment && order.is_none())
            .then_some("awaiting_payment"),
        order_id,
        order_token,
        amount_total: row.amount_total,
        currency: row.currency.clone(),
        line_items: row.line_items.0.clone(),
        files,
        expires_at: row.expires_at,
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
