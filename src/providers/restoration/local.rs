//! The `local` provider: the embedded engine (`crate::restoration`), run on
//! the blocking pool. The photo is turned upright first (EXIF orientation),
//! and written back in its own format at its own size.

use std::{io::Cursor, sync::Arc};

use futures::future::BoxFuture;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use tokio::sync::Semaphore;

use super::{RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer};
use crate::storage::Storage;

pub struct LocalRestorer {
    storage: Storage,
    /// The engine is CPU-bound (its tiles already use every core) and holds
    /// the decoded photo and its output: more runs than cores only add
    /// memory, so they queue here.
    engines: Arc<Semaphore>,
}

impl LocalRestorer {
    pub fn new(storage: Storage) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            storage,
            engines: Arc::new(Semaphore::new(cores)),
        }
    }
}

/// Decodes, restores and encodes one photo.
pub fn restore_bytes(data: &[u8]) -> Result<(Vec<u8>, ImageFormat), RestoreError> {
    let reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| RestoreError::permanent(format!("unreadable photo: {e}")))?;
    let format = reader
        .format()
        .ok_or_else(|| RestoreError::permanent("unknown photo format"))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| RestoreError::permanent(format!("undecodable photo: {e}")))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| RestoreError::permanent(format!("undecodable photo: {e}")))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    let (restored, report) = crate::restoration::restore(&image);
    tracing::debug!(?report, "restored by the local engine");
    let mut out = Cursor::new(Vec::new());
    let encoded = match format {
        ImageFormat::Jpeg => {
            let rgb = DynamicImage::ImageRgb8(restored.to_rgb8());
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92);
            rgb.write_with_encoder(encoder)
        }
        ImageFormat::WebP => DynamicImage::ImageRgba8(restored.to_rgba8()).write_to(&mut out, format),
        other => restored.write_to(&mut out, other),
    };
    encoded.map_err(|e| RestoreError::permanent(format!("cannot encode the restored photo: {e}")))?;
    Ok((out.into_inner(), format))
}

impl Restorer for LocalRestorer {
    fn name(&self) -> &'static str {
        "local"
    }

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest,
        _record: RecordSubmission,
    ) -> BoxFuture<'a, Result<Restored, RestoreError>> {
        Box::pin(async move {
            let _engine = self
                .engines
                .acquire()
                .await
                .map_err(|e| RestoreError::transient(format!("the engine is shutting down: {e}")))?;
            let input = self.storage.get(&request.input_key).await?;
            let (output, _) = tokio::task::spawn_blocking(move || restore_bytes(&input))
                .await
                .map_err(|e| RestoreError::transient(format!("the engine stopped: {e}")))??;
            let bytes = output.len() as u64;
            self.storage.put(&request.output_key, output.into()).await?;
            Ok(Restored {
                output_key: request.output_key.clone(),
                bytes,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_a_jpeg_to_a_jpeg_of_the_same_size() {
        let mut input = Cursor::new(Vec::new());
        crate::restoration::synthetic(120, 90, false)
            .write_to(&mut input, ImageFormat::Jpeg)
            .unwrap();
        let input = input.into_inner();
        let (output, format) = restore_bytes(&input).unwrap();
        assert_eq!(format, ImageFormat::Jpeg);
        assert_ne!(output, input);
        let decoded = image::load_from_memory(&output).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (120, 90));
    }

    #[test]
    fn refuses_what_is_not_a_photo() {
        let err = restore_bytes(b"nope").unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::Permanent);
    }
}
