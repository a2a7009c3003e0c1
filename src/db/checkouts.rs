//! `checkout_sessions`: every checkout the shop opened at its payment provider.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::CheckoutStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckoutRow {
    pub id: String,
    pub upload_session_id: Uuid,
    pub provider: String,
    pub status: String,
    pub url: String,
    pub quantity: i32,
    pub unit_amount: i64,
    pub amount_total: i64,
    pub currency: String,
    pub email: Option<String>,
    pub idempotency_key: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl CheckoutRow {
    pub fn status(&self) -> CheckoutStatus {
        self.status.parse().unwrap_or(CheckoutStatus::Expired)
    }
}

const COLUMNS: &str = "id, upload_session_id, provider, status, url, quantity, unit_amount, amount_total, currency, email, idempotency_key, created_at, expires_at";

/// Records a checkout; a second insert of the same id (an idempotent retry) is a no-op.
pub async fn insert(conn: &mut PgConnection, row: &CheckoutRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkout_sessions (id, upload_session_id, provider, status, url, quantity, unit_amount, amount_total, currency, email, idempotency_key, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&row.id)
    .bind(row.upload_session_id)
    .bind(&row.provider)
    .bind(&row.status)
    .bind(&row.url)
    .bind(row.quantity)
    .bind(row.unit_amount)
    .bind(row.amount_total)
    .bind(&row.currency)
    .bind(&row.email)
    .bind(&row.idempotency_key)
    .bind(row.expires_at)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<CheckoutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkout_sessions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn count_for_session(db: impl PgExecutor<'_>, upload_session_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM checkout_sessions WHERE upload_session_id = $1")
        .bind(upload_session_id)
        .fetch_one(db)
        .await
}

/// The session's checkouts that can still be paid.
pub async fn open_for_session(
    db: impl PgExecutor<'_>,
    upload_session_id: Uuid,
) -> Result<Vec<CheckoutRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkout_sessions WHERE upload_session_id = $1 AND status = 'open' ORDER BY created_at"
    )))
    .bind(upload_session_id)
    .fetch_all(db)
    .await
}

/// Moves a checkout from `from` to `to`; false when it was not in `from`.
pub async fn set_status(
    conn: &mut PgConnection,
    id: &str,
    from: CheckoutStatus,
    to: CheckoutStatus,
) -> Result<bool, sqlx::Error> {
    from.transition(to)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE checkout_sessions SET status = $3, updated_at = now() WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
