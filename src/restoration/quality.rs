//! Measuring restoration: a seeded "old photo" degradation of a clean
//! photo, and the PSNR and SSIM of a result against the clean original.
//! Used by the quality benchmark and the engine's tests.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, RgbImage};
use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

/// Ages a clean photo the way the shop's customers' photos are aged:
/// slight blur, faded to 25–80% contrast with a yellow cast, film grain and
/// noise (σ ≈ 12), a few 1–2 px scratches and dust specks, scratches of
/// 1–3 px at any angle and contrast, faint curved hairs and a crease, then
/// JPEG at quality 40. The same seed gives the same damage.
pub fn degrade(clean: &RgbImage, seed: u64) -> RgbImage {
    degrade_with_mask(clean, seed).0
}

/// As [`degrade`], with the defect mask: the pixels its scratches and dust
/// specks covered (before the JPEG smeared them), row by row.
pub fn degrade_with_mask(clean: &RgbImage, seed: u64) -> (RgbImage, Vec<bool>) {
    age(clean, seed, Wear::Worn)
}

/// How much damage the ageing adds beyond fading, cast, grain and JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wear {
    /// A few straight scratches and dust specks.
    Light,
    /// Also scratches at any angle and contrast, curled hairs and a crease:
    /// what customers' prints carry.
    Worn,
}

/// The ageing with the wear given, and its defect mask. [`Wear::Light`] is
/// [`Wear::Worn`] with the later damage left out: the same fade, cast,
/// grain, first scratches and specks for the same seed.
pub fn age(clean: &RgbImage, seed: u64, wear: Wear) -> (RgbImage, Vec<bool>) {
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
    let mut mask = vec![false; p.len()];
    for _ in 0..rng.random_range(2..5) {
        scratch(&mut p, &mut mask, &mut rng);
    }
    let specks = (p.len() / 6_000).clamp(20, 400);
    for _ in 0..specks {
        speck(&mut p, &mut mask, &mut rng);
    }
    // The damage an old print collects beyond the first few scratches, from
    // a stream of its own so that the rest of the ageing stays as it was:
    // scratches at any angle and contrast, hairs and a crease.
    if wear == Wear::Light {
        let aged = p.to_image_like(&DynamicImage::ImageRgb8(clean.clone())).to_rgb8();
        return (jpeg(&aged, 40), mask);
    }
    let mut more = StdRng::seed_from_u64(seed ^ 0x5C2A_7C4E_5DEF_EC75);
    let diagonal = ((p.width * p.width + p.height * p.height) as f32).sqrt();
    for _ in 0..more.random_range(2..4) {
        let angle = more.random_range(0.0..std::f32::consts::PI);
        let length = diagonal * more.random_range(0.3..0.8);
        let width = more.random_range(1.0f32..3.2);
        let amount = more.random_range(0.25f32..0.55) * if more.random_bool(0.6) { 1.0 } else { -1.0 };
        let path = curve(&mut more, p.width, p.height, angle, length, 0.0);
        stroke(&mut p, &mut mask, &path, width, amount);
    }
    for _ in 0..more.random_range(2..5) {
        let angle = more.random_range(0.0..std::f32::consts::TAU);
        let length = more.random_range(40.0f32..160.0);
        let amount = -more.random_range(0.12f32..0.25);
        let path = curve(&mut more, p.width, p.height, angle, length, 0.08);
        stroke(&mut p, &mut mask, &path, 1.0, amount);
    }
    let angle = more.random_range(0.0..std::f32::consts::PI);
    let length = diagonal * more.random_range(0.3..0.6);
    let amount = more.random_range(0.18f32..0.32);
    let path = curve(&mut more, p.width, p.height, angle, length, 0.01);
    stroke(&mut p, &mut mask, &path, 2.5, amount);
    let aged = p.to_image_like(&DynamicImage::ImageRgb8(clean.clone())).to_rgb8();
    (jpeg(&aged, 40), mask)
}

/// `image` through a JPEG at `quality` and back.
pub fn jpeg(image: &RgbImage, quality: u8) -> RgbImage {
    let mut out = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    if DynamicImage::ImageRgb8(image.clone())
        .write_with_encoder(encoder)
        .is_err()
    {
        return image.clone();
    }
    image::load_from_memory_with_format(&out.into_inner(), ImageFormat::Jpeg)
        .map_or_else(|_| image.clone(), |d| d.to_rgb8())
}

/// How visible the defects still are in `test`: the mean error (grey
/// levels of luma, against `clean`) inside `mask`, less the mean error in a
/// ring 2–5 px around it. A defect made invisible scores about 0: its
/// pixels are as right as their surroundings. `None` without a mask.
pub fn defect_visibility(clean: &RgbImage, test: &RgbImage, mask: &[bool]) -> Option<f64> {
    let (w, h) = (clean.width() as usize, clean.height() as usize);
    if !mask.contains(&true) {
        return None;
    }
    let luma = |p: &Rgb<u8>| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
    let near = dilate(mask, w, h, 1);
    let ring = dilate(mask, w, h, 5);
    let (mut inside, mut n_in, mut around, mut n_ring) = (0.0, 0usize, 0.0, 0usize);
    for (i, (a, b)) in clean.pixels().zip(test.pixels()).enumerate() {
        let error = (luma(a) - luma(b)).abs();
        if mask[i] {
            inside += error;
            n_in += 1;
        } else if ring[i] && !near[i] {
            around += error;
            n_ring += 1;
        }
    }
    Some(inside / n_in.max(1) as f64 - around / n_ring.max(1) as f64)
}

/// `mask` grown by `r` pixels (a square).
pub fn dilate(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut rows = vec![false; mask.len()];
    for y in 0..h {
        let row = &mask[y * w..(y + 1) * w];
        let mut last: Option<usize> = None;
        // Distance to the nearest set pixel along the row, both ways.
        let mut left = vec![usize::MAX; w];
        for x in 0..w {
            if row[x] {
                last = Some(x);
            }
            if let Some(l) = last {
                left[x] = x - l;
            }
        }
        last = None;
        for x in (0..w).rev() {
            if row[x] {
                last = Some(x);
            }
            let right = last.map_or(usize::MAX, |l| l - x);
            rows[y * w + x] = left[x].min(right) <= r;
        }
    }
    let mut out = vec![false; mask.len()];
    for x in 0..w {
        let mut last: Option<usize> = None;
        let mut up = vec![usize::MAX; h];
        for y in 0..h {
            if rows[y * w + x] {
                last = Some(y);
            }
            if let Some(l) = last {
                up[y] = y - l;
            }
        }
        last = None;
        for y in (0..h).rev() {
            if rows[y * w + x] {
                last = Some(y);
            }
            let down = last.map_or(usize::MAX, |l| l - y);
            out[y * w + x] = up[y].min(down) <= r;
        }
    }
    out
}

/// How well `found` matches the true defects `truth`: (precision, recall),
/// a found pixel counting as right when within 1 px of a true one, and a
/// true pixel as found when within 1 px of a found one (the fill widens
/// its mask by a pixel, and the JPEG smears the defects).
pub fn precision_recall(found: &[bool], truth: &[bool], w: usize, h: usize) -> (f64, f64) {
    let (truth_near, found_near) = (dilate(truth, w, h, 1), dilate(found, w, h, 1));
    let hits = found.iter().zip(&truth_near).filter(|(f, t)| **f && **t).count();
    let caught = truth.iter().zip(&found_near).filter(|(t, f)| **t && **f).count();
    let (n_found, n_true) = (
        found.iter().filter(|f| **f).count(),
        truth.iter().filter(|t| **t).count(),
    );
    (
        if n_found == 0 {
            1.0
        } else {
            hits as f64 / n_found as f64
        },
        if n_true == 0 {
            1.0
        } else {
            caught as f64 / n_true as f64
        },
    )
}

fn gaussian(rng: &mut impl Rng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
}

/// A thin bright or dark line across the photo, slightly slanted.
fn scratch(p: &mut super::Planes, mask: &mut [bool], rng: &mut impl Rng) {
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
                mask[y * p.width + xi as usize] = true;
            }
        }
    }
}

/// Points every half pixel along a path from a random start, turning by up
/// to `bend` radians a step (0: a straight line).
fn curve(rng: &mut impl Rng, w: usize, h: usize, angle: f32, length: f32, bend: f32) -> Vec<(f32, f32)> {
    let (mut x, mut y) = (rng.random_range(0.0..w as f32), rng.random_range(0.0..h as f32));
    let (mut angle, mut turn) = (angle, 0.0f32);
    let mut path = Vec::new();
    for _ in 0..(length * 2.0) as usize {
        path.push((x, y));
        if bend > 0.0 {
            turn = (turn + rng.random_range(-bend..bend) * 0.3).clamp(-bend, bend);
            angle += turn;
        }
        x += 0.5 * angle.cos();
        y += 0.5 * angle.sin();
    }
    path
}

/// Adds `amount` to every pixel within `width / 2` of `path`, once.
fn stroke(p: &mut super::Planes, mask: &mut [bool], path: &[(f32, f32)], width: f32, amount: f32) {
    let r = width / 2.0;
    let mut touched = Vec::new();
    for &(cx, cy) in path {
        let (x0, x1) = ((cx - r).floor() as isize, (cx + r).ceil() as isize);
        let (y0, y1) = ((cy - r).floor() as isize, (cy + r).ceil() as isize);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if x >= 0
                    && y >= 0
                    && (x as usize) < p.width
                    && (y as usize) < p.height
                    && dx * dx + dy * dy <= r * r + 0.25
                {
                    touched.push(y as usize * p.width + x as usize);
                }
            }
        }
    }
    touched.sort_unstable();
    touched.dedup();
    for i in touched {
        for ch in 0..3 {
            p.c[ch][i] = (p.c[ch][i] + amount).clamp(0.0, 1.0);
        }
        mask[i] = true;
    }
}

/// A dust speck: a dark or light dot of 1–2 px radius.
fn speck(p: &mut super::Planes, mask: &mut [bool], rng: &mut impl Rng) {
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
                mask[y as usize * p.width + x as usize] = true;
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
        let clean = scene(400, 300);
        let aged = degrade(&clean, 3);
        let (restored, _) = super::super::restore(&DynamicImage::ImageRgb8(aged.clone()));
        let restored = restored.to_rgb8();
        let (before, after) = (psnr(&clean, &aged), psnr(&clean, &restored));
        assert!(after > before, "PSNR {before:.2} → {after:.2}");
        let (before, after) = (ssim(&clean, &aged), ssim(&clean, &restored));
        assert!(after > before, "SSIM {before:.3} → {after:.3}");
    }
}
