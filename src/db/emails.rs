//! `email_queue`: emails to send, one row per idempotency key.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// What kind of email a row is (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    OrderConfirmation,
    RestorationComplete,
    RestorationFailed,
    AdminAlert,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::OrderConfirmation => "order_confirmation",
            EmailKind::RestorationComplete => "restoration_complete",
            EmailKind::RestorationFailed => "restoration_failed",
            EmailKind::AdminAlert => "admin_alert",
        }
    }
}

/// Queues an email unless one with the same key exists; true when queued now.
pub async fn enqueue(
    conn: &mut PgConnection,
    idempotency_key: &str,
    order_id: Option<Uuid>,
    kind: EmailKind,
    to: &str,
    payload: &Value,
    max_attempts: i32,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO email_queue (id, idempotency_key, order_id, kind, to_email, payload, max_attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(crate::domain::new_id())
    .bind(idempotency_key)
    .bind(order_id)
    .bind(kind.as_str())
    .bind(to)
    .bind(payload)
    .bind(max_attempts)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
