//! The admin API on the ops listener, behind `Authorization: Bearer
//! {admin.token}` (compared in constant time; 401 otherwise; the routes do
//! not exist while no token is set). Every action writes one audit line.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, header, request::Parts},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ApiResult},
};
use crate::{
    db,
    domain::{IdKind, OrderStatus, format_id, parse_id},
    retry::RetryError,
    shop::refund::{Executed, OperatorRefundError, RefundDeps, operator_refund},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/orders", get(list))
        .route("/admin/orders/{order_id}", get(show))
        .route("/admin/orders/{order_id}/refund", post(refund))
        .route("/admin/jobs/{job_id}/retry", post(retry))
}

/// An operator who presented the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let expected = state.settings.admin.token.expose().as_bytes();
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .as_bytes();
        if !expected.is_empty() && bool::from(presented.ct_eq(expected)) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required",
            ))
        }
    }
}

fn order_id(raw: &str) -> ApiResult<Uuid> {
    parse_id(IdKind::Order, raw).ok_or_else(|| ApiError::not_found("order"))
}

#[derive(Debug, sqlx::FromRow)]
struct OrderSummary {
    id: Uuid,
    status: String,
    email: Option<String>,
    amount_total: i64,
    image_count: i32,
    failed_images: i32,
    created_at: time::OffsetDateTime,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/admin/orders", tag = "admin", params(("status" = Option<String>, Query)), responses((status = 200, description = "orders, newest first"), (status = 401, description = "admin token missing or wrong")))]
pub(crate) async fn list(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(status) = &query.status
        && status.parse::<OrderStatus>().is_err()
    {
        return Err(ApiError::unprocessable(
            "invalid_status",
            format!("unknown order status {status:?}"),
        ));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    tracing::info!(target: "audit", action = "list_orders", status = ?query.status, limit, "admin action");
    let rows: Vec<OrderSummary> = sqlx::query_as(
        "SELECT id, status, email, amount_total, image_count, failed_images, created_at FROM orders
         WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC LIMIT $2",
    )
    .bind(&query.status)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let orders: Vec<Value> = rows
        .into_iter()
        .map(|o| {
            json!({"id": format_id(IdKind::Order, o.id), "status": o.status, "email": o.email,
                   "amount_total": o.amount_total, "images": o.image_count, "failed_images": o.failed_images,
                   "created_at": o.created_at.format(&time::format_description::well_known::Rfc3339).ok()})
        })
        .collect();
    Ok(Json(json!({ "orders": orders })))
}

#[utoipa::path(get, path = "/admin/orders/{order_id}", tag = "admin", params(("order_id" = String, Path)), responses((status = 200, description = "the order with jobs, emails and events"), (status = 401, description = "admin token missing or wrong"), (status = 404, description = "unknown order")))]
pub(crate) async fn show(
    _admin: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = order_id(&raw)?;
    tracing::info!(target: "audit", action = "show_order", order_id = %raw, "admin action");
    let order = db::orders::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let detail: (Value, Value, Value) = sqlx::query_as(
        "SELECT
           (SELECT coalesce(json_agg(j ORDER BY j.created_at), '[]') FROM (
              SELECT id, image_id, status, provider, attempts, max_attempts, external_id, next_attempt_at, last_error,
                     error_kind, created_at FROM restoration_jobs WHERE order_id = $1) j),
           (SELECT coalesce(json_agg(e ORDER BY e.created_at), '[]') FROM (
              SELECT id, idempotency_key, kind, to_email, status, attempts, provider_message_id, last_error, sent_at,
                     created_at FROM email_queue WHERE order_id = $1) e),
           (SELECT coalesce(json_agg(v ORDER BY v.id), '[]') FROM (
              SELECT id, image_id, kind, status, detail, created_at FROM order_events WHERE order_id = $1) v)",
    )
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    let (mut jobs, emails, mut events) = detail;
    prefix_ids(&mut jobs, &[("id", IdKind::Job), ("image_id", IdKind::Image)]);
    prefix_ids(&mut events, &[("image_id", IdKind::Image)]);
    Ok(Json(json!({
        "id": format_id(IdKind::Order, order.id),
        "status": order.status,
        "retry_round": order.retry_round,
        "email": order.email,
        "amount_total": order.amount_total,
        "amount_refunded": order.amount_refunded,
        "currency": order.currency,
        "checkout_session_id": order.stripe_checkout_session_id,
        "payment_intent": order.stripe_payment_intent_id,
        "failed_images": order.failed_images,
        "jobs": jobs,
        "emails": emails,
        "events": events,
    })))
}

/// Shows the ids of `rows` (JSON objects) as the API does (`job_…`, `img_…`).
fn prefix_ids(rows: &mut Value, fields: &[(&str, IdKind)]) {
    for row in rows.as_array_mut().into_iter().flatten() {
        for (field, kind) in fields {
            let id = row[*field].as_str().and_then(|s| Uuid::try_parse(s).ok());
            if let Some(id) = id {
                row[*field] = Value::String(format_id(*kind, id));
            }
        }
    }
}

/// `POST /admin/jobs/{job_id}/retry`: a failed photo of a finished order is
/// restored again, with a fresh budget of attempts (see [`crate::retry`]).
#[utoipa::path(post, path = "/admin/jobs/{job_id}/retry", tag = "admin", params(("job_id" = String, Path, description = "job_… (or the bare UUID)")), responses((status = 202, description = "the photo is queued again and its order reopened"), (status = 401, description = "admin token missing or wrong"), (status = 404, description = "unknown job"), (status = 409, description = "the job is not failed, or its order is live, refunded or purged")))]
pub(crate) async fn retry(
    _admin: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let job_id = parse_id(IdKind::Job, &raw)
        .or_else(|| Uuid::try_parse(&raw).ok())
        .ok_or_else(|| ApiError::not_found("job"))?;
    let retried = crate::retry::retry_job(&state.db, &state.storage, &state.settings, job_id)
        .await
        .map_err(|e| match e {
            RetryError::NotFound => ApiError::not_found("job"),
            RetryError::NotFailed(_) => ApiError::conflict("job_not_failed", e.to_string()),
            RetryError::OrderLive(_) => ApiError::conflict("order_in_progress", e.to_string()),
            RetryError::Refunded => ApiError::conflict("order_refunded", e.to_string()),
            RetryError::Purged => ApiError::conflict("photos_purged", e.to_string()),
            RetryError::NoOriginal => ApiError::conflict("no_original", e.to_string()),
            RetryError::Database(e) => e.into(),
            RetryError::Storage(e) => e.into(),
        })?;
    state.actors.dispatch(retried.order_id);
    let job = format_id(IdKind::Job, retried.job_id);
    let order = format_id(IdKind::Order, retried.order_id);
    tracing::info!(target: "audit", action = "retry_job", job_id = %job, order_id = %order, retry_round = retried.retry_round, "admin action");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": job,
            "image_id": format_id(IdKind::Image, retried.image_id),
            "order_id": order,
            "status": "queued",
            "retry_round": retried.retry_round,
        })),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RefundBody {
    /// Minor units; the rest of the payment when left out.
    #[serde(default)]
    amount: Option<i64>,
}

/// Refunds through the payment provider: a refund row first, then the
/// provider call with its idempotency key (see [`crate::shop::refund`]), so
/// a repeated request refunds once and a crash midway is finished by the
/// `Refunder`.
#[utoipa::path(post, path = "/admin/orders/{order_id}/refund", tag = "admin", request_body(content = String, content_type = "application/json", description = "optional {\"amount\": minor units}"), params(("order_id" = String, Path)), responses((status = 202, description = "refund done or queued (status says which)"), (status = 401, description = "admin token missing or wrong"), (status = 404, description = "unknown order"), (status = 409, description = "nothing to refund"), (status = 422, description = "bad amount"), (status = 502, description = "the payment provider refused the refund")))]
pub(crate) async fn refund(
    _admin: Admin,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: RefundBody = if body.iter().all(u8::is_ascii_whitespace) {
        RefundBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let id = order_id(&raw)?;
    let owner = state.settings.instance_id();
    let deps = RefundDeps {
        db: &state.db,
        settings: &state.settings,
        payments: state.payments.as_ref(),
        owner: &owner,
    };
    let done = operator_refund(deps, id, body.amount)
        .await
        .map_err(|e| match e {
            OperatorRefundError::NotFound => ApiError::not_found("order"),
            OperatorRefundError::NoPayment => ApiError::conflict("no_payment", e.to_string()),
            OperatorRefundError::AlreadyRefunded => ApiError::conflict("already_refunded", e.to_string()),
            OperatorRefundError::InvalidAmount { .. } => {
                ApiError::unprocessable("invalid_amount", e.to_string())
            }
            OperatorRefundError::Database(e) => e.into(),
        })?;
    let order_ref = format_id(IdKind::Order, id);
    let (status, provider_id) = match &done.executed {
        Some(Executed::Succeeded {
            provider_refund_id,
            effect,
        }) => {
            state.actors.tree().refunded(effect);
            ("succeeded", Some(provider_refund_id.clone()))
        }
        Some(Executed::Failed { error }) => {
            tracing::error!(error = %error, "the payment provider refused the refund");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "payment_provider_error",
                error.clone(),
            ));
        }
        _ => ("pending", None),
    };
    tracing::info!(target: "audit", action = "refund", order_id = %order_ref, amount = done.amount,
                   refund = %done.refund_id, status, "admin action");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "order_id": order_ref,
            "id": format_id(IdKind::Refund, done.refund_id),
            "refund_id": provider_id,
            "amount": done.amount,
            "status": status,
        })),
    ))
}
