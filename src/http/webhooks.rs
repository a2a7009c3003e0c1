//! `POST /api/webhooks/stripe`: Stripe's (and the dev checkout's) events.
//!
//! Signature over the raw bytes first, then lenient parsing, then Redis as
//! the fast path for repeats and the `webhook_events` row as the guarantee.
//! The order (or the refund of a payment the shop refuses) is committed
//! before the 200; the actors get it after.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
    routing::post,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{AppState, error::ApiError};
use crate::{
    dedup::Claim,
    providers::{
        payments::{event::StripeEvent, signature},
        restoration::{replicate::Prediction, signature as replicate_signature},
    },
    shop::fulfilment::{self, Applied, FulfilmentError},
};

pub fn router(settings: &crate::config::Settings) -> Router<AppState> {
    // Both senders' payloads are small; `http.webhook_body_limit` is generous.
    Router::new()
        .route("/api/webhooks/stripe", post(stripe))
        .route("/api/webhooks/replicate", post(replicate))
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.http.webhook_body_limit,
        ))
}

/// Replicate's completion notices (`replicate.webhooks = true`): verified,
/// recorded once, then handed to the attempt waiting on the prediction.
#[utoipa::path(post, path = "/api/webhooks/replicate", tag = "webhooks", request_body(content = String, content_type = "application/json", description = "a prediction, signed per Standard Webhooks"), responses((status = 200, description = "received"), (status = 400, description = "bad signature or body"), (status = 404, description = "replicate.webhooks is off")))]
pub(crate) async fn replicate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(too_large)?;
    let settings = &state.settings.replicate;
    if !settings.webhooks {
        return Err(ApiError::not_found("page"));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    replicate_signature::verify(
        settings.webhook_secret.expose(),
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        REPLICATE_TOLERANCE,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "replicate webhook refused");
        ApiError::bad_request("invalid_signature", e.to_string())
    })?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_payload", format!("the body is not JSON: {e}")))?;
    let prediction: Prediction = serde_json::from_value(payload.clone()).map_err(|e| {
        ApiError::bad_request("invalid_payload", format!("the body is not a prediction: {e}"))
    })?;
    let id = header("webhook-id").unwrap_or_default();
    let mut tx = state.db.begin().await?;
    let event_type = format!("prediction.{}", prediction.status);
    let fresh = crate::db::webhooks::record(&mut tx, id, "replicate", &event_type, &payload).await?;
    tx.commit().await?;
    if fresh {
        state.predictions.publish(prediction);
    }
    metrics::counter!("restoreclick_webhooks_total", "source" => "replicate", "outcome" => if fresh { "applied" } else { "duplicate" })
        .increment(1);
    Ok(Json(json!({"received": true, "duplicate": !fresh})))
}

/// A body the listener would not read (too large, cut off) as the API's error.
fn too_large(e: BytesRejection) -> ApiError {
    ApiError::body_timeout(&e).unwrap_or_else(|| ApiError::new(e.status(), "invalid_body", e.body_text()))
}

/// Replicate's signed timestamps are accepted within five minutes.
const REPLICATE_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

#[utoipa::path(post, path = "/api/webhooks/stripe", tag = "webhooks", request_body(content = String, content_type = "application/json", description = "a Stripe event, signed in Stripe-Signature"), responses((status = 200, description = "received (also for duplicates and unhandled types)"), (status = 400, description = "bad signature or body")))]
pub(crate) async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(too_large)?;
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let settings = &state.settings;
    signature::verify(
        header,
        &body,
        settings.stripe_webhook_secret().expose(),
        settings.stripe.webhook_tolerance,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "stripe webhook refused");
        ApiError::bad_request("invalid_signature", e.to_string())
    })?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_payload", format!("the body is not JSON: {e}")))?;
    let event: StripeEvent = serde_json::from_value(payload.clone()).map_err(|e| {
        ApiError::bad_request("invalid_payload", format!("the body is not a Stripe event: {e}"))
    })?;

    let claim = state.dedup.claim("stripe", &event.id).await;
    if claim == Claim::Done {
        metrics::counter!("restoreclick_webhooks_total", "source" => "stripe", "outcome" => "duplicate")
            .increment(1);
        return Ok(Json(json!({"received": true, "duplicate": true})));
    }
    let applied = match fulfilment::apply(&state.db, settings, &event, &payload).await {
        Ok(applied) => applied,
        Err(e) => {
            if claim == Claim::Claimed {
                state.dedup.release("stripe", &event.id).await;
            }
            return Err(match e {
                FulfilmentError::BadPayload(e) => ApiError::bad_request(
                    "invalid_payload",
                    format!("the event's object cannot be read: {e}"),
                ),
                FulfilmentError::Database(e) => e.into(),
            });
        }
    };
    state.dedup.done("stripe", &event.id).await;
    fail::fail_point!("webhook::after_commit");
    state.actors.follow_up(&applied);
    let outcome = match applied {
        Applied::Duplicate => "duplicate",
        Applied::Ignored(_) => "ignored",
        Applied::PaymentRefused { .. } => "refused",
        _ => "applied",
    };
    metrics::counter!("restoreclick_webhooks_total", "source" => "stripe", "outcome" => outcome).increment(1);
    Ok(Json(
        json!({"received": true, "duplicate": applied == Applied::Duplicate}),
    ))
}
