//! `alerts`: the four alerts' states, shared by every instance. Firing and
//! resolving carry the expected old status in their `WHERE`, so of several
//! instances judging the same measurement exactly one moves the row.

use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;

use crate::domain::alerts::{AlertName, AlertState, AlertStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub name: String,
    pub status: String,
    pub episode: i32,
    pub breach_since: Option<OffsetDateTime>,
    pub value: Option<f64>,
    pub fired_at: Option<OffsetDateTime>,
    pub resolved_at: Option<OffsetDateTime>,
}

impl AlertRow {
    pub fn name(&self) -> Option<AlertName> {
        self.name.parse().ok()
    }

    pub fn state(&self) -> AlertState {
        AlertState {
            status: self.status.parse().unwrap_or(AlertStatus::Ok),
            breach_since: self.breach_since,
        }
    }
}

pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, status, episode, breach_since, value, fired_at, resolved_at FROM alerts ORDER BY name",
    )
    .fetch_all(db)
    .await
}

/// Records when the current breach began (kept if another instance already
/// did), or that the condition is clear (`None`).
pub async fn set_breach(
    db: impl PgExecutor<'_>,
    name: AlertName,
    since: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET breach_since = CASE WHEN $2::timestamptz IS NULL THEN NULL
                                               ELSE coalesce(breach_since, $2) END,
                           updated_at = now()
         WHERE name = $1",
    )
    .bind(name.as_str())
    .bind(since)
    .execute(db)
    .await
    .map(drop)
}

/// `ok | resolved → firing`: a new episode; returns its number, or `None`
/// when another instance fired it first.
pub async fn fire(conn: &mut PgConnection, name: AlertName, value: f64) -> Result<Option<i32>, sqlx::Error> {
    for from in [AlertStatus::Ok, AlertStatus::Resolved] {
        from.transition(AlertStatus::Firing)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    }
    sqlx::query_scalar(
        "UPDATE alerts SET status = 'firing', episode = episode + 1, value = $2, fired_at = now(),
                           resolved_at = NULL, updated_at = now()
         WHERE name = $1 AND status IN ('ok', 'resolved') RETURNING episode",
    )
    .bind(name.as_str())
    .bind(value)
    .fetch_optional(conn)
    .await
}

/// `firing → resolved`; returns the episode that ended, or `None` when
/// another instance resolved it first.
pub async fn resolve(
    conn: &mut PgConnection,
    name: AlertName,
    value: f64,
) -> Result<Option<i32>, sqlx::Error> {
    AlertStatus::Firing
        .transition(AlertStatus::Resolved)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    sqlx::query_scalar(
        "UPDATE alerts SET status = 'resolved', value = $2, resolved_at = now(), updated_at = now()
         WHERE name = $1 AND status = 'firing' RETURNING episode",
    )
    .bind(name.as_str())
    .bind(value)
    .fetch_optional(conn)
    .await
}
