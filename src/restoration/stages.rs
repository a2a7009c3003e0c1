//! The engine's stages, each a pure function on [`Planes`].

use super::Planes;

/// Noise σ (0..=1 units) as seen in the photo's flattest places: the
/// luminance minus its blur, its standard deviation per 8×8 block, and the
/// 10th percentile of those. Unlike a Laplacian estimate this also sees the
/// blotchy, mid-frequency noise that grain leaves after JPEG compression.
pub fn estimate_noise(p: &Planes) -> f32 {
    let (w, h) = (p.width, p.height);
    if w < 16 || h < 16 {
        return laplacian_noise(p);
    }
    let luma = p.luma();
    let smooth = gaussian_sigma(&luma, w, h, 2.0);
    let mut deviations = Vec::with_capacity((w / 8) * (h / 8));
    for by in 0..h / 8 {
        for bx in 0..w / 8 {
            let (mut sum, mut sq) = (0.0f32, 0.0f32);
            for y in by * 8..by * 8 + 8 {
                for x in bx * 8..bx * 8 + 8 {
                    let d = luma[y * w + x] - smooth[y * w + x];
                    sum += d;
                    sq += d * d;
                }
            }
            let mean = sum / 64.0;
            deviations.push((sq / 64.0 - mean * mean).max(0.0).sqrt());
        }
    }
    let k = deviations.len() / 10;
    let (_, tenth, _) = deviations.select_nth_unstable_by(k, f32::total_cmp);
    // The residual of a σ=2 blur keeps about 80% of white noise's σ.
    *tenth / 0.8
}

/// Immerkær's fast noise estimate (σ in 0..=1 units) on the luminance.
fn laplacian_noise(p: &Planes) -> f32 {
    let (w, h) = (p.width, p.height);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let l = p.luma();
    let mut sum = 0.0f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let at = |dx: isize, dy: isize| l[(y as isize + dy) as usize * w + (x as isize + dx) as usize];
            let v = at(-1, -1) - 2.0 * at(0, -1) + at(1, -1) - 2.0 * at(-1, 0) + 4.0 * at(0, 0)
                - 2.0 * at(1, 0)
                + at(-1, 1)
                - 2.0 * at(0, 1)
                + at(1, 1);
            sum += f64::from(v.abs());
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    ((std::f64::consts::PI / 2.0).sqrt() * sum / (6.0 * n)) as f32
}

/// Median of a `(2r+1)²` window around every pixel, edges clamped.
fn median_filter(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    let mut window = Vec::with_capacity((2 * r + 1) * (2 * r + 1));
    for y in 0..h {
        for x in 0..w {
            window.clear();
            for yy in y.saturating_sub(r)..=(y + r).min(h - 1) {
                window.extend_from_slice(&src[yy * w + x.saturating_sub(r)..=yy * w + (x + r).min(w - 1)]);
            }
            let mid = window.len() / 2;
            let (_, m, _) = window.select_nth_unstable_by(mid, f32::total_cmp);
            out[y * w + x] = *m;
        }
    }
    out
}

/// Finds dust, specks and thin scratches (pixels far from their 5×5
/// median, beyond what the noise explains), widens the mask by one pixel,
/// and fills each masked pixel with the median of its unmasked neighbours.
/// Returns the number of pixels filled.
pub fn remove_defects(p: &mut Planes) -> usize {
    let (w, h) = (p.width, p.height);
    if w < 5 || h < 5 {
        return 0;
    }
    let luma = p.luma();
    let median = median_filter(&luma, w, h, 2);
    let sigma = estimate_noise(p);
    let threshold = (5.0 * sigma).max(40.0 / 255.0);
    let seeds: Vec<bool> = luma
        .iter()
        .zip(&median)
        .map(|(l, m)| (l - m).abs() > threshold)
        .collect();
    let seed_count = seeds.iter().filter(|s| **s).count();
    // A photo where "defects" are everywhere is texture, not dust.
    if seed_count == 0 || seed_count > p.len() / 20 {
        return 0;
    }
    let mut mask = vec![false; seeds.len()];
    for y in 0..h {
        for x in 0..w {
            if seeds[y * w + x] {
                for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for xx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        mask[yy * w + xx] = true;
                    }
                }
            }
        }
    }
    let mut filled = 0;
    let mut window = Vec::with_capacity(49);
    for ch in 0..3 {
        let src = p.c[ch].clone();
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if !mask[i] {
                    continue;
                }
                window.clear();
                for r in [2usize, 3] {
                    for yy in y.saturating_sub(r)..=(y + r).min(h - 1) {
                        for xx in x.saturating_sub(r)..=(x + r).min(w - 1) {
                            if !mask[yy * w + xx] {
                                window.push(src[yy * w + xx]);
                            }
                        }
                    }
                    if window.len() >= 4 {
                        break;
                    }
                    window.clear();
                }
                let value = if window.is_empty() {
                    median[i]
                } else {
                    let mid = window.len() / 2;
                    *window.select_nth_unstable_by(mid, f32::total_cmp).1
                };
                p.c[ch][i] = value;
                if ch == 0 {
                    filled += 1;
                }
            }
        }
    }
    filled
}

/// Edge-preserving denoising in a luma/chroma split: the luminance gets a
/// 7×7 bilateral filter whose range tolerance follows the measured noise;
/// the colour differences, where old film and JPEG leave mostly blotches,
/// are smoothed more broadly. Clean photos are left alone.
pub fn denoise(p: &mut Planes, sigma: f32) {
    let (w, h) = (p.width, p.height);
    if sigma < 1.0 / 255.0 || w < 7 || h < 7 {
        return;
    }
    let luma = p.luma();
    let cb: Vec<f32> = (0..p.len()).map(|i| p.c[2][i] - luma[i]).collect();
    let cr: Vec<f32> = (0..p.len()).map(|i| p.c[0][i] - luma[i]).collect();
    let y = bilateral(&luma, w, h, 3, 2.0, 2.8 * sigma);
    let chroma_sigma = (1.0 + 60.0 * sigma).min(3.0);
    let cb = gaussian_sigma(&cb, w, h, chroma_sigma);
    let cr = gaussian_sigma(&cr, w, h, chroma_sigma);
    for i in 0..p.len() {
        let r = y[i] + cr[i];
        let b = y[i] + cb[i];
        let g = (y[i] - 0.299 * r - 0.114 * b) / 0.587;
        p.c[0][i] = r.clamp(0.0, 1.0);
        p.c[1][i] = g.clamp(0.0, 1.0);
        p.c[2][i] = b.clamp(0.0, 1.0);
    }
}

/// A bilateral filter with a lookup table for the range weights.
fn bilateral(
    src: &[f32],
    w: usize,
    h: usize,
    radius: usize,
    spatial_sigma: f32,
    range_sigma: f32,
) -> Vec<f32> {
    const BINS: usize = 512;
    const SPAN: f32 = 9.0; // weights below e^-9 are dropped
    let scale = BINS as f32 / SPAN;
    let lut: Vec<f32> = (0..BINS).map(|i| (-(i as f32) / scale).exp()).collect();
    let inv = 1.0 / (2.0 * range_sigma * range_sigma);
    let r = radius as isize;
    let taps: Vec<(isize, isize, f32)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .map(|(dx, dy)| {
            (
                dx,
                dy,
                (-((dx * dx + dy * dy) as f32) / (2.0 * spatial_sigma * spatial_sigma)).exp(),
            )
        })
        .collect();
    let mut out = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            let centre = src[y * w + x];
            let (mut acc, mut total) = (0.0f32, 0.0f32);
            for &(dx, dy, spatial) in &taps {
                let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                let v = src[yy * w + xx];
                let d = v - centre;
                let bin = (d * d * inv * scale) as usize;
                if bin < BINS {
                    let weight = spatial * lut[bin];
                    acc += weight * v;
                    total += weight;
                }
            }
            out[y * w + x] = acc / total;
        }
    }
    out
}

/// Per-channel levels from each channel's 0.5th and 99.5th percentiles: a
/// faded print's washed-out range and its colour cast are undone together
/// (each channel faded and tinted on its own). A channel that already spans
/// its range is left alone, and no channel is stretched more than 4×, so
/// noise is not blown up. Returns the black and white points of each channel.
pub fn stretch_channels(p: &mut Planes) -> [(f32, f32); 3] {
    let mut points = [(0.0, 1.0); 3];
    if p.is_empty() {
        return points;
    }
    for (ch, point) in points.iter_mut().enumerate() {
        let (lo, hi) = percentiles(&p.c[ch], 0.005, 0.995);
        if hi - lo >= 0.92 || hi <= lo {
            continue;
        }
        let span = (hi - lo).max(0.25);
        let lo = lo.min(1.0 - span).max(0.0);
        // Onto 5%..85%, where most photographs keep their tones: stretching
        // a faded print to pure black and white overshoots more often than not.
        let scale = (TONE_TOP - TONE_BOTTOM) / span;
        p.c[ch]
            .iter_mut()
            .for_each(|v| *v = (TONE_BOTTOM + (*v - lo) * scale).clamp(0.0, 1.0));
        *point = (lo, lo + span);
    }
    points
}

const TONE_BOTTOM: f32 = 0.05;
const TONE_TOP: f32 = 0.85;

fn percentiles(values: &[f32], low: f64, high: f64) -> (f32, f32) {
    let mut histogram = [0usize; 1024];
    for v in values {
        histogram[(v.clamp(0.0, 1.0) * 1023.0) as usize] += 1;
    }
    let at = |q: f64| {
        let target = (q * values.len() as f64) as usize;
        let mut seen = 0;
        for (bin, count) in histogram.iter().enumerate() {
            seen += count;
            if seen > target {
                return bin as f32 / 1023.0;
            }
        }
        1.0
    };
    (at(low), at(high))
}

/// Separable Gaussian blur of any σ, edges clamped.
pub(crate) fn gaussian_sigma(src: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let radius = (sigma * 3.0).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.into_iter().map(|k| k / total).collect();
    let mut tmp = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    g * src[y * w + (x as isize + k as isize - radius).clamp(0, w as isize - 1) as usize]
                })
                .sum();
        }
    }
    let mut out = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    g * tmp[(y as isize + k as isize - radius).clamp(0, h as isize - 1) as usize * w + x]
                })
                .sum();
        }
    }
    out
}

/// Unsharp mask, gentler on noisy photos.
pub fn sharpen(p: &mut Planes, sigma: f32) {
    if p.width < 3 || p.height < 3 {
        return;
    }
    // Sharpening noise only makes more of it.
    let amount = if sigma > 4.0 / 255.0 { return } else { 0.35 };
    for ch in 0..3 {
        let blurred = gaussian_sigma(&p.c[ch], p.width, p.height, 1.0);
        for (v, b) in p.c[ch].iter_mut().zip(blurred) {
            *v = (*v + amount * (*v - b)).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: usize, h: usize, rgb: [f32; 3]) -> Planes {
        let mut p = Planes::new(w, h);
        for (plane, value) in p.c.iter_mut().zip(rgb) {
            plane.iter_mut().for_each(|v| *v = value);
        }
        p
    }

    #[test]
    fn noise_is_measured_and_reduced() {
        let mut p = flat(64, 64, [0.5, 0.5, 0.5]);
        let mut seed = 7u32;
        for i in 0..p.len() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = ((seed >> 16) % 41) as f32 / 255.0 - 20.0 / 255.0;
            for ch in 0..3 {
                p.c[ch][i] += n;
            }
        }
        let before = estimate_noise(&p);
        assert!(before > 3.0 / 255.0, "{before}");
        denoise(&mut p, before);
        assert!(estimate_noise(&p) < before / 2.0);
        assert!(estimate_noise(&flat(16, 16, [0.3; 3])) < 1e-6);
    }

    #[test]
    fn dust_and_a_scratch_are_filled() {
        let mut p = flat(40, 40, [0.4, 0.4, 0.4]);
        for y in 5..35 {
            p.c.iter_mut().for_each(|ch| ch[y * 40 + 20] = 0.95);
        }
        p.c.iter_mut().for_each(|ch| ch[10 * 40 + 10] = 0.0);
        let filled = remove_defects(&mut p);
        assert!(filled >= 31, "{filled}");
        assert!(p.c[0].iter().all(|v| (v - 0.4).abs() < 0.01));
    }

    #[test]
    fn a_faded_tinted_photo_is_stretched_per_channel_and_a_full_range_one_kept() {
        let mut p = Planes::new(100, 1);
        for (ch, (offset, span)) in [(0.3, 0.4), (0.28, 0.36), (0.2, 0.3)].into_iter().enumerate() {
            for (i, v) in p.c[ch].iter_mut().enumerate() {
                *v = offset + span * i as f32 / 99.0;
            }
        }
        stretch_channels(&mut p);
        for ch in 0..3 {
            assert!((p.c[ch][0] - TONE_BOTTOM).abs() < 0.02, "{}", p.c[ch][0]);
            assert!((p.c[ch][99] - TONE_TOP).abs() < 0.02, "{}", p.c[ch][99]);
        }

        let mut full = Planes::new(100, 1);
        for ch in 0..3 {
            full.c[ch]
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32 / 99.0);
        }
        let before = full.clone();
        assert_eq!(stretch_channels(&mut full), [(0.0, 1.0); 3]);
        assert_eq!(full, before);
    }

    #[test]
    fn sharpening_raises_edge_contrast() {
        let mut p = Planes::new(20, 20);
        for ch in 0..3 {
            for y in 0..20 {
                for x in 0..20 {
                    p.c[ch][y * 20 + x] = if x < 10 { 0.3 } else { 0.7 };
                }
            }
        }
        sharpen(&mut p, 0.0);
        assert!(p.c[0][5 * 20 + 9] < 0.3 && p.c[0][5 * 20 + 10] > 0.7);
    }
}
