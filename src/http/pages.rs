//! The customer's pages and their assets, embedded in the binary so the shop
//! works offline (no CDN, no build step). `http.web_dir` serves the same
//! files from a directory instead, so the front end can be worked on without
//! rebuilding; only the names in [`ASSETS`] are ever served.
//!
//! Pages carry the security headers (a strict Content-Security-Policy: only
//! the shop's own scripts, styles and images, no framing).

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{AppState, error::ApiError};

/// One embedded file: its name under `web/`, its type and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../web/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("success.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("upload.js", "text/javascript; charset=utf-8"),
    asset!("success.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Scripts, styles and images from the shop only; photos may also be shown
/// from `blob:` URLs (thumbnails of files not uploaded yet).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|s: State<AppState>| serve(s, "index.html")))
        .route("/success", get(|s: State<AppState>| serve(s, "success.html")))
        .route("/favicon.ico", get(|s: State<AppState>| serve(s, "favicon.svg")))
        .route(
            "/assets/{name}",
            get(|s: State<AppState>, Path(name): Path<String>| async move { serve(s, &name).await }),
        )
}

async fn serve(State(state): State<AppState>, name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::not_found("page").into_response();
    };
    let dir = state.settings.http.web_dir.trim();
    let body = if dir.is_empty() {
        asset.body.to_owned()
    } else {
        match tokio::fs::read_to_string(std::path::Path::new(dir).join(asset.name)).await {
            Ok(body) => body,
            Err(e) => {
                return ApiError::internal(format!("web_dir {dir}: {}: {e}", asset.name)).into_response();
            }
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.content_type.starts_with("text/html") {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
        );
    }
    response
}
