//! `POST /api/orders/{id}/download-links` and `GET /download/{token}`.
//!
//! A link is a 256-bit token (only its hash is stored) with an expiry and a
//! use counter spent atomically. The ZIP is streamed as it is written, entry
//! by entry from storage, so memory stays flat however large the order;
//! photos are stored without recompression (JPEG and PNG are compressed
//! already), under names the shop made.

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use time::OffsetDateTime;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ApiResult},
    orders::{TokenQuery, authorize, refunded},
};
use crate::{
    db,
    domain::{IdKind, ImageStatus, format_id, token},
    zipstream::{self, Entry, write_zip},
};

/// New download links: an order's route, limited with the orders.
pub fn links_router() -> Router<AppState> {
    Router::new().route("/api/orders/{order_id}/download-links", post(create_link))
}

/// The links themselves, limited on their own (each guess costs a request).
pub fn token_router() -> Router<AppState> {
    Router::new().route("/download/{token}", get(download))
}

#[derive(Debug, Serialize)]
pub(crate) struct LinkCreated {
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    max_downloads: u32,
}

#[utoipa::path(post, path = "/api/orders/{order_id}/download-links", tag = "downloads", params(("order_id" = String, Path)), responses((status = 201, description = "url, expires_at, max_downloads"), (status = 404, description = "unknown order, or not yours"), (status = 409, description = "no photo restored yet"), (status = 410, description = "the photos were deleted (photos_purged), or the order was refunded (order_refunded)")))]
pub(crate) async fn create_link(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<LinkCreated>)> {
    let order = authorize(&state, &order_id, &headers, &query).await?;
    if order.purged_at.is_some() {
        return Err(ApiError::gone(
            "photos_purged",
            "the photos of this order have been deleted",
        ));
    }
    if order.is_fully_refunded() {
        return Err(refunded());
    }
    let images = db::orders::images(&state.db, order.id).await?;
    if !images.iter().any(|i| i.status() == ImageStatus::Completed) {
        return Err(ApiError::conflict(
            "nothing_to_download",
            "no photo of this order is restored yet",
        ));
    }
    let downloads = &state.settings.downloads;
    let secret = token::random_token();
    let expires_at = OffsetDateTime::now_utc() + downloads.link_ttl;
    db::downloads::insert(
        &state.db,
        order.id,
        &token::hash(&secret),
        expires_at,
        downloads.max_uses as i32,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(LinkCreated {
            url: format!("/download/{secret}"),
            expires_at,
            max_downloads: downloads.max_uses,
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DownloadQuery {
    #[serde(default)]
    include: Option<String>,
}

#[utoipa::path(get, path = "/download/{token}", tag = "downloads", params(("token" = String, Path), ("include" = Option<String>, Query, description = "`originals` to add the originals")), responses((status = 200, description = "application/zip, streamed"), (status = 403, description = "unknown, expired or used-up link"), (status = 410, description = "the order was refunded (order_refunded)")))]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "download_link_invalid",
            "this download link is unknown, expired or used up; ask for a new one on your order page",
        )
    };
    let hash = token::hash(&secret);
    let Some(order_id) = db::downloads::spend(&state.db, &hash).await? else {
        if db::downloads::opens_refunded_order(&state.db, &hash).await? {
            return Err(refunded());
        }
        return Err(refused());
    };
    let with_originals = query
        .include
        .as_deref()
        .is_some_and(|i| i.split(',').any(|p| p == "originals"));
    let reader = archive(&state, order_id, with_originals).await?;
    metrics::counter!("restoreclick_downloads_total").increment(1);
    let mut response = Body::from_stream(reader).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    let disposition = format!(
        "attachment; filename=\"restoreclick-{}.zip\"",
        format_id(IdKind::Order, order_id)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}

/// The order's archive as a byte stream: a finished order's photos no
/// longer change, so its plain archive is built once into storage (in the
/// background, the first time) and served from there while fresh; anything
/// else is written on the fly.
async fn archive(
    state: &AppState,
    order_id: Uuid,
    with_originals: bool,
) -> ApiResult<futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>> {
    let order = db::orders::get(&state.db, order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let cacheable = !with_originals && order.status().is_terminal();
    let fresh_since = OffsetDateTime::now_utc() - state.settings.downloads.zip_ttl;
    if cacheable && let Some(key) = zipstream::cached(&state.storage, order_id, fresh_since).await? {
        let stream = state.storage.get_stream(&key).await?;
        return Ok(stream.map_err(std::io::Error::other).boxed());
    }
    let entries = entries(state, order_id, with_originals).await?;
    if cacheable {
        let (storage, entries) = (state.storage.clone(), entries.clone());
        tokio::spawn(async move {
            match zipstream::build_cache(&storage, order_id, entries).await {
                Ok(key) => tracing::info!(%order_id, key, "download archive cached"),
                Err(e) => tracing::warn!(%order_id, error = %e, "cannot cache the download archive"),
            }
        });
    }
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let storage = state.storage.clone();
    tokio::spawn(async move {
        if let Err(e) = write_zip(writer, storage, entries).await {
            tracing::warn!(%order_id, error = %e, "the ZIP stream stopped");
        }
    });
    Ok(ReaderStream::new(reader).boxed())
}

async fn entries(state: &AppState, order_id: Uuid, with_originals: bool) -> ApiResult<Vec<Entry>> {
    let images = db::orders::images(&state.db, order_id).await?;
    let base = |key: &str| key.rsplit('/').next().unwrap_or(key).to_owned();
    let mut entries: Vec<Entry> = images
        .iter()
        .filter(|i| i.status() == ImageStatus::Completed)
        .filter_map(|i| {
            i.restored_key.as_ref().map(|k| Entry {
                name: base(k),
                key: k.clone(),
                modified: i.completed_at.unwrap_or(i.created_at),
            })
        })
        .collect();
    if with_originals {
        entries.extend(
            images
                .iter()
                .filter(|i| i.status() != ImageStatus::Pending)
                .map(|i| Entry {
                    name: format!("originals/{}", base(&i.original_key)),
                    key: i.original_key.clone(),
                    modified: i.created_at,
                }),
        );
    }
    Ok(entries)
}
