//! Tiles: the photo is worked on in overlapping squares, so the engine's
//! memory stays bounded whatever the photo's size (a 100-megapixel scan
//! included) and tiles run in parallel. Each tile carries a halo of real
//! neighbours wide enough for every stage's window, so the seams are
//! invisible; at the photo's own edges the stages clamp, as on a whole photo.

use image::{DynamicImage, GenericImage};

use super::{Planes, stages::Rect};

/// A tile's side, in pixels.
pub const TILE: u32 = 512;
/// Wider than the reach of the stages chained on a tile (defect fill 6,
/// chroma smoothing 9, sharpening 3).
pub const HALO: u32 = 24;

/// One tile: its core (the pixels it writes) and the region it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub halo_x: u32,
    pub halo_y: u32,
    pub halo_width: u32,
    pub halo_height: u32,
}

impl Tile {
    /// Where the core starts inside the halo region.
    pub fn core_offset(&self) -> (usize, usize) {
        ((self.x - self.halo_x) as usize, (self.y - self.halo_y) as usize)
    }

    /// The core as a rectangle of the halo region (what a tile's stages count).
    pub fn core(&self) -> Rect {
        let (x, y) = self.core_offset();
        Rect {
            x,
            y,
            width: self.width as usize,
            height: self.height as usize,
        }
    }

    /// The tile's pixels as planes: its core alone, or with its halo.
    pub fn planes(&self, image: &DynamicImage, with_halo: bool) -> (Planes, DynamicImage) {
        let region = if with_halo {
            image.crop_imm(self.halo_x, self.halo_y, self.halo_width, self.halo_height)
        } else {
            image.crop_imm(self.x, self.y, self.width, self.height)
        };
        (Planes::from_image(&region), region)
    }
}

/// The photo's tiles, band by band (a band is one row of tiles).
pub fn bands(width: u32, height: u32, tile: u32, halo: u32) -> Vec<Vec<Tile>> {
    let tile = tile.max(1);
    (0..height.div_ceil(tile))
        .map(|row| {
            (0..width.div_ceil(tile))
                .map(|col| {
                    let (x, y) = (col * tile, row * tile);
                    let (w, h) = (tile.min(width - x), tile.min(height - y));
                    let (hx, hy) = (x.saturating_sub(halo), y.saturating_sub(halo));
                    Tile {
                        x,
                        y,
                        width: w,
                        height: h,
                        halo_x: hx,
                        halo_y: hy,
                        halo_width: (x + w + halo).min(width) - hx,
                        halo_height: (y + h + halo).min(height) - hy,
                    }
                })
                .collect()
        })
        .collect()
}

/// Writes `tile` (an image of the tile's halo region, as `to_image_like`
/// made it) into `out`, core only, keeping every bit of its pixels.
pub fn paste(out: &mut DynamicImage, tile: &Tile, region: &DynamicImage) {
    let (cx, cy) = tile.core_offset();
    let core = region.crop_imm(cx as u32, cy as u32, tile.width, tile.height);
    let (x, y) = (tile.x, tile.y);
    // Same-typed copies; DynamicImage's own copy would go through 8-bit RGBA.
    let pasted = match (out, &core) {
        (DynamicImage::ImageLuma8(o), DynamicImage::ImageLuma8(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageLumaA8(o), DynamicImage::ImageLumaA8(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageRgb8(o), DynamicImage::ImageRgb8(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageRgba8(o), DynamicImage::ImageRgba8(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageLuma16(o), DynamicImage::ImageLuma16(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageLumaA16(o), DynamicImage::ImageLumaA16(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageRgb16(o), DynamicImage::ImageRgb16(t)) => o.copy_from(t, x, y),
        (DynamicImage::ImageRgba16(o), DynamicImage::ImageRgba16(t)) => o.copy_from(t, x, y),
        (o, t) => o.copy_from(t, x, y),
    };
    // The tiles are cut from the same grid as the output: a copy cannot fall outside it.
    debug_assert!(pasted.is_ok(), "tile outside the output");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_photo_once_with_halos_inside_it() {
        let (w, h) = (1100, 700);
        let bands = bands(w, h, 512, 24);
        assert_eq!(bands.len(), 2);
        assert_eq!(bands[0].len(), 3);
        let mut covered = vec![0u8; (w * h) as usize];
        for t in bands.iter().flatten() {
            assert!(t.halo_x <= t.x && t.halo_y <= t.y);
            assert!(t.halo_x + t.halo_width <= w && t.halo_y + t.halo_height <= h);
            assert!(t.halo_x + t.halo_width >= t.x + t.width && t.halo_y + t.halo_height >= t.y + t.height);
            for y in t.y..t.y + t.height {
                for x in t.x..t.x + t.width {
                    covered[(y * w + x) as usize] += 1;
                }
            }
        }
        assert!(covered.iter().all(|c| *c == 1));
        let inner = bands[1][1];
        assert_eq!((inner.halo_x, inner.halo_y), (512 - 24, 512 - 24));
    }

    #[test]
    fn pasting_keeps_sixteen_bits() {
        let mut out = DynamicImage::new(4, 4, image::ColorType::Rgb16);
        let region = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            4,
            4,
            image::Rgb([1234u16, 40_000, 7]),
        ));
        let tile = bands(4, 4, 2, 1)[1][1];
        paste(
            &mut out,
            &tile,
            &region.crop_imm(tile.halo_x, tile.halo_y, tile.halo_width, tile.halo_height),
        );
        let pixel = out.as_rgb16().unwrap().get_pixel(3, 3).0;
        assert_eq!(pixel, [1234, 40_000, 7]);
        assert_eq!(out.as_rgb16().unwrap().get_pixel(0, 0).0, [0, 0, 0]);
    }
}
