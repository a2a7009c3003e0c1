//! Order leases: which instance works on which live order.
//!
//! An instance owns an order while `lease_until` is in the future and
//! renews it by heartbeat; an expired lease is claimed with
//! `FOR NO KEY UPDATE SKIP LOCKED`, so two instances never take the same order and
//! a dead instance's orders move to a live one within one lease period.

use std::time::Duration;

use sqlx::PgExecutor;
use uuid::Uuid;

fn interval(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// Claims up to `limit` live orders that nobody holds, or whose holder's
/// lease ran out; with `include_own`, also those this instance's name still
/// holds (its first sweep after a restart).
pub async fn claim_free(
    db: impl PgExecutor<'_>,
    owner: &str,
    ttl: Duration,
    limit: i64,
    include_own: bool,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE orders SET owner_id = $1, lease_until = now() + make_interval(secs => $2)
         WHERE id IN (
             SELECT id FROM orders
             WHERE status = 'processing'
               AND (owner_id IS NULL OR lease_until IS NULL OR lease_until < now() OR ($4 AND owner_id = $1))
             ORDER BY created_at
             LIMIT $3
             FOR NO KEY UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(owner)
    .bind(interval(ttl))
    .bind(limit)
    .bind(include_own)
    .fetch_all(db)
    .await
}

/// Claims one order if it is free; false when another instance holds it.
pub async fn claim(
    db: impl PgExecutor<'_>,
    owner: &str,
    ttl: Duration,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE orders SET owner_id = $1, lease_until = now() + make_interval(secs => $2)
         WHERE id = $3 AND status = 'processing'
           AND (owner_id IS NULL OR lease_until IS NULL OR lease_until < now() OR owner_id = $1)",
    )
    .bind(owner)
    .bind(interval(ttl))
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Renews this instance's leases on `ids`; returns the ones still held. An
/// order that stopped being live (refunded elsewhere) is not renewed, so
/// its actor here stops.
pub async fn renew(
    db: impl PgExecutor<'_>,
    owner: &str,
    ttl: Duration,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE orders SET lease_until = now() + make_interval(secs => $2)
         WHERE id = ANY($3) AND owner_id = $1 AND status = 'processing' RETURNING id",
    )
    .bind(owner)
    .bind(interval(ttl))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Gives an order back (its actor stopped).
pub async fn release(db: impl PgExecutor<'_>, owner: &str, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET owner_id = NULL, lease_until = NULL WHERE id = $1 AND owner_id = $2")
        .bind(id)
        .bind(owner)
        .execute(db)
        .await
        .map(drop)
}

/// Gives every order back (shutdown), so another instance can go on at once.
pub async fn release_all(db: impl PgExecutor<'_>, owner: &str) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE orders SET owner_id = NULL, lease_until = NULL WHERE owner_id = $1")
        .bind(owner)
        .execute(db)
        .await
        .map(|r| r.rows_affected())
}
