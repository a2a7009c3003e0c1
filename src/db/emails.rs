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

/// Queues an alert for the operator (`mail.admin_to`), once per key; does
/// nothing when no admin address is configured.
pub async fn enqueue_admin_alert(
    conn: &mut PgConnection,
    mail: &crate::config::MailSettings,
    idempotency_key: &str,
    order_id: Option<Uuid>,
    payload: &Value,
) -> Result<bool, sqlx::Error> {
    let to = mail.admin_to.trim();
    if to.is_empty() {
        return Ok(false);
    }
    enqueue(
        conn,
        idempotency_key,
        order_id,
        EmailKind::AdminAlert,
        to,
        payload,
        mail.max_attempts as i32,
    )
    .await
}

/// A queued email as the mailer works on it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailRow {
    pub id: Uuid,
    pub order_id: Option<Uuid>,
    pub kind: String,
    pub to_email: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Claims up to `limit` due emails for `owner` until `lease_secs` from now:
/// `pending` ones whose time has come, and `sending` ones whose sender's
/// lease ran out (it died mid-send). Each claim counts an attempt. Oldest
/// first, so an order's confirmation goes out before its outcome.
pub async fn claim_due(
    db: impl sqlx::PgExecutor<'_>,
    owner: &str,
    lease_secs: f64,
    limit: i64,
) -> Result<Vec<EmailRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS (
             UPDATE email_queue SET status = 'sending', locked_by = $1,
                    lease_until = now() + make_interval(secs => $2), attempts = attempts + 1, updated_at = now()
             WHERE id IN (
                 SELECT id FROM email_queue
                 WHERE (status = 'pending' AND next_attempt_at <= now())
                    OR (status = 'sending' AND lease_until < now())
                 ORDER BY next_attempt_at
                 LIMIT $3
                 FOR NO KEY UPDATE SKIP LOCKED)
             RETURNING id, order_id, kind, to_email, payload, attempts, max_attempts, next_attempt_at, created_at)
         SELECT id, order_id, kind, to_email, payload, attempts, max_attempts FROM claimed
         ORDER BY next_attempt_at, created_at",
    )
    .bind(owner)
    .bind(lease_secs)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// `sending → sent`, keeping the provider's id.
pub async fn mark_sent(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    provider_message_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_queue SET status = 'sent', provider_message_id = $2, sent_at = now(), locked_by = NULL,
                lease_until = NULL, last_error = NULL, updated_at = now()
         WHERE id = $1 AND status = 'sending'",
    )
    .bind(id)
    .bind(provider_message_id)
    .execute(db)
    .await
    .map(drop)
}

/// `sending → pending` again, due at `at`.
pub async fn retry_at(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    at: time::OffsetDateTime,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_queue SET status = 'pending', next_attempt_at = $2, last_error = $3, locked_by = NULL,
                lease_until = NULL, updated_at = now()
         WHERE id = $1 AND status = 'sending'",
    )
    .bind(id)
    .bind(at)
    .bind(error)
    .execute(db)
    .await
    .map(drop)
}

/// `sending → failed` for good.
pub async fn mark_failed(db: impl sqlx::PgExecutor<'_>, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_queue SET status = 'failed', last_error = $2, locked_by = NULL, lease_until = NULL,
                updated_at = now()
         WHERE id = $1 AND status = 'sending'",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await
    .map(drop)
}
