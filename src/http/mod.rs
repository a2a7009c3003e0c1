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
pub mod pricing;
pub mod rate_limit;
pub mod review;
pub mod serve;
pub mod spool;
pub mod stored;
pub mod upload;
pub mod webhooks;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit};
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
    /// Open live-progress streams, capped per order and in all.
    pub event_streams: Arc<events::StreamSlots>,
    /// Wake-ups for live-progress streams, from Postgres NOTIFY.
    pub order_feed: crate::db::order_feed::OrderFeed,
    /// Checkouts opened per upload session (each is a call to Stripe).
    pub checkouts_per_session: Arc<rate_limit::KeyedLimit<uuid::Uuid>>,
    /// Full decodes at once: each can take hundreds of megabytes.
    pub decode_slots: Arc<Semaphore>,
    /// Outgoing HTTP (the dev checkout calling the shop's own webhook).
    pub http: reqwest::Client,
    /// Where this process's own HTTP listener answers.
    pub self_url: Arc<str>,
    /// Replicate's pushed completions, for the attempts waiting on them.
    pub predictions: crate::providers::restoration::replicate::PredictionNotices,
}

/// The customer listener's routes. JSON routes get `http.json_body_limit`
/// and `http.request_timeout`; uploads their own limits and
/// `http.upload_timeout`; every route but the health checks is shed past
/// `http.max_concurrent_requests`.
pub fn api_router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let http = &settings.http;
    let clients = rate_limit::ClientKey::new(&http.trusted_proxies);
    let limits = &http.rate_limits;
    let limit = |router, group, l| rate_limit::limit(router, group, l, &clients);
    let mut api = Router::new()
        .merge(limit(checkout::router(), "checkout", limits.checkout))
        .merge(pricing::router())
        .merge(limit(
            orders::router()
                .merge(review::router())
                .merge(downloads::links_router())
                .merge(events::router()),
            "orders",
            limits.orders,
        ))
        .merge(limit(downloads::token_router(), "tokens", limits.tokens))
        .merge(openapi::router())
        .merge(webhooks::router(&settings))
        .merge(pages::router());
    if state.payments.name() == "dev" {
        api = api.merge(dev_checkout::router());
    }
    let api = middleware::deadline(
        api.layer(DefaultBodyLimit::max(http.json_body_limit)),
        http.request_timeout,
    );
    let uploads = middleware::deadline(
        limit(upload::router(&settings), "upload", limits.upload),
        http.upload_timeout,
    );
    // Two budgets: uploads (long, slow bodies) never take the slots of
    // checkout, webhooks and the rest.
    let router = middleware::shed_load(api, http.max_concurrent_requests)
        .merge(middleware::shed_load(uploads, http.max_concurrent_uploads))
        .merge(ops::health_router())
        .fallback(|| async { error::ApiError::not_found("page") })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method",
            )
        });
    middleware::wrap(router, &settings).with_state(state)
}

/// The operator listener's routes: health, metrics and (with a token) admin.
pub fn ops_router(state: AppState) -> Router {
    let mut router = ops::router();
    if state.settings.admin.token.is_set() {
        router = router.merge(admin::router());
    }
    let router = middleware::deadline(
        router.layer(DefaultBodyLimit::max(state.settings.http.json_body_limit)),
        state.settings.http.request_timeout,
    )
    .fallback(|| async { error::ApiError::not_found("page") });
    middleware::traced(router).with_state(state)
}
