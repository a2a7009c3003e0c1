//! Shared middleware: request ids on every response and log line, an access
//! log line per request, load shedding (503 + `Retry-After`) past one global
//! concurrency limit, an idle timeout on request bodies, panics turned into
//! 500s, security headers, optional CORS, HTTP metrics, and the API's error
//! body on every error a framework layer produced.
//!
//! Timeouts and body limits are per route group (see [`super::api_router`]):
//! uploads may run long and carry big bodies, the rest may not.

use std::time::{Duration, Instant};

use axum::{
    Router,
    body::Body,
    error_handling::HandleErrorLayer,
    extract::{MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    map_request_body::MapRequestBodyLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::{RequestBodyTimeoutLayer, TimeoutLayer},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use super::{AppState, error::ApiError};
use crate::config::Settings;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A deadline for a group of routes: past it the request is answered 503.
pub fn deadline(router: Router<AppState>, limit: Duration) -> Router<AppState> {
    router.layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        limit,
    ))
}

/// Load shedding: past `max` requests in flight (across every route, one
/// semaphore), new ones are answered 503 with `Retry-After` at once.
pub fn shed_load(router: Router<AppState>, max: usize) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the shop is busy; please retry shortly",
                );
                e.retry_after = Some(1);
                e
            }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(max)),
    )
}

/// The layers every request of the customer listener passes through.
pub fn wrap(router: Router<AppState>, settings: &Settings) -> Router<AppState> {
    let router = router
        .layer(
            ServiceBuilder::new()
                .layer(RequestBodyTimeoutLayer::new(settings.http.body_idle_timeout))
                .layer(MapRequestBodyLayer::new(Body::new)),
        )
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a request handler panicked").into_response()
        }))
        .layer(axum::middleware::from_fn(error_bodies))
        .layer(axum::middleware::from_fn(track_metrics))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
    let router = if settings.public_url().starts_with("https://") {
        router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ))
    } else {
        router
    };
    let router = match cors(&settings.http.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    traced(router)
}

/// Request ids (kept when the caller sent one) and a span and access log
/// line per request; also used by the ops listener.
pub fn traced(router: Router<AppState>) -> Router<AppState> {
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The matched route (`/download/{token}`), never the raw path or
                    // query: tokens and ids in URLs stay out of the logs.
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", |p| p.as_str());
                    tracing::info_span!("http", method = %req.method(), route = %route, request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// No cross-origin access unless `http.cors_origins` names origins.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER])
            .max_age(Duration::from_secs(3600)),
    )
}

/// Errors that a layer or an extractor answered with an empty or plain-text
/// body (a timeout, a body over its limit) get the API's error body.
async fn error_bodies(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_ascii_lowercase(),
        text => text.to_owned(),
    };
    let mut error = ApiError::from_status(status, message);
    if let Some(secs) = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        error.retry_after = Some(secs);
    }
    let mut fixed = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    fixed
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("restoreclick_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("restoreclick_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Buckets for HTTP latency, in seconds (1 ms to 30 s).
pub const HTTP_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
