//! `GET /api/openapi.json`: the HTTP contract as OpenAPI, generated from the
//! handlers' own annotations, so it names every route the shop serves.

use axum::{Json, Router, routing::get};
use utoipa::OpenApi;

use super::{AppState, admin, checkout, downloads, events, ops, orders, pricing, review, upload, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RestoreClick",
        description = "A photo-restoration shop: upload, pay, restore, download."
    ),
    paths(
        upload::upload,
        upload::show,
        upload::file,
        upload::remove_file,
        pricing::show,
        checkout::create,
        checkout::show,
        orders::show,
        orders::photo,
        orders::purge,
        review::redo,
        review::refund,
        events::events,
        downloads::create_link,
        downloads::download,
        webhooks::stripe,
        webhooks::replicate,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        admin::list,
        admin::show,
        admin::refund,
        admin::retry,
    )
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
