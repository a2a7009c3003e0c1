//! The HTTP side: one router per resource, merged here, with the shared
//! middleware (request ids, tracing, timeouts, load shedding, metrics).

pub mod admin;
pub mod checkout;
pub mod dev_checkout;
pub mod downloads;
pub mod error;
pub mod events;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod pages;
pub mod upload;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::{
    actors::Actors, config::Settings, dedup::WebhookDedup, providers::payments::PaymentProvider,
    storage::Storage, validation::PhotoLimits,
};

/// Everything a handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub storage: Storage,
    pub dedup: WebhookDedup,
    pub payments: Arc<dyn PaymentProvider>,
    pub actors: Actors,
    pub limits: Arc<PhotoLimits>,
    /// Full decodes at once: each can take hundreds of megabytes.
    pub decode_slots: Arc<Semaphore>,
    /// Outgoing HTTP (the dev checkout calling the shop's own webhook).
    pub http: reqwest::Client,
    /// Where this process's own HTTP listener answers.
    pub self_url: Arc<str>,
    /// Replicate's pushed completions, for the attempts waiting on them.
    pub predictions: crate::providers::restoration::replicate::PredictionNotices,
}

/// The customer listener's routes.
pub fn api_router(state: AppState) -> Router {
    let dev = state.payments.name() == "dev";
    let mut router = Router::new()
        .merge(upload::router(&state.settings))
        .merge(checkout::router())
        .merge(orders::router())
        .merge(downloads::router())
        .merge(events::router())
        .merge(openapi::router())
        .merge(webhooks::router())
        .merge(pages::router())
        .merge(ops::health_router());
    if dev {
        router = router.merge(dev_checkout::router());
    }
    let router = router
        .fallback(|| async { error::ApiError::not_found("page") })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method",
            )
        });
    middleware::wrap(router, &state.settings).with_state(state)
}

/// The operator listener's routes.
pub fn ops_router(state: AppState) -> Router {
    let mut router = ops::router();
    if state.settings.admin.token.is_set() {
        router = router.merge(admin::router());
    }
    router
        .fallback(|| async { error::ApiError::not_found("page") })
        .with_state(state)
}
