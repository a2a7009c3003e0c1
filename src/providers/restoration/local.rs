//! The `local` provider: the embedded engine (`crate::restoration`), run on
//! the blocking pool. The photo is turned upright first (EXIF orientation),
//! and written back in its own format: at its own size by the repair, two
//! or four times larger by the upscale steps. It has no face or colour
//! model: those steps are never sold with it, and refused if asked.

use std::sync::Arc;

use futures::future::BoxFuture;
use image::ImageFormat;
use tokio::sync::Semaphore;

use super::{RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer};
use crate::{
    domain::{chain::Step, options::RestorationOption},
    storage::Storage,
    validation::{self, PhotoLimits},
};

pub struct LocalRestorer {
    storage: Storage,
    /// The same decode budget as validation at upload.
    limits: Arc<PhotoLimits>,
    options: crate::restoration::Options,
    /// The engine is CPU-bound (its tiles already use every core) and holds
    /// the decoded photo and its output: more runs than cores only add
    /// memory, so they queue here.
    engines: Arc<Semaphore>,
}

impl LocalRestorer {
    pub fn new(storage: Storage, limits: PhotoLimits, options: crate::restoration::Options) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            storage,
            limits: Arc::new(limits),
            options,
            engines: Arc::new(Semaphore::new(cores)),
        }
    }
}

/// The most pixels an upscale step may make: a 4× upscale of a 16 MP photo
/// (about 1 GB while it is resampled).
const MAX_UPSCALED_PIXELS: u64 = 256_000_000;

/// Decodes (within the upload's decode budget), runs one chain step on, and
/// encodes one photo.
pub fn restore_bytes(
    data: &[u8],
    limits: &PhotoLimits,
    options: crate::restoration::Options,
    step: Step,
) -> Result<(Vec<u8>, ImageFormat), RestoreError> {
    let (image, format) = validation::open_upright(data, limits)
        .map_err(|e| RestoreError::permanent(format!("undecodable photo: {e}")))?;
    let restored = match step {
        Step::Repair => {
            let (restored, report) = crate::restoration::restore_with(&image, options);
            tracing::debug!(?report, "restored by the local engine");
            restored
        }
        Step::Option(option @ (RestorationOption::Upscale2x | RestorationOption::Upscale4x)) => {
            let factor = if option == RestorationOption::Upscale2x {
                2
            } else {
                4
            };
            crate::restoration::upscale::upscale(&image, factor, MAX_UPSCALED_PIXELS)
                .map_err(|e| RestoreError::permanent(e.to_string()))?
        }
        Step::Option(option) => {
            return Err(RestoreError::permanent(format!(
                "the local engine has no model for {option}"
            )));
        }
    };
    let out = validation::encode(&restored, format, 92)
        .map_err(|e| RestoreError::permanent(format!("cannot encode the restored photo: {e}")))?;
    Ok((out, format))
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
            let (limits, options, step) = (self.limits.clone(), self.options, request.step);
            let (output, _) =
                tokio::task::spawn_blocking(move || restore_bytes(&input, &limits, options, step))
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
    use std::io::Cursor;

    use super::*;
    use crate::validation::PhotoKind;

    fn limits(max_decode_bytes: u64) -> PhotoLimits {
        PhotoLimits {
            max_file_bytes: 10 << 20,
            max_pixels: 10_000_000,
            min_dimension: 16,
            allowed: vec![PhotoKind::Jpeg, PhotoKind::Png],
            max_decode_bytes,
        }
    }

    #[test]
    fn restores_a_jpeg_to_a_jpeg_of_the_same_size() {
        let mut input = Cursor::new(Vec::new());
        crate::restoration::synthetic(120, 90, false)
            .write_to(&mut input, ImageFormat::Jpeg)
            .unwrap();
        let input = input.into_inner();
        let (output, format) =
            restore_bytes(&input, &limits(64 << 20), Default::default(), Step::Repair).unwrap();
        assert_eq!(format, ImageFormat::Jpeg);
        assert_ne!(output, input);
        let decoded = image::load_from_memory(&output).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (120, 90));
    }

    #[test]
    fn refuses_what_is_not_a_photo() {
        let err = restore_bytes(b"nope", &limits(64 << 20), Default::default(), Step::Repair).unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::Permanent);
    }

    /// The engine and validation share one budget: what one accepts the
    /// other decodes, and what is over it is refused at upload already.
    #[test]
    fn the_engine_decodes_within_the_budget_validation_applied() {
        let mut input = Cursor::new(Vec::new());
        crate::restoration::synthetic(200, 200, false)
            .write_to(&mut input, ImageFormat::Png)
            .unwrap();
        let input = input.into_inner();
        // 200 × 200 RGB is 120,000 bytes decoded.
        let tight = limits(100_000);
        assert_eq!(
            validation::validate(&input, &tight).unwrap_err().code(),
            "invalid_image"
        );
        assert_eq!(
            restore_bytes(&input, &tight, Default::default(), Step::Repair)
                .unwrap_err()
                .kind,
            super::super::ErrorKind::Permanent
        );
        let roomy = limits(1 << 20);
        assert!(validation::validate(&input, &roomy).is_ok());
        assert!(restore_bytes(&input, &roomy, Default::default(), Step::Repair).is_ok());
    }

    #[test]
    fn the_upscale_steps_double_or_quadruple_both_sides_and_the_rest_are_refused() {
        let mut input = Cursor::new(Vec::new());
        crate::restoration::synthetic(120, 90, false)
            .write_to(&mut input, ImageFormat::Png)
            .unwrap();
        let input = input.into_inner();
        for (option, side) in [
            (RestorationOption::Upscale2x, 2),
            (RestorationOption::Upscale4x, 4),
        ] {
            let (output, format) = restore_bytes(
                &input,
                &limits(64 << 20),
                Default::default(),
                Step::Option(option),
            )
            .unwrap();
            assert_eq!(format, ImageFormat::Png);
            let decoded = image::load_from_memory(&output).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (120 * side, 90 * side));
        }
        for option in [RestorationOption::Faces, RestorationOption::Colorize] {
            let err = restore_bytes(
                &input,
                &limits(64 << 20),
                Default::default(),
                Step::Option(option),
            )
            .unwrap_err();
            assert_eq!(err.kind, super::super::ErrorKind::Permanent, "{option}");
        }
    }
}
