//! Test photos and not-quite-photos, made in memory.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};

pub fn encode(width: u32, height: u32, format: ImageFormat, seed: u32) -> Vec<u8> {
    let img = ImageBuffer::from_fn(width, height, |x, y| {
        Rgb([
            ((x + seed * 13) % 256) as u8,
            ((y * 3 + seed) % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Jpeg, 1)
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Png, 2)
}

/// The `i`-th distinct small photo (JPEG for even i, PNG for odd).
pub fn photo(i: usize) -> Vec<u8> {
    let format = if i.is_multiple_of(2) {
        ImageFormat::Jpeg
    } else {
        ImageFormat::Png
    };
    encode(96, 72, format, i as u32)
}

/// A 1×1 GIF: a real image in a format the shop does not take.
pub const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

/// A small PNG whose header claims `width`×`height`: a decompression bomb's shape.
pub fn pixel_bomb_png(width: u32, height: u32) -> Vec<u8> {
    let mut png = png(64, 64);
    // IHDR data starts at byte 16 (8 signature + 4 length + 4 type); CRC follows 13 bytes of data.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// The place and the words the EXIF of [`with_gps`] carries.
pub const GPS_SECRET: &[u8] = b"Hidden garden, 51.50N";

/// `photo` (JPEG, PNG or WebP) with EXIF naming where it was taken: a GPS
/// directory (latitude 51° N), a description, and `orientation`.
pub fn with_gps(photo: Vec<u8>, orientation: u16) -> Vec<u8> {
    use img_parts::{DynImage, ImageEXIF};
    let description_at = 8 + 2 + 3 * 12 + 4;
    let gps_at = description_at + GPS_SECRET.len() as u32 + 1;
    let mut exif = b"II*\0\x08\0\0\0".to_vec();
    exif.extend(3u16.to_le_bytes());
    for (tag, kind, count, value) in [
        (0x010Eu16, 2u16, GPS_SECRET.len() as u32 + 1, description_at),
        (0x0112, 3, 1, u32::from(orientation)),
        (0x8825, 4, 1, gps_at),
    ] {
        exif.extend(tag.to_le_bytes());
        exif.extend(kind.to_le_bytes());
        exif.extend(count.to_le_bytes());
        exif.extend(value.to_le_bytes());
    }
    exif.extend(0u32.to_le_bytes());
    exif.extend(GPS_SECRET);
    exif.push(0);
    exif.extend(1u16.to_le_bytes());
    exif.extend([1, 0, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0]); // GPSLatitudeRef N
    exif.extend(0u32.to_le_bytes());
    let mut parts = DynImage::from_bytes(photo.into())
        .expect("a photo")
        .expect("a JPEG, PNG or WebP");
    parts.set_exif(Some(exif.into()));
    parts.encoder().bytes().to_vec()
}

/// Whether `data` carries EXIF, or the words of [`with_gps`] anywhere.
pub fn tells_where(data: &[u8]) -> bool {
    use img_parts::{DynImage, ImageEXIF};
    let exif = DynImage::from_bytes(data.to_vec().into())
        .ok()
        .flatten()
        .and_then(|p| p.exif())
        .is_some();
    exif || data.windows(GPS_SECRET.len()).any(|w| w == GPS_SECRET)
}
