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
    /// A customer's redo or refund in the review window, accepted.
    ReviewAccepted,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::OrderConfirmation => "order_confirmation",
            EmailKind::RestorationComplete => "restoration_complete",
            EmailKind::RestorationFailed => "restoration_failed",
            EmailKind::AdminAlert => "admin_alert",
            EmailKind::ReviewAccepted => "review_accepted",
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
/// lease ran out (it died mid-send), or, with `include_own`, that `owner`
/// itself held (this instance restarted under the same name: nobody else
/// is sending them). Each claim counts an attempt. Oldest first, so an
/// order's confirmation goes out before its outcome.
pub async fn claim_due(
    db: impl sqlx::PgExecutor<'_>,
    owner: &str,
    lease_secs: f64,
    limit: i64,
    include_own: bool,
) -> Result<Vec<EmailRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS (
             UPDATE email_queue SET status = 'sending', locked_by = $1,
                    lease_until = now() + make_interval(secs => $2), attempts = attempts + 1, updated_at = now()
             WHERE id IN (
                 SELECT id FROM email_queue
                 WHERE (status = 'pending' AND next_attempt_at <= now())
                    OR (status = 'sending' AND (lease_until < now() OR ($4 AND locked_by = $1)))
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
    .bind(include_own)
    .fetch_all(db)
    .await
}

/// Whether a fenced write found the row still this sender's.
fn fenced(done: bool, id: Uuid, what: &str) -> bool {
    if !done {
        tracing::warn!(email_id = %id, what, "the email is no longer this instance's; nothing written");
    }
    done
}

/// `sending → sent`, keeping the provider's id; false (a no-op) when the
/// row is no longer `owner`'s.
pub async fn mark_sent(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    owner: &str,
    provider_message_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_queue SET status = 'sent', provider_message_id = $3, sent_at = now(), locked_by = NULL,
                lease_until = NULL, last_error = NULL, updated_at = now()
         WHERE id = $1 AND status = 'sending' AND locked_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(provider_message_id)
    .execute(db)
    .await?;
    Ok(fenced(done.rows_affected() == 1, id, "record the email sent"))
}

/// `sending → pending` again, due in `wait` by the database's clock. A try
/// the provider turned away unsent (`uncharged`) gives its attempt back.
/// False (a no-op) when the row is no longer `owner`'s.
pub async fn retry_after(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    owner: &str,
    wait: std::time::Duration,
    error: &str,
    uncharged: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_queue SET status = 'pending', next_attempt_at = now() + make_interval(secs => $3),
                last_error = $4, locked_by = NULL, lease_until = NULL, updated_at = now(),
                attempts = CASE WHEN $5 THEN greatest(attempts - 1, 0) ELSE attempts END
         WHERE id = $1 AND status = 'sending' AND locked_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(wait.as_secs_f64())
    .bind(error)
    .bind(uncharged)
    .execute(db)
    .await?;
    Ok(fenced(
        done.rows_affected() == 1,
        id,
        "schedule the email's retry",
    ))
}

/// `sending → failed` for good; false (a no-op) when the row is no longer
/// `owner`'s.
pub async fn mark_failed(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    owner: &str,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_queue SET status = 'failed', last_error = $3, locked_by = NULL, lease_until = NULL,
                updated_at = now()
         WHERE id = $1 AND status = 'sending' AND locked_by = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(error)
    .execute(db)
    .await?;
    Ok(fenced(done.rows_affected() == 1, id, "record the email failed"))
}
