//! A stored photo as a response: streamed from storage a chunk at a time,
//! so that a slow reader holds a few kilobytes, not the whole photo.

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::error::{ApiError, ApiResult};
use crate::storage::{Storage, StorageError};

/// The object under `key` with its type, length and cache policy;
/// `missing` names what is not found.
pub async fn photo(
    storage: &Storage,
    key: &str,
    content_type: &str,
    cache_control: &'static str,
    missing: &'static str,
) -> ApiResult<Response> {
    let size = storage
        .size(key)
        .await?
        .ok_or_else(|| ApiError::not_found(missing))?;
    let stream = match storage.get_stream(key).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Err(ApiError::not_found(missing)),
        Err(e) => return Err(e.into()),
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    Ok(response)
}
