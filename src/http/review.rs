//! `POST /api/orders/{id}/images/{image_id}/redo` and `…/refund`: the
//! customer's review of one restored photo, with the order token (see
//! [`crate::shop::review`]).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    error::{ApiError, ApiResult},
    orders::{TokenQuery, authorize},
};
use crate::{
    domain::{IdKind, format_id, parse_id, review::ReviewAction},
    shop::{
        refund::RefundDeps,
        review::{self, ReviewError, ReviewRequest},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders/{order_id}/images/{image_id}/redo", post(redo))
        .route("/api/orders/{order_id}/images/{image_id}/refund", post(refund))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    /// What the customer would like done differently (a redo only).
    #[serde(default)]
    note: Option<String>,
}

/// Asks for the photo to be restored again (the chain runs anew, with a
/// fresh seed): once per photo, within the review window.
#[utoipa::path(post, path = "/api/orders/{order_id}/images/{image_id}/redo", tag = "orders",
    params(("order_id" = String, Path), ("image_id" = String, Path),
           ("token" = Option<String>, Query, description = "the order token, or send it as a bearer token"),
           ("Idempotency-Key" = Option<String>, Header, description = "the same key answers a repeated request as the first")),
    request_body(content = String, content_type = "application/json", description = "optional {\"note\": \"…\"} (≤ 1000 characters)"),
    responses((status = 202, description = "accepted: the photo is queued again and its order reopened"),
              (status = 400, description = "the body is not JSON (invalid_json)"),
              (status = 404, description = "unknown order or photo, or not yours"),
              (status = 409, description = "used already (review_used), the order is still running (order_in_progress), or the photo was not restored (photo_not_restored)"),
              (status = 410, description = "the review window closed (review_window_closed), the order was refunded (order_refunded) or its photos deleted (photos_purged)"),
              (status = 422, description = "the note is too long or not a string (invalid_note)")))]
pub(crate) async fn redo(
    state: State<AppState>,
    path: Path<(String, String)>,
    query: Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    review_photo(state, path, query, headers, body, ReviewAction::Redo).await
}

/// Asks for the photo's price back, through the payment provider: once per
/// photo, within the review window.
#[utoipa::path(post, path = "/api/orders/{order_id}/images/{image_id}/refund", tag = "orders",
    params(("order_id" = String, Path), ("image_id" = String, Path),
           ("token" = Option<String>, Query, description = "the order token, or send it as a bearer token"),
           ("Idempotency-Key" = Option<String>, Header, description = "the same key answers a repeated request as the first")),
    request_body(content = String, content_type = "application/json", description = "none, or {}"),
    responses((status = 202, description = "accepted: the refund is made or queued (refund_amount says how much)"),
              (status = 400, description = "the body is not JSON (invalid_json)"),
              (status = 404, description = "unknown order or photo, or not yours"),
              (status = 409, description = "used already (review_used), the order is still running (order_in_progress), the photo was not restored (photo_not_restored), or nothing is left to refund (already_refunded)"),
              (status = 410, description = "the review window closed (review_window_closed), the order was refunded (order_refunded) or its photos deleted (photos_purged)")))]
pub(crate) async fn refund(
    state: State<AppState>,
    path: Path<(String, String)>,
    query: Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    review_photo(state, path, query, headers, body, ReviewAction::Refund).await
}

async fn review_photo(
    State(state): State<AppState>,
    Path((order_raw, image_raw)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
    action: ReviewAction,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let order = authorize(&state, &order_raw, &headers, &query).await?;
    let image_id = parse_id(IdKind::Image, &image_raw).ok_or_else(|| ApiError::not_found("photo"))?;
    let body: ReviewBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReviewBody::default()
    } else {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
        serde_json::from_value(value).map_err(|e| ApiError::unprocessable("invalid_note", e.to_string()))?
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255);
    let owner = state.settings.instance_id();
    let deps = RefundDeps {
        db: &state.db,
        settings: &state.settings,
        payments: state.payments.as_ref(),
        owner: &owner,
    };
    let asked = ReviewRequest {
        order_id: order.id,
        image_id,
        action,
        note: body.note.as_deref(),
        idempotency_key: key,
    };
    let accepted = review::request(deps, &state.storage, &asked)
        .await
        .map_err(|e| match e {
            ReviewError::NotFound => ApiError::not_found("photo"),
            ReviewError::NoteTooLong => ApiError::unprocessable("invalid_note", e.to_string()),
            ReviewError::NotFinished(_) => ApiError::conflict("order_in_progress", e.to_string()),
            ReviewError::NotRestored => ApiError::conflict("photo_not_restored", e.to_string()),
            ReviewError::Used(_) => ApiError::conflict("review_used", e.to_string()),
            ReviewError::NoPayment => ApiError::conflict("no_payment", e.to_string()),
            ReviewError::NothingLeft => ApiError::conflict("already_refunded", e.to_string()),
            ReviewError::NoOriginal => ApiError::gone("photos_purged", e.to_string()),
            ReviewError::WindowClosed(_) | ReviewError::NoWindow => {
                ApiError::gone("review_window_closed", e.to_string())
            }
            ReviewError::Refunded => ApiError::gone("order_refunded", e.to_string()),
            ReviewError::Purged => ApiError::gone("photos_purged", e.to_string()),
            ReviewError::Database(e) => e.into(),
            ReviewError::Storage(e) => e.into(),
        })?;
    if accepted.action == ReviewAction::Redo && !accepted.repeated {
        state.actors.dispatch(accepted.order_id);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "order_id": format_id(IdKind::Order, accepted.order_id),
            "image_id": format_id(IdKind::Image, accepted.image_id),
            "action": accepted.action.as_str(),
            "status": "accepted",
            "refund_amount": accepted.refund_amount,
        })),
    ))
}
