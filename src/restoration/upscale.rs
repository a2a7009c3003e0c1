//! Upscaling for a larger print (the local provider's `upscale_2x` and
//! `upscale_4x` options): a high-quality resampler (Lanczos-3) and then the
//! engine's gentle sharpening, which gives back the edge contrast that
//! resampling softens. Sharpened in tiles, so the working memory beyond
//! the output is a few tiles' worth whatever the size.

use image::{DynamicImage, GenericImageView, imageops::FilterType};
use rayon::prelude::*;

use super::{stages, tiles};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpscaleError {
    #[error("a photo is upscaled 2× or 4×, not {0}×")]
    Factor(u32),
    #[error("{width}×{height} upscaled {factor}× would be {pixels} pixels, over the limit of {limit}")]
    TooLarge {
        width: u32,
        height: u32,
        factor: u32,
        pixels: u64,
        limit: u64,
    },
}

/// `image` made `factor` (2 or 4) times as wide and as high, keeping its
/// colour type, unless the result would pass `max_pixels`.
pub fn upscale(image: &DynamicImage, factor: u32, max_pixels: u64) -> Result<DynamicImage, UpscaleError> {
    if !matches!(factor, 2 | 4) {
        return Err(UpscaleError::Factor(factor));
    }
    let (width, height) = image.dimensions();
    let pixels = u64::from(width) * u64::from(height) * u64::from(factor * factor);
    if pixels > max_pixels {
        return Err(UpscaleError::TooLarge {
            width,
            height,
            factor,
            pixels,
            limit: max_pixels,
        });
    }
    let resized = image.resize_exact(width * factor, height * factor, FilterType::Lanczos3);
    let (w, h) = resized.dimensions();
    let mut out = resized.clone();
    for band in tiles::bands(w, h, tiles::TILE, tiles::HALO) {
        let sharpened: Vec<(tiles::Tile, DynamicImage)> = band
            .par_iter()
            .map(|tile| {
                let (mut planes, region) = tile.planes(&resized, true);
                // A clean resample: sharpened as a clean photo is.
                stages::sharpen(&mut planes, 0.0);
                (*tile, planes.to_image_like(&region))
            })
            .collect();
        for (tile, region) in sharpened {
            tiles::paste(&mut out, &tile, &region);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscaling_doubles_or_quadruples_both_dimensions_and_keeps_the_colour_type() {
        for (grey, factor) in [(false, 2), (true, 4)] {
            let input = super::super::synthetic(97, 61, grey);
            let output = upscale(&input, factor, u64::MAX).expect("upscaled");
            assert_eq!(output.dimensions(), (97 * factor, 61 * factor));
            assert_eq!(output.color(), input.color());
        }
    }

    /// Sharper than the resample alone, and across tiles without seams:
    /// a step edge keeps a steep rise wherever it runs.
    #[test]
    fn an_upscaled_edge_stays_sharp() {
        let input = DynamicImage::ImageLuma8(image::ImageBuffer::from_fn(400, 300, |x, _| {
            image::Luma([if x < 200 { 60u8 } else { 190 }])
        }));
        let output = upscale(&input, 2, u64::MAX).expect("upscaled").to_luma8();
        let plain = input.resize_exact(800, 600, FilterType::Lanczos3).to_luma8();
        for y in [10, 300, 590] {
            let rise = |img: &image::GrayImage| {
                i32::from(img.get_pixel(401, y).0[0]) - i32::from(img.get_pixel(398, y).0[0])
            };
            assert!(
                rise(&output) > rise(&plain),
                "row {y}: {} against {}",
                rise(&output),
                rise(&plain)
            );
        }
    }

    #[test]
    fn an_upscale_past_the_pixel_limit_or_by_another_factor_is_refused() {
        let input = super::super::synthetic(100, 100, false);
        assert_eq!(upscale(&input, 3, u64::MAX), Err(UpscaleError::Factor(3)));
        assert!(matches!(
            upscale(&input, 4, 100_000),
            Err(UpscaleError::TooLarge { pixels: 160_000, .. })
        ));
        assert!(upscale(&input, 2, 40_000).is_ok());
    }
}
