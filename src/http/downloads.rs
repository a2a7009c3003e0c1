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
use serde::{Deserialize, Serialize};

use time::OffsetDateTime;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ApiResult},
    orders::{TokenQuery, authorize},
};
use crate::{
    db,
    domain::{IdKind, ImageStatus, format_id, token},
    zipstream::{Entry, write_zip},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders/{order_id}/download-links", post(create_link))
        .route("/download/{token}", get(download))
}

#[derive(Debug, Serialize)]
struct LinkCreated {
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    max_downloads: u32,
}

async fn create_link(
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
struct DownloadQuery {
    #[serde(default)]
    include: Option<String>,
}

async fn download(
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
    let order_id = db::downloads::spend(&state.db, &token::hash(&secret))
        .await?
        .ok_or_else(refused)?;
    let with_originals = query
        .include
        .as_deref()
        .is_some_and(|i| i.split(',').any(|p| p == "originals"));
    let entries = entries(&state, order_id, with_originals).await?;
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let storage = state.storage.clone();
    tokio::spawn(async move {
        if let Err(e) = write_zip(writer, storage, entries).await {
            tracing::warn!(%order_id, error = %e, "the ZIP stream stopped");
        }
    });
    metrics::counter!("restoreclick_downloads_total").increment(1);
    let mut response = Body::from_stream(ReaderStream::new(reader)).into_response();
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
                }),
        );
    }
    Ok(entries)
}
