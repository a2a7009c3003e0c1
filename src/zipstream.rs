//! Streaming ZIP archives of stored photos: each entry is copied from
//! storage chunk by chunk into the archive as it is written, so memory stays
//! flat whatever the archive's size. Photos are stored without
//! recompression: JPEG and PNG are compressed already.

use async_zip::{Compression, ZipEntryBuilder, tokio::write::ZipFileWriter};
use futures::{AsyncWriteExt, TryStreamExt};

use crate::storage::Storage;

/// One file of an archive: where it is stored, its name inside, and the
/// time the archive gives it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub name: String,
    pub modified: time::OffsetDateTime,
}

/// A ZIP (DOS) timestamp: local time with two-second steps from 1980; the
/// shop's times are UTC.
fn zip_date(t: time::OffsetDateTime) -> async_zip::ZipDateTime {
    let t = t.max(time::macros::datetime!(1980-01-01 0:00 UTC));
    async_zip::ZipDateTimeBuilder::new()
        .year(t.year())
        .month(u32::from(u8::from(t.month())))
        .day(u32::from(t.day()))
        .hour(u32::from(t.hour()))
        .minute(u32::from(t.minute()))
        .second(u32::from(t.second()))
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum ZipStreamError {
    #[error(transparent)]
    Zip(#[from] async_zip::error::ZipError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The newest cached archive of `order_id` built at or after `since`.
pub async fn cached(
    storage: &Storage,
    order_id: uuid::Uuid,
    since: time::OffsetDateTime,
) -> Result<Option<String>, crate::storage::StorageError> {
    let prefix = format!(
        "{}/{}",
        crate::storage::keys::Area::Downloads.prefix(),
        order_id.simple()
    );
    let newest = storage
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| built_at(&o.key).map(|at| (at, o.key)))
        .filter(|(at, _)| *at >= since.unix_timestamp())
        .max();
    Ok(newest.map(|(_, key)| key))
}

/// When a cached archive was built, from its key
/// (`downloads/{order_id}/{timestamp}_all_photos.zip`).
pub fn built_at(key: &str) -> Option<i64> {
    key.rsplit('/')
        .next()?
        .strip_suffix("_all_photos.zip")?
        .parse()
        .ok()
}

/// Builds the archive into storage for later downloads (streamed, never
/// whole in memory); returns its key.
pub async fn build_cache(
    storage: &Storage,
    order_id: uuid::Uuid,
    entries: Vec<Entry>,
) -> Result<String, ZipStreamError> {
    let key = crate::storage::keys::download_zip(order_id, time::OffsetDateTime::now_utc().unix_timestamp());
    let mut writer = storage.writer(&key);
    write_zip(&mut writer, storage.clone(), entries).await?;
    tokio::io::AsyncWriteExt::shutdown(&mut writer).await?;
    storage.record_written(&key).await?;
    Ok(key)
}

/// Writes the archive of `entries` into `out`.
pub async fn write_zip<W>(out: W, storage: Storage, entries: Vec<Entry>) -> Result<(), ZipStreamError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut zip = ZipFileWriter::with_tokio(out);
    for entry in entries {
        let mut stream = storage.get_stream(&entry.key).await?;
        let builder = ZipEntryBuilder::new(entry.name.into(), Compression::Stored)
            .unix_permissions(0o644)
            .last_modification_date(zip_date(entry.modified));
        let mut writer = zip.write_entry_stream(builder).await?;
        while let Some(chunk) = stream.try_next().await? {
            writer.write_all(&chunk).await?;
        }
        writer.close().await?;
    }
    zip.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_dates_are_real_dates() {
        let d = zip_date(time::macros::datetime!(2026-12-01 17:45:31 UTC));
        assert_eq!((d.year(), d.month(), d.day()), (2026, 12, 1));
        assert_eq!((d.hour(), d.minute()), (17, 45));
        assert_eq!(d.second(), 30, "two-second steps");
        let old = zip_date(time::OffsetDateTime::UNIX_EPOCH);
        assert_eq!((old.year(), old.month(), old.day()), (1980, 1, 1));
    }
}
