//! Photo storage over `object_store`: a local directory by default, S3 (or any
//! S3-compatible server) in production. Callers speak in keys of [`keys`];
//! this module never sees a customer's file name.

pub mod keys;
pub mod usage;

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};

use crate::config::{Settings, StorageLocation};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("cannot open storage: {0}")]
    Open(String),
    #[error("cannot write {key}: {source}")]
    Write {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage error on {key}: {source}")]
    Backend {
        key: String,
        #[source]
        source: object_store::Error,
    },
}

impl StorageError {
    fn backend(key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_owned()),
            source => StorageError::Backend {
                key: key.to_owned(),
                source,
            },
        }
    }
}

/// How much of a local file one read takes. A reader that stops reading
/// holds about one chunk in the server's write buffer: at 64 KiB, two
/// hundred stalled downloads pin about 13 MiB, where 1 MiB chunks pinned
/// 200 MiB.
const READ_CHUNK: usize = 64 << 10;
/// The part size of streamed writes.
const WRITE_PART: usize = 5 << 20;

/// One stored object as listed.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub last_modified: time::OffsetDateTime,
}

/// Cheap to clone; every clone talks to the same store.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    description: String,
    usage: Arc<usage::Usage>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("at", &self.description).finish()
    }
}

impl Storage {
    /// Opens the store `storage.url` names, creating a local directory if needed.
    pub fn open(settings: &Settings) -> Result<Self, StorageError> {
        let location = settings
            .storage_location()
            .map_err(|e| StorageError::Open(e.to_string()))?;
        match location {
            StorageLocation::Local(dir) => Self::local(&dir),
            StorageLocation::S3 { bucket, prefix } => {
                let s = &settings.storage;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_region(&s.region)
                    .with_allow_http(s.allow_http);
                if !s.endpoint.is_empty() {
                    builder = builder
                        .with_endpoint(&s.endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if !s.access_key_id.is_empty() {
                    builder = builder
                        .with_access_key_id(&s.access_key_id)
                        .with_secret_access_key(s.secret_access_key.expose());
                }
                let store = builder.build().map_err(|e| StorageError::Open(e.to_string()))?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(store, prefix.as_str()))
                };
                Ok(Self::from_store(store, format!("s3://{bucket}/{prefix}")))
            }
        }
    }

    /// A store rooted at a local directory (created when missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open(format!("{}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Open(e.to_string()))?
            .with_automatic_cleanup(true);
        // Files are read in 1 MiB chunks (the default is 8 KiB, one blocking
        // hop each), so a streamed ZIP or photo is not bound by the hops.
        let store = object_store::chunked::ChunkedStore::new(Arc::new(store), READ_CHUNK);
        Ok(Self::from_store(
            Arc::new(store),
            format!("file://{}", dir.display()),
        ))
    }

    /// Wraps any object store (tests use the in-memory one).
    pub fn from_store(store: Arc<dyn ObjectStore>, description: impl Into<String>) -> Self {
        Self {
            store,
            description: description.into(),
            usage: Arc::default(),
        }
    }

    /// Bytes stored per area, as this process counts them.
    pub fn usage(&self) -> &usage::Usage {
        &self.usage
    }

    /// Sets every area's count from a listing of the bucket.
    pub async fn reconcile_usage(&self) -> Result<u64, StorageError> {
        let mut total = 0;
        for area in keys::Area::ALL {
            let bytes: u64 = self.list(area.prefix()).await?.iter().map(|o| o.size).sum();
            self.usage.set(area, bytes);
            total += bytes;
        }
        Ok(total)
    }

    /// Counts an object written by other means (a [`Storage::writer`]).
    pub async fn record_written(&self, key: &str) -> Result<(), StorageError> {
        if let Some(size) = self.size(key).await? {
            self.usage.record(key, size as i64);
        }
        Ok(())
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let len = bytes.len() as i64;
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map_err(|e| StorageError::backend(key, e))?;
        self.usage.record(key, len);
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let result = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(|e| StorageError::backend(key, e))?;
        result.bytes().await.map_err(|e| StorageError::backend(key, e))
    }

    /// The object as a stream of chunks, never whole in memory.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        Ok(self.get_sized_stream(key).await?.1)
    }

    /// The object's size and its chunks, from one request to the store.
    pub async fn get_sized_stream(
        &self,
        key: &str,
    ) -> Result<
        (
            u64,
            futures::stream::BoxStream<'static, Result<Bytes, StorageError>>,
        ),
        StorageError,
    > {
        let result = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(|e| StorageError::backend(key, e))?;
        let size = result.meta.size;
        let key = key.to_owned();
        Ok((
            size,
            result
                .into_stream()
                .map_err(move |e| StorageError::backend(&key, e))
                .boxed(),
        ))
    }

    /// A writer that streams into `key` (multipart where the store has it);
    /// the object appears whole only when the writer is shut down.
    pub fn writer(&self, key: &str) -> object_store::buffered::BufWriter {
        // At most two 5 MiB parts in flight (S3's smallest part size): a
        // writer fed faster than storage takes it waits instead of buffering.
        object_store::buffered::BufWriter::with_capacity(self.store.clone(), Path::from(key), WRITE_PART)
            .with_max_concurrency(2)
    }

    /// Streams `reader` into `key` (a part at a time, never whole in
    /// memory); on failure nothing is left under `key`. Returns the size.
    pub async fn put_reader(
        &self,
        key: &str,
        mut reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<u64, StorageError> {
        use tokio::io::AsyncWriteExt;
        let mut writer = self.writer(key);
        let written = async {
            let n = tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await?;
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        match written {
            Ok(n) => {
                self.usage.record(key, n as i64);
                Ok(n)
            }
            Err(source) => {
                let _ = writer.abort().await;
                Err(StorageError::Write {
                    key: key.to_owned(),
                    source,
                })
            }
        }
    }

    /// The object's size, or `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self.store.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StorageError::backend(key, e)),
        }
    }

    /// Deletes a key; deleting what is already gone succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.size(key).await? {
            Some(size) => self.delete_sized(key, size).await,
            None => Ok(()),
        }
    }

    /// Deletes an object a listing found, without asking its size again.
    pub async fn delete_listed(&self, object: &StoredObject) -> Result<(), StorageError> {
        self.delete_sized(&object.key, object.size).await
    }

    /// Deletes a key whose size the caller knows (from a listing).
    async fn delete_sized(&self, key: &str, size: u64) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) => {
                self.usage.record(key, -(size as i64));
                Ok(())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::backend(key, e)),
        }
    }

    /// Moves `from` (of `size` bytes) to `to`: a rename where the store has
    /// one (a local directory), else copy then delete. Safe to repeat after a
    /// crash at any point: a missing source whose destination exists is a
    /// finished move.
    pub async fn move_object(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        match self.store.rename(&Path::from(from), &Path::from(to)).await {
            Ok(()) => {
                self.usage.record(from, -(size as i64));
                self.usage.record(to, size as i64);
                Ok(())
            }
            Err(object_store::Error::NotFound { .. }) => match self.size(to).await? {
                Some(_) => Ok(()),
                None => Err(StorageError::NotFound(from.to_owned())),
            },
            Err(e) => Err(StorageError::backend(from, e)),
        }
    }

    /// Copies `from` to `to` inside the store (no bytes through this
    /// process; a hard link in a local directory); returns the size.
    pub async fn copy(&self, from: &str, to: &str) -> Result<u64, StorageError> {
        self.store
            .copy(&Path::from(from), &Path::from(to))
            .await
            .map_err(|e| StorageError::backend(from, e))?;
        let size = self
            .size(to)
            .await?
            .ok_or_else(|| StorageError::NotFound(to.to_owned()))?;
        self.usage.record(to, size as i64);
        Ok(size)
    }

    /// Every object under `prefix` (a key prefix without trailing slash).
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StorageError> {
        let prefix_path = Path::from(prefix);
        self.store
            .list(Some(&prefix_path))
            .map_ok(|meta| StoredObject {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                    meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
                ))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            })
            .try_collect()
            .await
            .map_err(|e| StorageError::backend(prefix, e))
    }

    /// Deletes every object under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        let objects = self.list(prefix).await?;
        for object in &objects {
            self.delete_sized(&object.key, object.size).await?;
        }
        Ok(objects.len())
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self.store.head(&Path::from(".readyz")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::backend(".readyz", e)),
        }
    }
}
