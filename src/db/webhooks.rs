//! `webhook_events`: the guarantee that each third-party event is applied once.

use sqlx::PgConnection;

/// Records the event inside the caller's transaction. False when it was
/// recorded before: the caller must then do nothing. A concurrent delivery of
/// the same event waits here until the first transaction ends.
pub async fn record(
    conn: &mut PgConnection,
    id: &str,
    source: &str,
    event_type: &str,
    payload: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO webhook_events (id, source, event_type, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(source)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
