//! `upload_sessions` and `file_uploads`.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::UploadSessionStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadSessionRow {
    pub id: Uuid,
    pub status: String,
    pub email: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl UploadSessionRow {
    pub fn status(&self) -> UploadSessionStatus {
        self.status.parse().unwrap_or(UploadSessionStatus::Expired)
    }

    /// Expired by status, or past its time while still unpaid (a session
    /// waiting for a delayed payment waits as long as the payment may take).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        let status = self.status();
        status == UploadSessionStatus::Expired
            || (!matches!(
                status,
                UploadSessionStatus::Paid | UploadSessionStatus::AwaitingPayment
            ) && self.expires_at <= now)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub filename: String,
    pub stem: String,
    pub ext: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i32,
    pub height: i32,
    pub sha256: String,
    pub storage_key: String,
    pub created_at: OffsetDateTime,
}

pub async fn create_session(
    conn: &mut PgConnection,
    id: Uuid,
    expires_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO upload_sessions (id, expires_at) VALUES ($1, $2)")
        .bind(id)
        .bind(expires_at)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn get_session(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UploadSessionRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, status, email, created_at, expires_at FROM upload_sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The session, locked until the transaction ends: serialises changes to one session.
pub async fn lock_session(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<UploadSessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, email, created_at, expires_at FROM upload_sessions WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Moves the session from `from` to `to`; false when it was not in `from`.
pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    from: UploadSessionStatus,
    to: UploadSessionStatus,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE upload_sessions SET status = $3, updated_at = now() WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps the session (and its files) at least until `until`.
pub async fn extend_expiry(
    conn: &mut PgConnection,
    id: Uuid,
    until: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE upload_sessions SET expires_at = greatest(expires_at, $2), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(until)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn set_email(conn: &mut PgConnection, id: Uuid, email: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE upload_sessions SET email = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(email)
        .execute(conn)
        .await
        .map(drop)
}

const FILE_COLUMNS: &str = "id, session_id, filename, stem, ext, content_type, bytes, width, height, sha256, storage_key, created_at";

/// The session's files in upload order.
pub async fn list_files(db: impl PgExecutor<'_>, session_id: Uuid) -> Result<Vec<FileRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FILE_COLUMNS} FROM file_uploads WHERE session_id = $1 ORDER BY created_at, id"
    )))
    .bind(session_id)
    .fetch_all(db)
    .await
}

pub async fn insert_file(conn: &mut PgConnection, file: &FileRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO file_uploads (id, session_id, filename, stem, ext, content_type, bytes, width, height, sha256, storage_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(file.id)
    .bind(file.session_id)
    .bind(&file.filename)
    .bind(&file.stem)
    .bind(&file.ext)
    .bind(&file.content_type)
    .bind(file.bytes)
    .bind(file.width)
    .bind(file.height)
    .bind(&file.sha256)
    .bind(&file.storage_key)
    .execute(conn)
    .await
    .map(drop)
}

/// The session is paid for the photos `sold`: it becomes `paid`, and the
/// rows of any other photos (added after the checkout that was paid) leave
/// it, their files to the orphan sweep. Returns how many left.
pub async fn mark_paid(conn: &mut PgConnection, session_id: Uuid, sold: &[Uuid]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH unsold AS (DELETE FROM file_uploads WHERE session_id = $1 AND NOT (id = ANY($2)) RETURNING 1),
              paid AS (UPDATE upload_sessions SET status = 'paid', updated_at = now() WHERE id = $1 RETURNING 1)
         SELECT count(*) FROM unsold",
    )
    .bind(session_id)
    .bind(sold)
    .fetch_one(conn)
    .await
}

/// Removes one file row; returns it (for its storage key) when it existed.
pub async fn delete_file(
    conn: &mut PgConnection,
    session_id: Uuid,
    file_id: Uuid,
) -> Result<Option<FileRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM file_uploads WHERE session_id = $1 AND id = $2 RETURNING {FILE_COLUMNS}"
    )))
    .bind(session_id)
    .bind(file_id)
    .fetch_optional(conn)
    .await
}

/// Which of `keys` have a `file_uploads` row (for the orphan sweep).
pub async fn existing_keys(db: impl PgExecutor<'_>, keys: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT storage_key FROM file_uploads WHERE storage_key = ANY($1)")
        .bind(keys)
        .fetch_all(db)
        .await
}
