//! Upload validation: is this file a photo the shop can restore?
//!
//! Judged by its bytes, never by its name or declared type: magic bytes first,
//! then the header's dimensions (so a decompression bomb is refused before a
//! single pixel is allocated), then a full decode under `image::Limits`.
//! CPU-heavy: callers run [`validate`] and [`validate_file`] on the
//! blocking pool. A file is read from where it was spooled, never whole in
//! memory unless its decoder needs it so.

use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
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
    /// What one decode may allocate (`uploads.max_decode_bytes`).
    pub max_decode_bytes: u64,
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
            max_decode_bytes: u.max_decode_bytes,
        }
    }

    /// The decoder's limits: the same for validation and the engine, so a
    /// photo accepted at upload always decodes when it is restored.
    pub fn decoder_limits(&self) -> Limits {
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_decode_bytes);
        limits
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
    let (kind, width, height) = check(Cursor::new(data), data.len() as u64, limits)?;
    Ok(ValidPhoto {
        kind,
        width,
        height,
        bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    })
}

/// Validates a file spooled to disk, whose size and SHA-256 were counted
/// as it arrived.
pub fn validate_file(
    file: &mut std::fs::File,
    bytes: u64,
    sha256: String,
    limits: &PhotoLimits,
) -> Result<ValidPhoto, Rejection> {
    let (kind, width, height) = check(file, bytes, limits)?;
    Ok(ValidPhoto {
        kind,
        width,
        height,
        bytes,
        sha256,
    })
}

/// The checks, in order of cost: size, magic bytes, header dimensions,
/// completeness, full decode.
fn check<R: Read + Seek>(
    mut source: R,
    bytes: u64,
    limits: &PhotoLimits,
) -> Result<(PhotoKind, u32, u32), Rejection> {
    if bytes == 0 {
        return Err(Rejection::Empty);
    }
    if bytes > limits.max_file_bytes {
        return Err(Rejection::TooLarge {
            limit: limits.max_file_bytes,
        });
    }
    let unreadable = |e: io::Error| Rejection::Corrupt(format!("the file cannot be read: {e}"));
    let mut magic = [0u8; 32];
    source.seek(SeekFrom::Start(0)).map_err(unreadable)?;
    let seen = read_up_to(&mut source, &mut magic).map_err(unreadable)?;
    let kind = image::guess_format(&magic[..seen])
        .ok()
        .and_then(PhotoKind::from_format)
        .filter(|k| limits.allowed.contains(k))
        .ok_or_else(|| Rejection::UnsupportedType {
            accepted: limits.accepted(),
        })?;
    // A JPEG's decoder reads its whole input: it is given the image up to
    // its end marker, not what may trail it.
    let jpeg_end = match kind {
        PhotoKind::Jpeg => jpeg_end(&mut source).map_err(unreadable)?,
        _ => None,
    };
    let image = Window::new(&mut source, jpeg_end.unwrap_or(bytes)).map_err(unreadable)?;
    let mut reader = ImageReader::with_format(BufReader::new(image), kind.format());
    reader.limits(limits.decoder_limits());
    let decoder = reader
        .into_decoder()
        .map_err(|e| Rejection::Corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
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
    if kind == PhotoKind::Jpeg && jpeg_end.is_none() {
        return Err(Rejection::Corrupt(
            "the JPEG data ends before the image does".into(),
        ));
    }
    // Every pixel, within the decode budget: a header that lies or data
    // cut short is refused here, not when the photo is restored.
    decode_within(decoder, limits)
        .map(drop)
        .map_err(|e| Rejection::Corrupt(e.to_string()))?;
    Ok((kind, width, height))
}

/// Decodes every pixel, the whole image counted against the decode budget
/// before a byte of it is allocated.
pub fn decode_within(
    mut decoder: impl ImageDecoder,
    limits: &PhotoLimits,
) -> image::ImageResult<DynamicImage> {
    let mut budget = limits.decoder_limits();
    budget.reserve(decoder.total_bytes())?;
    decoder.set_limits(budget)?;
    DynamicImage::from_decoder(decoder)
}

/// A stored photo decoded within the budget and turned upright (its EXIF
/// orientation applied), with the format it was stored in.
pub fn open_upright(data: &[u8], limits: &PhotoLimits) -> image::ImageResult<(DynamicImage, ImageFormat)> {
    let format = image::guess_format(data)?;
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    reader.limits(limits.decoder_limits());
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation().ok();
    let mut image = decode_within(decoder, limits)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok((image, format))
}

/// `image` encoded in `format` (8-bit RGB for JPEG at `jpeg_quality`, RGBA
/// for WebP, as those encoders need); the encoders write no metadata.
pub fn encode(image: &DynamicImage, format: ImageFormat, jpeg_quality: u8) -> image::ImageResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(image.to_rgb8()).write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, jpeg_quality),
        )?,
        ImageFormat::WebP => DynamicImage::ImageRgba8(image.to_rgba8()).write_to(&mut out, format)?,
        other => image.write_to(&mut out, other)?,
    }
    Ok(out.into_inner())
}

/// Fills `buf` as far as the source goes.
fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Where a complete JPEG ends: just after an end-of-image marker that
/// follows its last start-of-scan, or `None` when it is cut short. Some
/// decoders fill a cut-off scan with grey instead of failing, so the check
/// is made on the bytes. Inside entropy-coded data every 0xFF byte is
/// stuffed or a restart marker, so 0xFFDA and 0xFFD9 appear only as markers.
fn jpeg_end(source: &mut (impl Read + Seek)) -> io::Result<Option<u64>> {
    source.seek(SeekFrom::Start(0))?;
    let mut chunk = vec![0u8; 64 << 10];
    let (mut offset, mut previous) = (0u64, 0u8);
    let (mut last_sos, mut last_eoi) = (None, None);
    loop {
        let n = source.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        for (i, &byte) in chunk[..n].iter().enumerate() {
            if previous == 0xFF {
                let at = offset + i as u64;
                match byte {
                    0xDA => last_sos = Some(at),
                    0xD9 => last_eoi = Some(at),
                    _ => {}
                }
            }
            previous = byte;
        }
        offset += n as u64;
    }
    Ok(match (last_sos, last_eoi) {
        (Some(sos), Some(eoi)) if eoi > sos => Some(eoi + 1),
        _ => None,
    })
}

/// The first `len` bytes of a source, seekable within them.
struct Window<R> {
    inner: R,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> Window<R> {
    fn new(mut inner: R, len: u64) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(0))?;
        Ok(Self { inner, len, pos: 0 })
    }
}

impl<R: Read + Seek> Read for Window<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..take])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Window<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = self.inner.seek(SeekFrom::Start(target.min(self.len)))?;
        Ok(self.pos)
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
            max_decode_bytes: 256 << 20,
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
