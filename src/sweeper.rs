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
    let candidates: Vec<String> = storage
        .list(Area::Temp.prefix())
        .await?
        .into_iter()
        .filter(|o| o.last_modified < before)
        .map(|o| o.key)
        .collect();
    let mut removed = 0;
    for chunk in candidates.chunks(500) {
        let owned = db::uploads::existing_keys(db, chunk).await?;
        for key in chunk.iter().filter(|k| !owned.contains(k)) {
            storage.delete(key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
