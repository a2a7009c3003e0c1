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
