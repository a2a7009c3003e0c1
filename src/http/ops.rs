//! Operator endpoints: `/healthz`, `/readyz` (also on the customer listener)
//! and `/metrics` (only on the ops listener).

use std::sync::OnceLock;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::{AppState, middleware::HTTP_BUCKETS};

pub fn health_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

pub fn router() -> Router<AppState> {
    health_router().route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "the process and its actor tree can do their work"),
    (status = 503, description = "the actor tree has stopped, or has been restarting for too long: restart the process")))]
pub(crate) async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let tree = state.actors.health();
    let status = if tree.can_run() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if tree.can_run() { "ok" } else { "unhealthy" }, "actors": tree.as_str()})),
    )
}

/// Longest wait for one readiness check: a dependency that does not answer
/// in this long is down, as far as a load balancer is concerned.
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A readiness check's answer, false when it takes too long.
async fn within(check: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(READY_CHECK_TIMEOUT, check)
        .await
        .unwrap_or(false)
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "can take a payment: Postgres and storage answer; `redis` is `ok` or `degraded` (Redis is only the webhook dedup fast path)"),
    (status = 503, description = "Postgres or storage does not answer")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (database, redis, storage) = tokio::join!(
        within(async { sqlx::query("SELECT 1").execute(&state.db).await.is_ok() }),
        within(state.dedup.ping()),
        within(async { state.storage.ping().await.is_ok() }),
    );
    let ready = database && storage;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ready { "ready" } else { "not_ready" },
                    "redis": if redis { "ok" } else { "degraded" },
                    "checks": {"database": database, "redis": redis, "storage": storage}})),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format (ops listener only)")))]
pub(crate) async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().map(PrometheusHandle::render).unwrap_or_default(),
    )
}

/// Buckets for one restoration attempt, in seconds: the local engine takes
/// a fraction of a second to seconds, a hosted model seconds to many minutes.
pub const JOB_BUCKETS: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("restoreclick_http_request_duration_seconds".into()),
                    &HTTP_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("restoreclick_job_duration_seconds".into()),
                        &JOB_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .inspect_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}
