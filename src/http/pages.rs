//! The customer's pages, embedded in the binary so the shop works offline.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{Html, IntoResponse},
    routing::get,
};

use super::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const SUCCESS: &str = include_str!("../../web/success.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| page(INDEX)))
        .route("/success", get(|| page(SUCCESS)))
}

async fn page(html: &'static str) -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        Html(html),
    )
}
