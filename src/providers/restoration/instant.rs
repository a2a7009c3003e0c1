//! The `instant` provider: the original is the restored photo (a storage
//! copy, a hard link in a local directory). It measures the orchestration
//! (actors, database, storage) without any image work.

use futures::future::BoxFuture;

use super::{RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer};
use crate::storage::Storage;

pub struct InstantRestorer {
    storage: Storage,
}

impl InstantRestorer {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }
}

impl Restorer for InstantRestorer {
    fn name(&self) -> &'static str {
        "instant"
    }

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest,
        _record: RecordSubmission,
    ) -> BoxFuture<'a, Result<Restored, RestoreError>> {
        Box::pin(async move {
            let size = self.storage.copy(&request.input_key, &request.output_key).await?;
            Ok(Restored {
                output_key: request.output_key.clone(),
                bytes: size,
            })
        })
    }
}
