//! What a photo says about its owner, removed before it leaves the shop or
//! is stored as a restored photo: EXIF (GPS, camera serials, dates), XMP,
//! IPTC, comments and text chunks, and images embedded after the main one.
//! The pixels are kept as they are: segments are dropped without
//! re-encoding, unless the photo is turned by its EXIF orientation. Then it
//! is decoded, turned upright and encoded again, since the orientation
//! goes with the EXIF. TIFF keeps its metadata in the image's own
//! directories, so it is always encoded again. The originals keep theirs.

use bytes::Bytes;
use image::{ImageFormat, metadata::Orientation};
use img_parts::{DynImage, ImageEXIF, jpeg::markers};

use crate::validation::{self, PhotoLimits};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the photo cannot be read to strip its metadata: {0}")]
    Unreadable(String),
    #[error("the photo cannot be encoded without its metadata: {0}")]
    Encode(String),
}

/// APP1 (EXIF, XMP), APP13 (IPTC, Photoshop) and comments.
const JPEG_PRIVATE: [u8; 3] = [markers::APP1, markers::APP13, markers::COM];
/// EXIF, text of every kind, and the time of the last change.
const PNG_PRIVATE: [[u8; 4]; 5] = [*b"eXIf", *b"tEXt", *b"zTXt", *b"iTXt", *b"tIME"];

/// The photo without its metadata, upright.
pub fn strip(data: Bytes, limits: &PhotoLimits) -> Result<Bytes, MetadataError> {
    let format = image::guess_format(&data).map_err(|e| MetadataError::Unreadable(e.to_string()))?;
    if format == ImageFormat::Tiff {
        return encode_upright(&data, limits);
    }
    let Some(mut parts) =
        DynImage::from_bytes(data.clone()).map_err(|e| MetadataError::Unreadable(e.to_string()))?
    else {
        return encode_upright(&data, limits);
    };
    let turned = parts
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(&exif))
        .is_some_and(|o| o != Orientation::NoTransforms);
    if turned {
        return encode_upright(&data, limits);
    }
    parts.set_exif(None);
    match &mut parts {
        DynImage::Jpeg(jpeg) => {
            for marker in JPEG_PRIVATE {
                jpeg.remove_segments_by_marker(marker);
            }
            // The multi-picture index points at images after the main one.
            jpeg.segments_mut()
                .retain(|s| !(s.marker() == markers::APP2 && s.contents().starts_with(b"MPF\0")));
        }
        DynImage::Png(png) => {
            for kind in PNG_PRIVATE {
                png.remove_chunks_by_type(kind);
            }
        }
        DynImage::WebP(webp) => webp.remove_chunks_by_id(*b"XMP "),
    }
    let is_jpeg = matches!(parts, DynImage::Jpeg(_));
    let out = parts.encoder().bytes();
    if is_jpeg {
        // Whatever trails the main image (thumbnails, depth maps, other
        // cameras' frames) may carry metadata of its own.
        let end =
            jpeg_main_end(&out).ok_or_else(|| MetadataError::Unreadable("the JPEG has no end".into()))?;
        return Ok(out.slice(..end));
    }
    Ok(out)
}

/// Decoded within the budget, turned upright, encoded in its own format
/// (the encoders write no metadata).
fn encode_upright(data: &[u8], limits: &PhotoLimits) -> Result<Bytes, MetadataError> {
    let (image, format) =
        validation::open_upright(data, limits).map_err(|e| MetadataError::Unreadable(e.to_string()))?;
    validation::encode(&image, format, 95)
        .map(Bytes::from)
        .map_err(|e| MetadataError::Encode(e.to_string()))
}

/// Where the main image of a JPEG ends: just past the end-of-image marker
/// that closes its last scan, found by walking its segments (lengths) and
/// scans (where 0xFF is only stuffed, a restart, or the next marker).
fn jpeg_main_end(data: &[u8]) -> Option<usize> {
    let mut at = 2; // after SOI
    loop {
        while *data.get(at)? != 0xFF {
            at += 1;
        }
        while *data.get(at)? == 0xFF {
            at += 1;
        }
        let marker = *data.get(at)?;
        at += 1;
        match marker {
            0xD9 => return Some(at),
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let len = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]) as usize;
        at += len;
        if marker == 0xDA {
            // The scan's data, up to the next real marker.
            loop {
                if *data.get(at)? == 0xFF {
                    let next = *data.get(at + 1)?;
                    if next != 0x00 && !(0xD0..=0xD7).contains(&next) {
                        break;
                    }
                }
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::DynamicImage;

    use super::*;
    use crate::validation::PhotoKind;

    fn limits() -> PhotoLimits {
        PhotoLimits {
            max_file_bytes: 10 << 20,
            max_pixels: 10_000_000,
            min_dimension: 1,
            allowed: vec![PhotoKind::Jpeg, PhotoKind::Png, PhotoKind::Webp, PhotoKind::Tiff],
            max_decode_bytes: 256 << 20,
        }
    }

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(40, 20, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 12) as u8, 77])
        }))
        .write_to(&mut out, format)
        .unwrap();
        out.into_inner()
    }

    /// A little-endian EXIF block: orientation, a description and GPS.
    fn exif(orientation: u16) -> Vec<u8> {
        let mut e = b"II*\0\x08\0\0\0".to_vec();
        let entries: [(u16, u16, u32, u32); 3] = [
            (0x010E, 2, 8, 50), // ImageDescription, at 50
            (0x0112, 3, 1, orientation as u32),
            (0x8825, 4, 1, 58), // GPS IFD, at 58
        ];
        e.extend(3u16.to_le_bytes());
        for (tag, kind, count, value) in entries {
            e.extend(tag.to_le_bytes());
            e.extend(kind.to_le_bytes());
            e.extend(count.to_le_bytes());
            e.extend(value.to_le_bytes());
        }
        e.extend(0u32.to_le_bytes());
        assert_eq!(e.len(), 50);
        e.extend(b"Secret!\0");
        e.extend(1u16.to_le_bytes());
        e.extend([1, 0, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0]); // GPSLatitudeRef N
        e.extend(0u32.to_le_bytes());
        e
    }

    fn with_exif(photo: Vec<u8>, exif: Vec<u8>) -> Bytes {
        let mut parts = DynImage::from_bytes(photo.into()).unwrap().unwrap();
        parts.set_exif(Some(exif.into()));
        parts.encoder().bytes()
    }

    #[test]
    fn a_jpeg_loses_its_exif_and_what_trails_it_but_not_its_pixels() {
        let mut tagged = with_exif(encoded(ImageFormat::Jpeg), exif(1)).to_vec();
        tagged.extend(b"\xFF\xD8trailing camera data");
        let stripped = strip(tagged.clone().into(), &limits()).unwrap();
        assert!(!stripped.windows(7).any(|w| w == b"Secret!"));
        assert!(!stripped.windows(8).any(|w| w == b"trailing"));
        let before = image::load_from_memory(&tagged).unwrap();
        let after = image::load_from_memory(&stripped).unwrap();
        assert_eq!(before.as_bytes(), after.as_bytes(), "not re-encoded");
    }

    #[test]
    fn a_turned_photo_comes_out_upright_and_without_exif() {
        let tagged = with_exif(encoded(ImageFormat::Jpeg), exif(6));
        let stripped = strip(tagged, &limits()).unwrap();
        let parts = DynImage::from_bytes(stripped.clone()).unwrap().unwrap();
        assert!(parts.exif().is_none());
        let upright = image::load_from_memory(&stripped).unwrap();
        assert_eq!((upright.width(), upright.height()), (20, 40), "turned a quarter");
    }

    #[test]
    fn png_and_webp_lose_theirs_too() {
        for format in [ImageFormat::Png, ImageFormat::WebP] {
            let tagged = with_exif(encoded(format), exif(1));
            let stripped = strip(tagged, &limits()).unwrap();
            assert!(!stripped.windows(7).any(|w| w == b"Secret!"), "{format:?}");
            assert_eq!(image::guess_format(&stripped).unwrap(), format);
        }
        let tiff = encoded(ImageFormat::Tiff);
        let stripped = strip(tiff.into(), &limits()).unwrap();
        assert_eq!(image::guess_format(&stripped).unwrap(), ImageFormat::Tiff);
    }

    #[test]
    fn the_main_image_of_a_jpeg_ends_at_its_own_end_marker() {
        let jpeg = encoded(ImageFormat::Jpeg);
        assert_eq!(jpeg_main_end(&jpeg), Some(jpeg.len()));
        assert_eq!(jpeg_main_end(&jpeg[..jpeg.len() - 10]), None);
    }
}
