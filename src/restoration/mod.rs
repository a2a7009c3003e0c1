//! The embedded restoration engine: classical image processing for faded,
//! noisy, dusty old photos. Each stage is a pure function on a planar
//! floating-point image (`stages`); parameters adapt to what the photo
//! measures — its colour cast, its tonal range, its noise, how much of it
//! looks like dust (`analysis`).
//!
//! Pipeline: defect removal (dust and scratches found against directional
//! medians, filled from their surroundings and the lines crossing them) →
//! levels (yellowing removed, fading undone to the most likely original
//! tones) → tone (monochrome prints made grey or evenly toned) → edge-preserving denoising (luma bilateral, chroma
//! smoothing, strength from the noise measured after the levels) → gentle
//! sharpening (only on photos clean enough to take it).
//!
//! The photo is worked on in overlapping tiles (`tiles`), in parallel: the
//! memory it takes is a few tiles' worth whatever the photo's size, beyond
//! the decoded input and the output. Never touches the network or storage.

pub mod analysis;
pub mod defects;
pub mod planes;
pub mod quality;
pub mod stages;
pub mod tiles;
pub mod tone;
pub mod upscale;

use image::{ColorType, DynamicImage, GenericImageView, ImageBuffer, Luma, Rgb};
use rayon::prelude::*;

pub use planes::Planes;

/// What the engine measured and did, for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub defect_pixels: usize,
    pub noise_sigma: f32,
    /// Black and white points per channel.
    pub levels: [(f32, f32); 3],
    /// What was done to the photo's colour.
    pub tone: tone::Tone,
}

/// What the shop's configuration asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// A print toned on purpose (sepia) keeps an even tone, its yellowing
    /// removed (`restoration.keep_tone`); otherwise it comes back grey.
    pub keep_tone: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { keep_tone: true }
    }
}

/// Restores `image`, returning a photo of the same size and colour type
/// (8- and 16-bit grey and colour, with alpha kept; other types as 8-bit RGB).
pub fn restore(image: &DynamicImage) -> (DynamicImage, Report) {
    restore_with(image, Options::default())
}

/// As [`restore`], as `options` ask.
pub fn restore_with(image: &DynamicImage, options: Options) -> (DynamicImage, Report) {
    restore_in_tiles(image, tiles::TILE, options)
}

/// As [`restore_with`], with tiles of `tile` pixels a side.
pub fn restore_in_tiles(image: &DynamicImage, tile: u32, options: Options) -> (DynamicImage, Report) {
    let (width, height) = image.dimensions();
    let bands = tiles::bands(width, height, tile, tiles::HALO);
    let all: Vec<tiles::Tile> = bands.iter().flatten().copied().collect();
    let params = analysis::measure(image, &all, options.keep_tone);
    let mut out = DynamicImage::new(width, height, output_color(image.color()));
    let mut defect_pixels = 0;
    // Band by band: at most one band of restored tiles waits to be pasted.
    for band in &bands {
        let restored: Vec<(tiles::Tile, DynamicImage, usize)> = band
            .par_iter()
            .map(|tile| {
                let (mut planes, region) = tile.planes(image, true);
                let filled = restore_tile(&mut planes, &params, tile.core());
                (*tile, planes.to_image_like(&region), filled)
            })
            .collect();
        for (tile, region, filled) in restored {
            tiles::paste(&mut out, &tile, &region);
            defect_pixels += filled;
        }
    }
    let report = Report {
        defect_pixels,
        noise_sigma: params.noise_sigma,
        tone: params.tone,
        levels: params
            .levels
            .map(|l| l.map_or((0.0, 1.0), |l| (l.lo, l.lo + l.span))),
    };
    (out, report)
}

/// The defects the engine would fill in `image`, photo-wide (for measuring
/// its detection against known masks): row by row, `true` where filled.
pub fn defect_mask(image: &DynamicImage) -> Vec<bool> {
    let (width, height) = image.dimensions();
    let all: Vec<tiles::Tile> = tiles::bands(width, height, width.max(height).max(1), 0)
        .into_iter()
        .flatten()
        .collect();
    let params = analysis::measure(image, &all, true);
    let planes = Planes::from_image(image);
    if !params.remove_defects {
        return vec![false; planes.len()];
    }
    defects::find(&planes, params.defect_threshold)
}

/// Every stage, in order, on one tile; returns the defect pixels filled in its core.
fn restore_tile(planes: &mut Planes, params: &analysis::Params, core: stages::Rect) -> usize {
    // Dust first, on the photo as it came, where grain is faint next to it.
    let filled = if params.remove_defects {
        stages::fill_defects(planes, params.defect_threshold, core)
    } else {
        0
    };
    if params.aged {
        stages::apply_levels(planes, &params.levels);
        tone::apply(planes, params.tone);
        stages::denoise(planes, params.noise_sigma);
        stages::sharpen(planes, params.noise_sigma);
    }
    filled
}

/// The colour type [`Planes::to_image_like`] gives back for `input`.
fn output_color(input: ColorType) -> ColorType {
    match input {
        ColorType::L8
        | ColorType::La8
        | ColorType::L16
        | ColorType::La16
        | ColorType::Rgb16
        | ColorType::Rgba16
        | ColorType::Rgba8 => input,
        _ => ColorType::Rgb8,
    }
}

/// A grey or colour test image, for the engine's own tests.
pub fn synthetic(width: u32, height: u32, grey: bool) -> DynamicImage {
    if grey {
        DynamicImage::ImageLuma8(ImageBuffer::from_fn(width, height, |x, y| {
            Luma([(60 + (x * 120 / width.max(1)) + (y % 7)) as u8])
        }))
    } else {
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
            let v = (x * 160 / width.max(1)) as u8;
            Rgb([
                v.saturating_add(70),
                v.saturating_add(60),
                (y * 90 / height.max(1)) as u8 + 20,
            ])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_size_and_colour_type_and_an_aged_photo_changes() {
        for grey in [false, true] {
            let input = synthetic(97, 61, grey);
            let (output, _) = restore(&input);
            assert_eq!((output.width(), output.height()), (97, 61));
            assert_eq!(output.color(), input.color());
        }
        let aged = DynamicImage::ImageRgb8(quality::degrade(&quality::scene(97, 61), 2));
        let (output, _) = restore(&aged);
        assert_ne!(output.as_bytes(), aged.as_bytes());
    }

    /// Never worse: a clean photo (no grain, the photo's own strong colour
    /// and thin lines) is left as it came.
    #[test]
    fn a_clean_photo_comes_back_as_it_came() {
        let clean = DynamicImage::ImageRgb8(quality::scene(160, 120));
        let (output, report) = restore(&clean);
        assert_eq!(report.defect_pixels, 0);
        assert_eq!(output.as_bytes(), clean.as_bytes());
    }

    /// A grey scene, optionally sepia-toned (brown mid-tones, white paper).
    fn print(toned: bool) -> image::RgbImage {
        let mut scene = quality::scene(240, 160);
        for p in scene.pixels_mut() {
            let l = (p.0[0] as f32 + p.0[1] as f32 + p.0[2] as f32) / (3.0 * 255.0);
            let h = if toned { 4.0 * l * (1.0 - l) * 0.1 } else { 0.0 };
            let v = |x: f32| ((x).clamp(0.0, 1.0) * 255.0).round() as u8;
            p.0 = [v(l + h), v(l + 0.1 * h), v(l - 0.9 * h)];
        }
        scene
    }

    /// Mean R − B of the output's mid-tones, and mean |R − B| overall, of 1.
    fn warmth(image: &DynamicImage) -> (f32, f32) {
        let rgb = image.to_rgb8();
        let (mut mid, mut n, mut all) = (0.0, 0, 0.0);
        for p in rgb.pixels() {
            let [r, g, b] = p.0.map(|c| c as f32 / 255.0);
            let l = (r + g + b) / 3.0;
            all += (r - b).abs();
            if (0.3..0.7).contains(&l) {
                mid += r - b;
                n += 1;
            }
        }
        (mid / n.max(1) as f32, all / rgb.pixels().len() as f32)
    }

    #[test]
    fn a_yellowed_black_and_white_print_comes_back_neutral_grey() {
        let aged = DynamicImage::ImageRgb8(quality::degrade(&print(false), 3));
        assert!(warmth(&aged).1 > 0.05, "the ageing yellowed it");
        let (output, report) = restore(&aged);
        assert_eq!(report.tone, tone::Tone::Neutral);
        assert!(warmth(&output).1 < 0.005, "{:?}", warmth(&output));
    }

    #[test]
    fn a_sepia_print_keeps_an_even_sepia_unless_told_otherwise() {
        let aged = DynamicImage::ImageRgb8(quality::degrade(&print(true), 3));
        let (kept, report) = restore(&aged);
        assert!(matches!(report.tone, tone::Tone::Toned(_)), "{:?}", report.tone);
        let (mid, _) = warmth(&kept);
        assert!(mid > 0.02, "the mid-tones stay brown: {mid}");
        // Even: the same tone wherever the grey is the same.
        let rgb = kept.to_rgb8();
        let warm: Vec<f32> = rgb
            .pixels()
            .filter(|p| (115..140).contains(&((p.0[0] as u32 + p.0[1] as u32 + p.0[2] as u32) / 3)))
            .map(|p| (p.0[0] as f32 - p.0[2] as f32) / 255.0)
            .collect();
        let mean = warm.iter().sum::<f32>() / warm.len().max(1) as f32;
        let spread = (warm.iter().map(|w| (w - mean).powi(2)).sum::<f32>() / warm.len().max(1) as f32).sqrt();
        assert!(spread < 0.01, "an even tone: {spread}");
        let (grey, report) = restore_with(&aged, Options { keep_tone: false });
        assert_eq!(report.tone, tone::Tone::Neutral);
        assert!(warmth(&grey).1 < 0.005, "{:?}", warmth(&grey));
    }

    #[test]
    fn tiles_leave_no_seams() {
        let aged = DynamicImage::ImageRgb8(quality::degrade(&quality::scene(300, 200), 5));
        let (whole, a) = restore_in_tiles(&aged, 4096, Options::default());
        let (tiled, b) = restore_in_tiles(&aged, 64, Options::default());
        assert_eq!(
            (a.noise_sigma, a.levels),
            (b.noise_sigma, b.levels),
            "the same measurements"
        );
        // A defect is judged by its shape within a tile and its halo: a
        // long one crossing many small tiles may be judged a little
        // differently at their edges, never elsewhere.
        let off = whole
            .as_bytes()
            .iter()
            .zip(tiled.as_bytes())
            .filter(|(x, y)| x.abs_diff(**y) > 1)
            .count();
        let share = off as f64 / whole.as_bytes().len() as f64;
        assert!(share < 0.005, "{off} samples differ by more than a level");
        let counted = a.defect_pixels.abs_diff(b.defect_pixels) as f64 / a.defect_pixels.max(1) as f64;
        assert!(counted < 0.1, "{a:?} against {b:?}");
    }

    #[test]
    fn sixteen_bit_tones_are_not_rounded_to_eight_bits() {
        let input = DynamicImage::ImageLuma16(ImageBuffer::from_fn(300, 80, |x, _| {
            Luma([(10_000 + x * 97) as u16])
        }));
        let (output, _) = restore(&input);
        let values = output.as_luma16().expect("16-bit grey").as_raw();
        assert!(
            values.iter().any(|v| v % 257 != 0),
            "finer steps than 8 bits survive"
        );
    }

    #[test]
    fn sixteen_bit_input_stays_sixteen_bit() {
        let input = DynamicImage::ImageRgb16(ImageBuffer::from_fn(40, 30, |x, y| {
            Rgb([(x * 900) as u16, (y * 1200) as u16, 20_000])
        }));
        let (output, _) = restore(&input);
        assert_eq!(output.color(), image::ColorType::Rgb16);
        assert_eq!((output.width(), output.height()), (40, 30));
    }
}
