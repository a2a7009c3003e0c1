//! Upload validation: is this file a photo the shop can restore?
//!
//! Judged by its bytes, never by its name or declared type: magic bytes first,
//! then the header's dimensions (so a decompression bomb is refused before a
//! single pixel is allocated), then a full decode under `image::Limits`.
//! CPU-heavy: callers run [`validate`] on the blocking pool.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

use crate::config::UploadSettings;

/// The photo formats the shop accepts (a subset may be configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoKind {
    Jpeg,
    Png,
    Webp,
    Tiff,
}

impl PhotoKind {
    pub fn from_format(format: ImageFormat) -> Option<Self> {
        match format {
            ImageFormat::Jpeg => Some(Self::Jpeg),
            ImageFormat::Png => Some(Self::Png),
            ImageFormat::WebP => Some(Self::Webp),
            ImageFormat::Tiff => Some(Self::Tiff),
            _ => None,
        }
    }

    pub fn format(self) -> ImageFormat {
        match self {
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Png => ImageFormat::Png,
            Self::Webp => ImageFormat::WebP,
            Self::Tiff => ImageFormat::Tiff,
        }
    }

    /// The name used in `uploads.allowed_types`.
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Tiff => "tiff",
        }
    }

    /// The extension of stored copies.
    pub fn ext(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Tiff => "tiff",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Tiff => "image/tiff",
        }
    }
}

/// What an accepted file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPhoto {
    pub kind: PhotoKind,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub sha256: String,
}

/// A size as a customer reads it ("50 MB"; megabytes of 2^20 bytes).
fn human_bytes(bytes: u64) -> String {
    const MB: u64 = 1 << 20;
    match bytes {
        b if b >= MB && b % MB == 0 => format!("{} MB", b / MB),
        b if b >= MB => format!("{:.1} MB", b as f64 / MB as f64),
        b if b >= 1024 => format!("{} KB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// A pixel count as a customer reads it ("100 megapixels").
fn human_pixels(pixels: u64) -> String {
    if pixels >= 1_000_000 {
        format!("{} megapixels", (pixels as f64 / 1e6 * 10.0).round() / 10.0)
    } else {
        format!("{pixels} pixels")
    }
}

/// Why a file was refused; each maps to an error code of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than the limit of {}", human_bytes(*limit))]
    TooLarge { limit: u64 },
    #[error("the file is not a photo in an accepted format ({accepted})")]
    UnsupportedType { accepted: String },
    #[error("the photo is {width}×{height} pixels, more than the limit of {}", human_pixels(*limit))]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the photo is {width}×{height} pixels; each side must be at least {min} pixels")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("the photo cannot be read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    BadName(String),
    #[error("at most {limit} photos fit in one order")]
    TooManyFiles { limit: usize },
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty_file",
            Rejection::TooLarge { .. } => "file_too_large",
            Rejection::UnsupportedType { .. } => "unsupported_type",
            Rejection::TooManyPixels { .. } => "image_too_large",
            Rejection::TooSmall { .. } => "image_too_small",
            Rejection::Corrupt(_) => "invalid_image",
            Rejection::BadName(_) => "invalid_filename",
            Rejection::TooManyFiles { .. } => "too_many_files",
        }
    }

    /// The HTTP status this refusal calls for on its own.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::TooLarge { .. } | Rejection::TooManyPixels { .. } => 413,
            Rejection::UnsupportedType { .. } => 415,
            Rejection::BadName(_) => 400,
            _ => 422,
        }
    }
}

/// The limits validation applies, taken from `uploads.*`.
#[derive(Debug, Clone)]
pub struct PhotoLimits {
    pub max_file_bytes: u64,
    pub max_pixels: u64,
    pub min_dimension: u32,
    pub allowed: Vec<PhotoKind>,
}

impl PhotoLimits {
    pub fn from_settings(u: &UploadSettings) -> Self {
        let allowed = [PhotoKind::Jpeg, PhotoKind::Png, PhotoKind::Webp, PhotoKind::Tiff]
            .into_iter()
            .filter(|k| u.allowed_types.iter().any(|t| t == k.config_name()))
            .collect();
        Self {
            max_file_bytes: u.max_file_bytes,
            max_pixels: u.max_pixels,
            min_dimension: u.min_dimension,
            allowed,
        }
    }

    fn accepted(&self) -> String {
        self.allowed
            .iter()
            .map(|k| k.config_name().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Validates one file's bytes.
pub fn validate(data: &[u8], limits: &PhotoLimits) -> Result<ValidPhoto, Rejection> {
    if data.is_empty() {
        return Err(Rejection::Empty);
    }
    if data.len() as u64 > limits.max_file_bytes {
        return Err(Rejection::TooLarge {
            limit: limits.max_file_bytes,
        });
    }
    let unsupported = || Rejection::UnsupportedType {
        accepted: limits.accepted(),
    };
    let kind = image::guess_format(data)
        .ok()
        .and_then(PhotoKind::from_format)
        .filter(|k| limits.allowed.contains(k))
        .ok_or_else(unsupported)?;

    let (width, height) = ImageReader::with_format(Cursor::new(data), kind.format())
        .into_dimensions()
        .map_err(|e| Rejection::Corrupt(e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Rejection::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    if width.min(height) < limits.min_dimension {
        return Err(Rejection::TooSmall {
            width,
            height,
            min: limits.min_dimension,
        });
    }
    if kind == PhotoKind::Jpeg && !jpeg_has_end(data) {
        return Err(Rejection::Corrupt(
            "the JPEG data ends before the image does".into(),
        ));
    }
    decode_fully(data, kind, limits.max_pixels)?;
    Ok(ValidPhoto {
        kind,
        width,
        height,
        bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    })
}

/// Decodes every pixel, with allocations bounded by the pixel limit, so a file
/// whose header lies or whose data is cut short is refused.
fn decode_fully(data: &[u8], kind: PhotoKind, max_pixels: u64) -> Result<(), Rejection> {
    let mut reader = ImageReader::with_format(Cursor::new(data), kind.format());
    let mut limits = Limits::default();
    // Up to 16-bit RGBA per pixel, plus the decoder's working room.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    reader
        .decode()
        .map(drop)
        .map_err(|e| Rejection::Corrupt(e.to_string()))
}

/// A complete JPEG has an end-of-image marker after its last start-of-scan.
/// Some decoders fill a cut-off scan with grey instead of failing, so the
/// check is made on the bytes. Inside entropy-coded data every 0xFF byte is
/// stuffed or a restart marker, so 0xFFDA and 0xFFD9 appear only as markers.
fn jpeg_has_end(data: &[u8]) -> bool {
    let last = |marker: u8| data.windows(2).rposition(|w| w[0] == 0xFF && w[1] == marker);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    fn limits() -> PhotoLimits {
        PhotoLimits {
            max_file_bytes: 10 << 20,
            max_pixels: 4_000_000,
            min_dimension: 16,
            allowed: vec![PhotoKind::Jpeg, PhotoKind::Png, PhotoKind::Webp, PhotoKind::Tiff],
        }
    }

    #[test]
    fn limits_read_in_units_a_customer_knows() {
        assert_eq!(
            Rejection::TooLarge { limit: 50 << 20 }.to_string(),
            "the file is larger than the limit of 50 MB"
        );
        assert_eq!(human_bytes(1536 << 10), "1.5 MB");
        assert_eq!(human_bytes(2048), "2 KB");
        let pixels = Rejection::TooManyPixels {
            width: 30000,
            height: 30000,
            limit: 100_000_000,
        };
        assert_eq!(
            pixels.to_string(),
            "the photo is 30000×30000 pixels, more than the limit of 100 megapixels"
        );
        assert_eq!(human_pixels(2_500_000), "2.5 megapixels");
    }

    fn encode(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn accepts_each_format() {
        for (format, kind) in [
            (ImageFormat::Jpeg, PhotoKind::Jpeg),
            (ImageFormat::Png, PhotoKind::Png),
            (ImageFormat::WebP, PhotoKind::Webp),
            (ImageFormat::Tiff, PhotoKind::Tiff),
        ] {
            let photo = validate(&encode(64, 48, format), &limits()).unwrap();
            assert_eq!((photo.kind, photo.width, photo.height), (kind, 64, 48));
        }
    }

    #[test]
    fn refuses_truncated_jpeg_and_png() {
        let jpeg = encode(200, 200, ImageFormat::Jpeg);
        let cut = &jpeg[..jpeg.len() * 2 / 3];
        assert_eq!(validate(cut, &limits()).unwrap_err().code(), "invalid_image");
        let png = encode(200, 200, ImageFormat::Png);
        let cut = &png[..png.len() / 2];
        assert_eq!(validate(cut, &limits()).unwrap_err().code(), "invalid_image");
    }

    #[test]
    fn refuses_by_bytes_not_names() {
        // A 1×1 GIF: a real image, but not a format the shop restores.
        let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
        assert_eq!(validate(gif, &limits()).unwrap_err().code(), "unsupported_type");
        assert_eq!(
            validate(b"hello, world", &limits()).unwrap_err().code(),
            "unsupported_type"
        );
        assert_eq!(validate(b"", &limits()).unwrap_err().code(), "empty_file");
    }

    #[test]
    fn refuses_pixel_bombs_before_decoding() {
        let mut l = limits();
        l.max_pixels = 100;
        let err = validate(&encode(20, 20, ImageFormat::Png), &l).unwrap_err();
        assert_eq!(err.code(), "image_too_large");
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn refuses_tiny_and_oversized_files() {
        assert_eq!(
            validate(&encode(8, 64, ImageFormat::Png), &limits())
                .unwrap_err()
                .code(),
            "image_too_small"
        );
        let mut l = limits();
        l.max_file_bytes = 10;
        assert_eq!(
            validate(&encode(64, 64, ImageFormat::Png), &l)
                .unwrap_err()
                .code(),
            "file_too_large"
        );
    }

    #[test]
    fn honours_the_configured_types() {
        let mut l = limits();
        l.allowed = vec![PhotoKind::Jpeg];
        assert_eq!(
            validate(&encode(64, 64, ImageFormat::Png), &l)
                .unwrap_err()
                .code(),
            "unsupported_type"
        );
    }
}
