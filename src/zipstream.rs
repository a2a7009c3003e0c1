//! Streaming ZIP archives of stored photos: each entry is copied from
//! storage chunk by chunk into the archive as it is written, so memory stays
//! flat whatever the archive's size. Photos are stored without
//! recompression: JPEG and PNG are compressed already.

use async_zip::{Compression, ZipEntryBuilder, tokio::write::ZipFileWriter};
use futures::{AsyncWriteExt, TryStreamExt};

use crate::storage::Storage;

/// One file of an archive: where it is stored, and its name inside.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub name: String,
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

/// Writes the archive of `entries` into `out`.
pub async fn write_zip<W>(out: W, storage: Storage, entries: Vec<Entry>) -> Result<(), ZipStreamError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut zip = ZipFileWriter::with_tokio(out);
    for entry in entries {
        let mut stream = storage.get_stream(&entry.key).await?;
        let builder = ZipEntryBuilder::new(entry.name.into(), Compression::Stored).unix_permissions(0o644);
        let mut writer = zip.write_entry_stream(builder).await?;
        while let Some(chunk) = stream.try_next().await? {
            writer.write_all(&chunk).await?;
        }
        writer.close().await?;
    }
    zip.close().await?;
    Ok(())
}
