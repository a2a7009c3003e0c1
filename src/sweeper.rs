//! The orphan sweep: temp files that no `file_uploads` row names.
//!
//! An upload writes its files before it commits their rows; a crash in
//! between, or a removal whose file delete failed, leaves files nobody owns.
//! Old enough (past any upload still in flight), they are deleted here.

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{
    db,
    storage::{Storage, keys::Area},
};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Deletes temp files older than `before` that have no row; returns how many.
pub async fn sweep_orphans(
    db: &PgPool,
    storage: &Storage,
    before: OffsetDateTime,
) -> Result<usize, SweepError> {
    let candidates: Vec<_> = storage
        .list(Area::Temp.prefix())
        .await?
        .into_iter()
        .filter(|o| o.last_modified < before)
        .collect();
    let mut removed = 0;
    for chunk in candidates.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|o| o.key.clone()).collect();
        let owned = db::uploads::existing_keys(db, &keys).await?;
        for object in chunk.iter().filter(|o| !owned.contains(&o.key)) {
            storage.delete_listed(object).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Deletes unpaid upload sessions past their expiry: their photos first,
/// then their rows (a crash between leaves a row whose files are gone, which
/// the next sweep deletes). Returns how many sessions went.
pub async fn sweep_abandoned_sessions(db: &PgPool, storage: &Storage) -> Result<usize, SweepError> {
    let mut swept = 0;
    loop {
        let mut tx = db.begin().await?;
        let Some(session) = db::cleanup::next_abandoned_session(&mut tx).await? else {
            return Ok(swept);
        };
        storage
            .delete_prefix(&crate::storage::keys::temp_session_prefix(session))
            .await?;
        db::cleanup::delete_session(&mut tx, session).await?;
        tx.commit().await?;
        swept += 1;
    }
}

/// Deletes every photo of an order (originals, restored, ZIPs, and any still
/// in temp) and marks the order purged. Safe to repeat. Returns when the
/// order was purged.
pub async fn purge_order(
    db: &PgPool,
    storage: &Storage,
    order_id: uuid::Uuid,
) -> Result<OffsetDateTime, SweepError> {
    for prefix in crate::storage::keys::order_prefixes(order_id) {
        storage.delete_prefix(&prefix).await?;
    }
    for image in db::orders::images(db, order_id).await? {
        storage.delete(&image.temp_key).await?;
    }
    sqlx::query("DELETE FROM download_links WHERE order_id = $1")
        .bind(order_id)
        .execute(db)
        .await?;
    Ok(db::cleanup::mark_purged(db, order_id).await?)
}

/// Purges finished orders older than `retention`; returns how many.
pub async fn sweep_retention(
    db: &PgPool,
    storage: &Storage,
    retention: time::Duration,
) -> Result<usize, SweepError> {
    let due = db::cleanup::due_for_purge(db, OffsetDateTime::now_utc() - retention, 200).await?;
    for order_id in &due {
        purge_order(db, storage, *order_id).await?;
        tracing::info!(%order_id, "order photos purged after retention");
    }
    Ok(due.len())
}

/// Deletes cached download archives built before `before`; returns how many.
pub async fn sweep_stale_zips(storage: &Storage, before: OffsetDateTime) -> Result<usize, SweepError> {
    let stale: Vec<_> = storage
        .list(Area::Downloads.prefix())
        .await?
        .into_iter()
        .filter(|o| crate::zipstream::built_at(&o.key).is_none_or(|at| at < before.unix_timestamp()))
        .collect();
    for object in &stale {
        storage.delete_listed(object).await?;
    }
    Ok(stale.len())
}
