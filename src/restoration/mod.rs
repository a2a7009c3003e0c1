//! The embedded restoration engine: classical image processing for faded,
//! noisy, dusty old photos. Each stage is a pure function on a planar
//! floating-point image; parameters adapt to what the photo measures (its
//! colour cast, its tonal range, its noise).
//!
//! Pipeline: defect removal (dust and scratches found against a median,
//! filled from their surroundings) → per-channel levels (undoing fading and
//! colour cast together) → edge-preserving denoising (luma bilateral, chroma
//! smoothing, strength from the noise measured after the stretch) → gentle
//! sharpening (only on photos clean enough to take it).

pub mod planes;
pub mod quality;
pub mod stages;

use image::{DynamicImage, ImageBuffer, Luma, Rgb};

pub use planes::Planes;

/// What the engine measured and did, for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub defect_pixels: usize,
    pub noise_sigma: f32,
    /// Black and white points per channel.
    pub levels: [(f32, f32); 3],
}

/// Restores `image`, returning a photo of the same size and colour type.
pub fn restore(image: &DynamicImage) -> (DynamicImage, Report) {
    let mut planes = Planes::from_image(image);
    let mut report = Report {
        defect_pixels: stages::remove_defects(&mut planes),
        ..Report::default()
    };
    report.levels = stages::stretch_channels(&mut planes);
    report.noise_sigma = stages::estimate_noise(&planes);
    stages::denoise(&mut planes, report.noise_sigma);
    stages::sharpen(&mut planes, report.noise_sigma);
    (planes.to_image_like(image), report)
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
    fn output_keeps_size_and_colour_type_and_differs_from_input() {
        for grey in [false, true] {
            let input = synthetic(97, 61, grey);
            let (output, _) = restore(&input);
            assert_eq!((output.width(), output.height()), (97, 61));
            assert_eq!(output.color(), input.color());
            assert_ne!(output.as_bytes(), input.as_bytes());
        }
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
