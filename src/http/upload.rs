//! `POST /api/upload`, `GET /api/upload/{id}`, `DELETE /api/upload/{id}/files/{file_id}`.
//!
//! A batch is all or nothing: every file is validated before any is stored,
//! and one bad file refuses the request with a reason per file. Before the
//! photos of a session with an open checkout change, that checkout is
//! closed at the provider (a checkout sells exactly the photos it froze).
//! Accepted files are written to temp storage first and their rows
//! committed second; a crash in between leaves only files without rows,
//! which the orphan sweep removes (never a row without its file).

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Multipart, Path, State, multipart::MultipartRejection},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppState,
    error::{ApiError, ApiResult},
    spool::{self, Spooled},
};
use crate::{
    config::Settings,
    db::{self, uploads::FileRow, uploads::UploadSessionRow},
    domain::{self, CheckoutStatus, IdKind, UploadSessionStatus, filename},
    shop::{self, checkout::VoidError},
    storage::keys,
    validation::{self, Rejection, ValidPhoto},
};

pub fn router(settings: &Settings) -> Router<AppState> {
    // Room for a full batch plus the multipart framing; each file is also
    // capped while it streams in.
    let body_limit = settings
        .uploads
        .max_file_bytes
        .saturating_mul(settings.uploads.max_files as u64)
        .saturating_add(1 << 20)
        .min(usize::MAX as u64) as usize;
    Router::new()
        .route(
            "/api/upload",
            post(upload).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/api/upload/{session_id}", get(show))
        .route(
            "/api/upload/{session_id}/files/{file_id}",
            get(file).delete(remove_file),
        )
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub files: Vec<FileView>,
    pub price: PriceView,
    /// Present once the session is paid.
    pub order_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FileView {
    pub id: String,
    pub filename: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i32,
    pub height: i32,
}

#[derive(Debug, Serialize)]
pub struct PriceView {
    pub unit_amount: i64,
    pub currency: String,
    pub quantity: usize,
    pub amount_total: i64,
}

/// One file as it arrived, spooled to disk.
struct Incoming {
    filename: String,
    data: Result<Spooled, Rejection>,
}

struct UploadForm {
    session_id: Option<String>,
    files: Vec<Incoming>,
    /// Files past `uploads.max_files`, counted but not kept.
    extra_files: Vec<String>,
}

#[utoipa::path(post, path = "/api/upload", tag = "uploads", request_body(content_type = "multipart/form-data", description = "parts named `files` (photos) and an optional `session_id`"), responses((status = 201, description = "the upload session with its files and price"), (status = 400, description = "a file name that climbs directories"), (status = 404, description = "unknown session"), (status = 409, description = "the session is paid (session_paid), its payment is on its way (payment_pending), or its open checkout cannot be closed (checkout_open)"), (status = 410, description = "the session expired"), (status = 413, description = "a file or photo too large"), (status = 415, description = "not an accepted photo format"), (status = 422, description = "invalid photos (details.files says which)")))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let multipart = multipart.map_err(|e| {
        ApiError::new(
            e.status(),
            "invalid_multipart",
            format!("send multipart/form-data: {}", e.body_text()),
        )
    })?;
    let form = read_form(multipart, &state.settings).await?;
    let now = OffsetDateTime::now_utc();
    let existing = match &form.session_id {
        Some(raw) => Some(open_session(&state, raw, now).await?),
        None => None,
    };
    let already = match &existing {
        Some(session) => db::uploads::list_files(&state.db, session.id).await?.len(),
        None => 0,
    };
    if form.files.is_empty() {
        return Err(ApiError::unprocessable(
            "no_files",
            "send one or more photos as multipart parts named \"files\"",
        ));
    }
    let max_files = state.settings.uploads.max_files;
    if already + form.files.len() + form.extra_files.len() > max_files {
        let names: Vec<_> = form
            .files
            .iter()
            .map(|f| f.filename.clone())
            .chain(form.extra_files.iter().cloned())
            .collect();
        let rejection = Rejection::TooManyFiles { limit: max_files };
        let files: Vec<_> = names
            .iter()
            .skip(max_files.saturating_sub(already))
            .map(|name| json!({"filename": name, "code": rejection.code(), "message": rejection.to_string()}))
            .collect();
        return Err(ApiError::unprocessable(rejection.code(), rejection.to_string())
            .with_details(json!({"files": files, "max_files": max_files, "already_in_session": already})));
    }

    let accepted = validate_all(&state, form.files).await?;
    let voided = match &existing {
        Some(session) => void_open_checkouts(&state, session.id).await?,
        None => Vec::new(),
    };
    let session_id = existing.as_ref().map_or_else(domain::new_id, |s| s.id);
    let rows = store_files(&state, session_id, accepted).await?;
    match commit_files(&state, session_id, existing.is_none(), &rows, now, &voided).await {
        Ok(()) => {}
        Err(e) => {
            for row in &rows {
                if let Err(de) = state.storage.delete(&row.storage_key).await {
                    tracing::warn!(key = %row.storage_key, error = %de, "cannot remove a file of a failed upload; the sweep will");
                }
            }
            return Err(e);
        }
    }
    tracing::info!(files = rows.len(), "photos uploaded");
    let view = session_view(&state, session_id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Reads the form, each file part spooled to disk as it arrives.
async fn read_form(mut multipart: Multipart, settings: &Settings) -> ApiResult<UploadForm> {
    let uploads = &settings.uploads;
    let dir = spool::dir(uploads);
    let mut pace = spool::pace(uploads);
    let mut form = UploadForm {
        session_id: None,
        files: Vec::new(),
        extra_files: Vec::new(),
    };
    while let Some(mut field) = spool::next_field(&mut multipart, &pace).await? {
        match field.name() {
            Some("files" | "files[]" | "file") => {
                let filename = field.file_name().unwrap_or("photo").to_owned();
                if form.files.len() >= uploads.max_files {
                    spool::drain(&mut field, &mut pace).await?;
                    form.extra_files.push(filename);
                    continue;
                }
                let data = spool::spool(&mut field, &mut pace, uploads.max_file_bytes, &dir).await?;
                form.files.push(Incoming { filename, data });
            }
            Some("session_id") => {
                let text = field.text().await.map_err(spool::multipart_error)?;
                let text = text.trim();
                if !text.is_empty() {
                    form.session_id = Some(text.to_owned());
                }
            }
            _ => spool::drain(&mut field, &mut pace).await?,
        }
    }
    Ok(form)
}

/// An upload session that still takes changes, or the error that says why not.
async fn open_session(state: &AppState, raw: &str, now: OffsetDateTime) -> ApiResult<UploadSessionRow> {
    let id =
        domain::parse_id(IdKind::UploadSession, raw).ok_or_else(|| ApiError::not_found("upload session"))?;
    let session = db::uploads::get_session(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    check_accepts_changes(state, &session, now).await?;
    Ok(session)
}

async fn check_accepts_changes(
    state: &AppState,
    session: &UploadSessionRow,
    now: OffsetDateTime,
) -> ApiResult<()> {
    if session.status() == UploadSessionStatus::AwaitingPayment {
        return Err(ApiError::conflict(
            "payment_pending",
            "a payment for these photos is on its way; they can no longer change",
        ));
    }
    if session.status() == UploadSessionStatus::Paid {
        let order = db::orders::by_upload_session(&state.db, session.id).await?;
        return Err(ApiError::conflict(
            "session_paid",
            "this upload session is paid; its photos can no longer change",
        )
        .with_details(json!({"order_id": order.map(|o| domain::format_id(IdKind::Order, o.id))})));
    }
    if session.is_expired(now) {
        return Err(ApiError::gone(
            "session_expired",
            "this upload session has expired; please upload again",
        ));
    }
    Ok(())
}

struct Accepted {
    name: filename::CleanName,
    photo: ValidPhoto,
    file: std::fs::File,
}

/// Validates every file on the blocking pool; all must pass.
async fn validate_all(state: &AppState, files: Vec<Incoming>) -> ApiResult<Vec<Accepted>> {
    let checks = files.into_iter().map(|file| {
        let limits = state.limits.clone();
        let slots = state.decode_slots.clone();
        async move {
            let name = filename::clean(&file.filename).map_err(|e| Rejection::BadName(e.to_string()));
            let result = match (name, file.data) {
                (Err(rejection), _) | (_, Err(rejection)) => Err(rejection),
                (Ok(name), Ok(spooled)) => {
                    let _slot = slots.acquire_owned().await;
                    let Spooled {
                        mut file,
                        bytes,
                        sha256,
                    } = spooled;
                    let checked = tokio::task::spawn_blocking(move || {
                        let photo = validation::validate_file(&mut file, bytes, sha256, &limits)?;
                        // Back to the start, for storing.
                        std::io::Seek::rewind(&mut file).map_err(|e| {
                            Rejection::Corrupt(format!("the spooled file cannot be read: {e}"))
                        })?;
                        Ok((photo, file))
                    })
                    .await;
                    match checked {
                        Ok(Ok((photo, file))) => Ok(Accepted { name, photo, file }),
                        Ok(Err(rejection)) => Err(rejection),
                        Err(e) => Err(Rejection::Corrupt(format!("the decoder failed: {e}"))),
                    }
                }
            };
            (file.filename, result)
        }
    });
    let results = futures::future::join_all(checks).await;
    let mut accepted = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for (index, (name, result)) in results.into_iter().enumerate() {
        match result {
            Ok(a) => accepted.push(a),
            Err(r) => refused.push((index, name, r)),
        }
    }
    if refused.is_empty() {
        return Ok(accepted);
    }
    let first = refused[0].2.status();
    let status = if refused.iter().all(|(_, _, r)| r.status() == first) {
        first
    } else {
        422
    };
    let (code, message) = if refused.len() == 1 {
        (refused[0].2.code(), format!("{}: {}", refused[0].1, refused[0].2))
    } else {
        (
            "invalid_files",
            format!(
                "{} of the files cannot be accepted; nothing was stored",
                refused.len()
            ),
        )
    };
    let details: Vec<_> = refused
        .iter()
        .map(|(index, name, r)| json!({"index": index, "filename": name, "code": r.code(), "message": r.to_string()}))
        .collect();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    Err(ApiError::new(status, code, message).with_details(json!({"files": details})))
}

/// Streams the spooled files to temp storage; on failure removes what it
/// wrote.
async fn store_files(state: &AppState, session_id: Uuid, accepted: Vec<Accepted>) -> ApiResult<Vec<FileRow>> {
    let mut rows = Vec::with_capacity(accepted.len());
    for a in accepted {
        let file_id = domain::new_id();
        let key = keys::temp(session_id, file_id, a.photo.kind.ext());
        let stored = state
            .storage
            .put_reader(&key, tokio::fs::File::from_std(a.file))
            .await;
        if let Err(e) = stored {
            for row in &rows {
                let row: &FileRow = row;
                let _ = state.storage.delete(&row.storage_key).await;
            }
            tracing::error!(error = %e, "cannot store an uploaded photo");
            return Err(ApiError::unavailable(
                "photo storage is unavailable; please try again",
            ));
        }
        rows.push(FileRow {
            id: file_id,
            session_id,
            filename: a.name.display.clone(),
            stem: a.name.stem.clone(),
            ext: a.photo.kind.ext().to_owned(),
            content_type: a.photo.kind.content_type().to_owned(),
            bytes: a.photo.bytes as i64,
            width: a.photo.width as i32,
            height: a.photo.height as i32,
            sha256: a.photo.sha256.clone(),
            storage_key: key,
            created_at: OffsetDateTime::now_utc(),
        });
    }
    fail::fail_point!("upload::after_store");
    Ok(rows)
}

/// Commits the rows, recording the checkouts voided for the change.
async fn commit_files(
    state: &AppState,
    session_id: Uuid,
    is_new: bool,
    rows: &[FileRow],
    now: OffsetDateTime,
    voided: &[String],
) -> ApiResult<()> {
    let mut tx = state.db.begin().await?;
    if is_new {
        db::uploads::create_session(&mut tx, session_id, now + state.settings.uploads.session_ttl).await?;
    }
    let session = db::uploads::lock_session(&mut tx, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    check_accepts_changes(state, &session, now).await?;
    let count = db::uploads::list_files(&mut *tx, session_id).await?.len();
    if count + rows.len() > state.settings.uploads.max_files {
        return Err(ApiError::unprocessable(
            "too_many_files",
            format!(
                "at most {} photos fit in one order",
                state.settings.uploads.max_files
            ),
        ));
    }
    for row in rows {
        db::uploads::insert_file(&mut tx, row).await?;
    }
    reopen(&mut tx, &session, voided).await?;
    tx.commit().await?;
    Ok(())
}

/// Closes the session's open checkouts at the provider before its photos
/// change, so that no checkout for the old set can still be paid. A
/// checkout the customer paid meanwhile is applied, and the change refused.
async fn void_open_checkouts(state: &AppState, session_id: Uuid) -> ApiResult<Vec<String>> {
    match shop::checkout::void_open(state.checkout_deps(), session_id).await {
        Ok(voided) => Ok(voided),
        Err(VoidError::Paid(applied)) => {
            state.actors.follow_up(&applied);
            Err(ApiError::conflict(
                "session_paid",
                "this upload session was paid meanwhile; its photos can no longer change",
            ))
        }
        Err(e @ VoidError::StillOpen(_)) => {
            tracing::warn!(error = %e, "cannot void an open checkout; the change is refused");
            Err(checkout_open())
        }
        Err(VoidError::Database(e)) => Err(e.into()),
        Err(VoidError::Fulfilment(e)) => Err(ApiError::internal(e)),
    }
}

fn checkout_open() -> ApiError {
    ApiError::conflict(
        "checkout_open",
        "a checkout for these photos is open and cannot be closed right now; finish or cancel it, or try again shortly",
    )
}

/// The photos changed: the checkouts voided for the change are recorded
/// expired, and the session goes back to `open`. A checkout opened since
/// the voiding (not closed at the provider) refuses the change.
async fn reopen(tx: &mut sqlx::PgConnection, session: &UploadSessionRow, voided: &[String]) -> ApiResult<()> {
    let status = session.status();
    let open = db::checkouts::open_for_session(&mut *tx, session.id).await?;
    if open.iter().any(|c| !voided.contains(&c.id)) {
        return Err(checkout_open());
    }
    for checkout in &open {
        db::checkouts::set_status(tx, &checkout.id, CheckoutStatus::Open, CheckoutStatus::Expired).await?;
    }
    if matches!(
        status,
        UploadSessionStatus::CheckoutStarted | UploadSessionStatus::PaymentFailed
    ) {
        db::uploads::set_status(tx, session.id, status, UploadSessionStatus::Open).await?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/upload/{session_id}", tag = "uploads", params(("session_id" = String, Path, description = "ups_…")), responses((status = 200, description = "the upload session"), (status = 404, description = "unknown session")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let id = domain::parse_id(IdKind::UploadSession, &session_id)
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    Ok(Json(session_view(&state, id).await?))
}

#[utoipa::path(delete, path = "/api/upload/{session_id}/files/{file_id}", tag = "uploads", params(("session_id" = String, Path), ("file_id" = String, Path)), responses((status = 200, description = "the session without the file"), (status = 404, description = "unknown session or file"), (status = 409, description = "the session is paid (session_paid), its payment is on its way (payment_pending), or its open checkout cannot be closed (checkout_open)")))]
pub(crate) async fn remove_file(
    State(state): State<AppState>,
    Path((session_id, file_id)): Path<(String, String)>,
) -> ApiResult<Json<SessionView>> {
    let session_id = domain::parse_id(IdKind::UploadSession, &session_id)
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    let file_id = domain::parse_id(IdKind::File, &file_id).ok_or_else(|| ApiError::not_found("file"))?;
    let session = db::uploads::get_session(&state.db, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    check_accepts_changes(&state, &session, OffsetDateTime::now_utc()).await?;
    let voided = void_open_checkouts(&state, session_id).await?;
    let mut tx = state.db.begin().await?;
    let session = db::uploads::lock_session(&mut tx, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    check_accepts_changes(&state, &session, OffsetDateTime::now_utc()).await?;
    let row = db::uploads::delete_file(&mut tx, session_id, file_id)
        .await?
        .ok_or_else(|| ApiError::not_found("file"))?;
    reopen(&mut tx, &session, &voided).await?;
    tx.commit().await?;
    // Row first, file second: a crash in between leaves an orphan file for the sweep.
    if let Err(e) = state.storage.delete(&row.storage_key).await {
        tracing::warn!(key = %row.storage_key, error = %e, "cannot delete a removed photo; the sweep will");
    }
    Ok(Json(session_view(&state, session_id).await?))
}

/// `GET /api/upload/{session_id}/files/{file_id}`: the photo as uploaded,
/// for the upload page's thumbnails. The session id is the secret, as for
/// the rest of the session; once paid, the photos belong to the order.
#[utoipa::path(get, path = "/api/upload/{session_id}/files/{file_id}", tag = "uploads", params(("session_id" = String, Path), ("file_id" = String, Path)), responses((status = 200, description = "the photo's bytes"), (status = 404, description = "unknown session or file, or the session is paid")))]
pub(crate) async fn file(
    State(state): State<AppState>,
    Path((session_id, file_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found("file");
    let session_id = domain::parse_id(IdKind::UploadSession, &session_id).ok_or_else(not_found)?;
    let file_id = domain::parse_id(IdKind::File, &file_id).ok_or_else(not_found)?;
    let row = db::uploads::list_files(&state.db, session_id)
        .await?
        .into_iter()
        .find(|f| f.id == file_id)
        .ok_or_else(not_found)?;
    super::stored::photo(
        &state.storage,
        &row.storage_key,
        &row.content_type,
        "private, max-age=3600",
        "file",
    )
    .await
}

/// The session as the API shows it.
pub async fn session_view(state: &AppState, session_id: Uuid) -> ApiResult<SessionView> {
    let session = db::uploads::get_session(&state.db, session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload session"))?;
    let files = db::uploads::list_files(&state.db, session_id).await?;
    let order_id = if session.status() == UploadSessionStatus::Paid {
        db::orders::by_upload_session(&state.db, session_id)
            .await?
            .map(|o| domain::format_id(IdKind::Order, o.id))
    } else {
        None
    };
    let status = if session.is_expired(OffsetDateTime::now_utc()) {
        UploadSessionStatus::Expired
    } else {
        session.status()
    };
    let pricing = &state.settings.pricing;
    Ok(SessionView {
        session_id: domain::format_id(IdKind::UploadSession, session_id),
        status: status.as_str(),
        expires_at: session.expires_at,
        price: PriceView {
            unit_amount: pricing.unit_amount,
            currency: pricing.currency.clone(),
            quantity: files.len(),
            amount_total: pricing.unit_amount * files.len() as i64,
        },
        files: files
            .into_iter()
            .map(|f| FileView {
                id: domain::format_id(IdKind::File, f.id),
                filename: f.filename,
                content_type: f.content_type,
                bytes: f.bytes,
                width: f.width,
                height: f.height,
            })
            .collect(),
        order_id,
    })
}
