//! `GET /api/orders/{id}` and the photos behind its image URLs.
//!
//! Auth is the order token (`Authorization: Bearer …` or `?token=…`). A
//! missing, wrong or foreign token answers exactly as an unknown order does.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, header},
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ApiResult},
};
use crate::{
    db::{self, orders::OrderRow},
    domain::{self, IdKind, ImageStatus, chain, token},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders/{order_id}", get(show).delete(purge))
        .route("/api/orders/{order_id}/images/{image_id}/{which}", get(photo))
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

/// The order `raw_id` if the request carries its token; 404 otherwise.
pub async fn authorize(
    state: &AppState,
    raw_id: &str,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> ApiResult<OrderRow> {
    let not_found = || ApiError::not_found("order");
    let id = domain::parse_id(IdKind::Order, raw_id).ok_or_else(not_found)?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let presented = bearer.or(query.token.as_deref()).ok_or_else(not_found)?;
    let order = db::orders::get(&state.db, id).await?.ok_or_else(not_found)?;
    if !token::matches(presented, &order.access_token_hash) {
        return Err(not_found());
    }
    Ok(order)
}

#[derive(Debug, Serialize)]
pub struct OrderView {
    id: String,
    status: &'static str,
    email: Option<String>,
    amount_total: i64,
    amount_refunded: i64,
    currency: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    completed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    refunded_at: Option<OffsetDateTime>,
    /// When the photos were deleted (retention, or the customer's request).
    #[serde(with = "time::serde::rfc3339::option")]
    purged_at: Option<OffsetDateTime>,
    progress: Progress,
    images: Vec<ImageView>,
    /// Money given back (or on its way back), oldest first.
    refunds: Vec<RefundView>,
    /// Until when each restored photo may once be redone or refunded
    /// (`null` before the order first finished, or with no window).
    #[serde(with = "time::serde::rfc3339::option")]
    review_until: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize)]
struct RefundView {
    id: String,
    amount: i64,
    currency: String,
    /// `failed_photos`, `operator`, `customer`, …
    reason: String,
    /// `pending`, `sending`, `succeeded` or `failed`.
    status: String,
    /// The payment provider's id of the refund, once it is done.
    provider_refund_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    completed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize)]
struct Progress {
    total: usize,
    completed: usize,
    failed: usize,
}

#[derive(Debug, Serialize)]
struct ImageView {
    id: String,
    filename: String,
    status: &'static str,
    attempts: i32,
    error: Option<String>,
    width: i32,
    height: i32,
    original_url: String,
    restored_url: Option<String>,
    /// What the customer paid for this photo.
    unit_amount: i64,
    /// Whether its price was given back.
    refunded: bool,
    /// The options bought for it, in chain order.
    options: Vec<String>,
    /// Its chain's steps, the repair first, with where each stands.
    steps: Vec<StepView>,
    /// The customer's review of it, once used: `redo` or `refund`.
    review: Option<String>,
}

#[derive(Debug, Serialize)]
struct StepView {
    name: &'static str,
    /// `pending`, `processing`, `completed`, `failed` or `skipped`.
    status: &'static str,
    attempts: u32,
    error: Option<String>,
}

/// The image's chain steps and where each stands, read off its job and its
/// finished steps.
fn step_views(i: &db::orders::ImageRow) -> Vec<StepView> {
    let Ok(steps) = chain::steps_of(&i.options) else {
        tracing::error!(image_id = %i.id, options = ?i.options, "an image holds an option this build does not know");
        return Vec::new();
    };
    let finished: Vec<(usize, u32)> = i
        .finished_steps
        .iter()
        .zip(&i.finished_attempts)
        .map(|(p, a)| (*p as usize, (*a).max(0) as u32))
        .collect();
    let job = i
        .job_status
        .as_deref()
        .and_then(|s| s.parse().ok())
        .map(|status| chain::JobProgress {
            step: i.step.max(0) as usize,
            status,
            attempts: i.attempts.max(0) as u32,
            step_attempts_from: i.step_attempts_from.max(0) as u32,
            error: i.error.clone(),
        });
    chain::progress(&steps, &finished, job.as_ref())
        .into_iter()
        .map(|s| StepView {
            name: s.step.as_str(),
            status: s.status.as_str(),
            attempts: s.attempts,
            error: s.error,
        })
        .collect()
}

#[utoipa::path(get, path = "/api/orders/{order_id}", tag = "orders", params(("order_id" = String, Path), ("token" = Option<String>, Query, description = "the order token, or send it as a bearer token")), responses((status = 200, description = "the order with its images and progress"), (status = 404, description = "unknown order, or not yours")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<OrderView>> {
    let order = authorize(&state, &order_id, &headers, &query).await?;
    Ok(Json(view(&state, order).await?))
}

/// The order as the API shows it (also the events stream's snapshot).
pub async fn view(state: &AppState, order: OrderRow) -> ApiResult<OrderView> {
    let images = db::orders::images(&state.db, order.id).await?;
    let reviews = db::reviews::for_order(&state.db, order.id).await?;
    let review_until = db::reviews::window_opened(&state.db, order.id)
        .await?
        .and_then(|opened| domain::review::closes_at(opened, state.settings.review.days));
    let order_ref = domain::format_id(IdKind::Order, order.id);
    let count = |s: ImageStatus| images.iter().filter(|i| i.status() == s).count();
    let progress = Progress {
        total: images.len(),
        completed: count(ImageStatus::Completed),
        failed: count(ImageStatus::Failed),
    };
    let images = images
        .into_iter()
        .map(|i| {
            let base = format!(
                "/api/orders/{order_ref}/images/{}",
                domain::format_id(IdKind::Image, i.id)
            );
            let status = i.status();
            let steps = step_views(&i);
            ImageView {
                id: domain::format_id(IdKind::Image, i.id),
                filename: i.filename,
                status: status.as_str(),
                attempts: i.attempts,
                error: i.error,
                width: i.width,
                height: i.height,
                original_url: format!("{base}/original"),
                restored_url: (status == ImageStatus::Completed).then(|| format!("{base}/restored")),
                unit_amount: i.unit_amount,
                refunded: i.refund_id.is_some(),
                review: reviews.iter().find(|(id, _)| *id == i.id).map(|(_, a)| a.clone()),
                options: i.options,
                steps,
            }
        })
        .collect();
    let refunds = db::refunds::for_order(&state.db, order.id)
        .await?
        .into_iter()
        .map(|r| RefundView {
            id: domain::format_id(IdKind::Refund, r.id),
            amount: r.amount,
            currency: r.currency,
            reason: r.reason,
            status: r.status,
            provider_refund_id: r.provider_refund_id,
            created_at: r.created_at,
            completed_at: r.completed_at,
        })
        .collect();
    Ok(OrderView {
        id: order_ref,
        status: order.status().as_str(),
        email: order.email,
        amount_total: order.amount_total,
        amount_refunded: order.amount_refunded,
        currency: order.currency,
        created_at: order.created_at,
        completed_at: order.completed_at,
        refunded_at: order.refunded_at,
        purged_at: order.purged_at,
        progress,
        images,
        refunds,
        review_until,
    })
}

/// `…/images/{image_id}/original` or `…/restored`: the photo itself.
#[utoipa::path(get, path = "/api/orders/{order_id}/images/{image_id}/{which}", tag = "orders", params(("order_id" = String, Path), ("image_id" = String, Path), ("which" = String, Path, description = "original or restored")), responses((status = 200, description = "the photo"), (status = 404, description = "unknown, not yours, or not restored yet"), (status = 410, description = "the photos were deleted (photos_purged), or the order was refunded (order_refunded: restored photos only)")))]
pub(crate) async fn photo(
    State(state): State<AppState>,
    Path((order_id, image_id, which)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let order = authorize(&state, &order_id, &headers, &query).await?;
    if order.purged_at.is_some() {
        return Err(ApiError::gone(
            "photos_purged",
            "the photos of this order have been deleted",
        ));
    }
    if which == "restored" && order.is_fully_refunded() {
        return Err(refunded());
    }
    let image_id: Uuid =
        domain::parse_id(IdKind::Image, &image_id).ok_or_else(|| ApiError::not_found("image"))?;
    let images = db::orders::images(&state.db, order.id).await?;
    let image = images
        .into_iter()
        .find(|i| i.id == image_id)
        .ok_or_else(|| ApiError::not_found("image"))?;
    let key = match which.as_str() {
        "original" if image.status() == ImageStatus::Pending => image.temp_key.clone(),
        "original" => image.original_key.clone(),
        "restored" => image
            .restored_key
            .clone()
            .ok_or_else(|| ApiError::not_found("restored photo"))?,
        _ => return Err(ApiError::not_found("photo")),
    };
    super::stored::photo(
        &state.storage,
        &key,
        &image.content_type,
        "private, max-age=300",
        "photo",
    )
    .await
}

/// The answer for what a fully refunded order no longer delivers.
pub fn refunded() -> ApiError {
    ApiError::gone(
        "order_refunded",
        "this order was refunded; its restored photos are no longer available",
    )
}

#[derive(Debug, Serialize)]
pub(crate) struct Purged {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    purged_at: OffsetDateTime,
}

/// `DELETE /api/orders/{id}`: the customer's photos are deleted at once
/// (the order's record stays, saying so). Refused while they are restored.
#[utoipa::path(delete, path = "/api/orders/{order_id}", tag = "orders", params(("order_id" = String, Path)), responses((status = 200, description = "the photos are deleted"), (status = 404, description = "unknown order, or not yours"), (status = 409, description = "still being restored")))]
pub(crate) async fn purge(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Purged>> {
    let order = authorize(&state, &order_id, &headers, &query).await?;
    if order.status().is_live() {
        return Err(ApiError::conflict(
            "order_in_progress",
            "the photos are still being restored; delete them once the order is finished",
        ));
    }
    let purged_at = crate::sweeper::purge_order(&state.db, &state.storage, order.id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(order_id = %order.id, "photos purged at the customer's request");
    Ok(Json(Purged {
        id: domain::format_id(IdKind::Order, order.id),
        purged_at,
    }))
}
