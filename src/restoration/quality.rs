//! Measuring restoration: a seeded "old photo" degradation of a clean
//! photo, and the PSNR and SSIM of a result against the clean original.
//! Used by the quality benchmark and the engine's tests.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, RgbImage};
use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

/// Ages a clean photo the way the shop's customers' photos are aged:
/// slight blur, faded to 25–80% contrast with a yellow cast, film grain and
/// noise (σ ≈ 12), a few 1–2 px scratches and dust specks, then JPEG at
/// quality 40. The same seed gives the same damage.
pub fn degrade(clean: &RgbImage, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let (w, h) = clean.dimensions();
    let mut p = super::Planes::from_image(&DynamicImage::ImageRgb8(clean.clone()));
    for ch in 0..3 {
        p.c[ch] = super::stages::gaussian_sigma(&p.c[ch], w as usize, h as usize, 0.8);
    }
    let contrast: f32 = rng.random_range(0.25..0.8);
    let lift = (1.0 - contrast) * rng.random_range(0.45..0.7);
    let cast = [1.0f32, 0.93, 0.72];
    let grain = super::stages::gaussian_sigma(
        &(0..p.len()).map(|_| gaussian(&mut rng) * 0.6).collect::<Vec<_>>(),
        w as usize,
        h as usize,
        1.0,
    );
    for (i, g) in grain.iter().enumerate() {
        for (plane, tint) in p.c.iter_mut().zip(cast) {
            let v = (lift + contrast * plane[i]) * tint + 0.05 * (1.0 - tint);
            plane[i] = v + (g * 20.0 + gaussian(&mut rng) * 12.0) / 255.0;
        }
    }
    for _ in 0..rng.random_range(2..5) {
        scratch(&mut p, &mut rng);
    }
    let specks = (p.len() / 6_000).clamp(20, 400);
    for _ in 0..specks {
        speck(&mut p, &mut rng);
    }
    let aged = p.to_image_like(&DynamicImage::ImageRgb8(clean.clone())).to_rgb8();
    let mut jpeg = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 40);
    if DynamicImage::ImageRgb8(aged.clone())
        .write_with_encoder(encoder)
        .is_err()
    {
        return aged;
    }
    image::load_from_memory_with_format(&jpeg.into_inner(), ImageFormat::Jpeg).map_or(aged, |d| d.to_rgb8())
}

fn gaussian(rng: &mut impl Rng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
}

/// A thin bright or dark line across the photo, slightly slanted.
fn scratch(p: &mut super::Planes, rng: &mut impl Rng) {
    let (w, h) = (p.width as f32, p.height as f32);
    let value = if rng.random_bool(0.7) { 0.93 } else { 0.08 };
    let width = rng.random_range(1i64..=2) as isize;
    let (x0, slope) = (rng.random_range(0.0..w), rng.random_range(-0.15f32..0.15));
    let (y0, y1) = (rng.random_range(0.0..h * 0.5), rng.random_range(h * 0.5..h));
    for y in y0 as usize..y1 as usize {
        let x = x0 + slope * (y as f32 - y0);
        for dx in 0..width {
            let xi = x as isize + dx;
            if xi >= 0 && (xi as usize) < p.width {
                for ch in 0..3 {
                    p.c[ch][y * p.width + xi as usize] = value;
                }
            }
        }
    }
}

/// A dust speck: a dark or light dot of 1–2 px radius.
fn speck(p: &mut super::Planes, rng: &mut impl Rng) {
    let (cx, cy) = (
        rng.random_range(0..p.width) as isize,
        rng.random_range(0..p.height) as isize,
    );
    let r = rng.random_range(1i64..=2) as isize;
    let value = if rng.random_bool(0.5) { 0.05 } else { 0.95 };
    for y in cy - r..=cy + r {
        for x in cx - r..=cx + r {
            if x >= 0
                && y >= 0
                && (x as usize) < p.width
                && (y as usize) < p.height
                && (x - cx).pow(2) + (y - cy).pow(2) <= r * r
            {
                for ch in 0..3 {
                    p.c[ch][y as usize * p.width + x as usize] = value;
                }
            }
        }
    }
}

/// Peak signal-to-noise ratio of `test` against `reference`, in dB (8-bit RGB).
pub fn psnr(reference: &RgbImage, test: &RgbImage) -> f64 {
    let mse = reference
        .as_raw()
        .iter()
        .zip(test.as_raw())
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / reference.as_raw().len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Structural similarity of the luminances (Gaussian window, σ = 1.5), 0..=1.
pub fn ssim(reference: &RgbImage, test: &RgbImage) -> f64 {
    let (w, h) = (reference.width() as usize, reference.height() as usize);
    let luma = |img: &RgbImage| -> Vec<f32> {
        img.pixels()
            .map(|Rgb([r, g, b])| 0.299 * f32::from(*r) + 0.587 * f32::from(*g) + 0.114 * f32::from(*b))
            .collect()
    };
    let (x, y) = (luma(reference), luma(test));
    let product = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<_>>();
    let (mx, my) = (
        super::stages::gaussian_sigma(&x, w, h, 1.5),
        super::stages::gaussian_sigma(&y, w, h, 1.5),
    );
    let (sxx, syy, sxy) = (
        super::stages::gaussian_sigma(&product(&x, &x), w, h, 1.5),
        super::stages::gaussian_sigma(&product(&y, &y), w, h, 1.5),
        super::stages::gaussian_sigma(&product(&x, &y), w, h, 1.5),
    );
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let mut total = 0.0f64;
    for i in 0..x.len() {
        let (mx, my) = (f64::from(mx[i]), f64::from(my[i]));
        let vx = f64::from(sxx[i]) - mx * mx;
        let vy = f64::from(syy[i]) - my * my;
        let cov = f64::from(sxy[i]) - mx * my;
        total += ((2.0 * mx * my + c1) * (2.0 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }
    total / x.len().max(1) as f64
}

/// A clean test scene with edges, gradients and texture, for the engine's tests.
pub fn scene(width: u32, height: u32) -> RgbImage {
    ImageBuffer::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let disc = ((fx - 0.5).powi(2) + (fy - 0.45).powi(2)).sqrt() < 0.25;
        let stripes = ((x / 6) % 2 == 0) as u8 * 30;
        let base = if disc {
            [200u8, 150, 120]
        } else {
            [
                (40.0 + 150.0 * fx) as u8,
                (60.0 + 120.0 * fy) as u8,
                (70.0 + 60.0 * (fx + fy)) as u8,
            ]
        };
        Rgb([
            base[0].saturating_add(stripes / 2),
            base[1],
            base[2].saturating_sub(stripes / 3),
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degradation_is_seeded_and_hurts() {
        let clean = scene(160, 120);
        let a = degrade(&clean, 7);
        assert_eq!(a, degrade(&clean, 7));
        assert_ne!(a, degrade(&clean, 8));
        assert!(psnr(&clean, &a) < 25.0);
        assert!(ssim(&clean, &a) < 0.9);
        assert!(ssim(&clean, &clean) > 0.999);
        assert!(psnr(&clean, &clean).is_infinite());
    }

    #[test]
    fn the_engine_improves_a_degraded_scene() {
        let clean = scene(200, 150);
        let aged = degrade(&clean, 3);
        let (restored, _) = super::super::restore(&DynamicImage::ImageRgb8(aged.clone()));
        let restored = restored.to_rgb8();
        let (before, after) = (psnr(&clean, &aged), psnr(&clean, &restored));
        assert!(after > before, "PSNR {before:.2} → {after:.2}");
        let (before, after) = (ssim(&clean, &aged), ssim(&clean, &restored));
        assert!(after > before, "SSIM {before:.3} → {after:.3}");
    }
}
