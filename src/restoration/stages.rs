//! The engine's stages, each a pure function on [`Planes`].

use super::Planes;

/// Grey-world white balance: scales each channel so their means agree.
/// Gains are bounded so a photo that is truly one colour (a sunset, a
/// sepia print) is calmed, not inverted. Returns the gains applied.
pub fn remove_colour_cast(p: &mut Planes) -> [f32; 3] {
    if p.is_empty() {
        return [1.0; 3];
    }
    let means: Vec<f32> =
        p.c.iter()
            .map(|ch| (ch.iter().map(|&v| f64::from(v)).sum::<f64>() / ch.len() as f64) as f32)
            .collect();
    let grey = (means[0] + means[1] + means[2]) / 3.0;
    let mut gains = [1.0f32; 3];
    for (ch, gain) in gains.iter_mut().enumerate() {
        if means[ch] > 1e-4 {
            *gain = (grey / means[ch]).clamp(0.6, 1.6);
        }
    }
    for (ch, &gain) in gains.iter().enumerate() {
        if (gain - 1.0).abs() > 1e-3 {
            p.c[ch].iter_mut().for_each(|v| *v = (*v * gain).min(1.0));
        }
    }
    gains
}

/// Immerkær's fast noise estimate (σ in 0..=1 units) on the luminance.
pub fn estimate_noise(p: &Planes) -> f32 {
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

/// Edge-preserving smoothing: a 5×5 bilateral filter whose range weights
/// come from the luminance (so colour channels move together), with its
/// strength set by the measured noise. Clean photos are left alone.
pub fn denoise(p: &mut Planes, sigma: f32) {
    let (w, h) = (p.width, p.height);
    if sigma < 1.5 / 255.0 || w < 5 || h < 5 {
        return;
    }
    let luma = p.luma();
    let range = 2.0 * (2.5 * sigma).powi(2);
    let spatial: Vec<f32> = (-2i32..=2)
        .flat_map(|dy| (-2i32..=2).map(move |dx| (-((dx * dx + dy * dy) as f32) / (2.0 * 1.5 * 1.5)).exp()))
        .collect();
    let src = p.c.clone();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let centre = luma[i];
            let (mut acc, mut total) = ([0.0f32; 3], 0.0f32);
            for (k, (dy, dx)) in (-2isize..=2)
                .flat_map(|dy| (-2isize..=2).map(move |dx| (dy, dx)))
                .enumerate()
            {
                let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                let j = yy * w + xx;
                let d = luma[j] - centre;
                let weight = spatial[k] * (-(d * d) / range).exp();
                for (a, plane) in acc.iter_mut().zip(&src) {
                    *a += weight * plane[j];
                }
                total += weight;
            }
            for (plane, a) in p.c.iter_mut().zip(acc) {
                plane[i] = a / total;
            }
        }
    }
}

/// Levels from the luminance's 0.5th and 99.5th percentiles, applied to all
/// channels alike (so the colour balance holds). A photo that already spans
/// the range is left as it is; the stretch is capped so noise is not blown
/// up. Returns the black and white points used.
pub fn restore_tone(p: &mut Planes) -> (f32, f32) {
    if p.is_empty() {
        return (0.0, 1.0);
    }
    let mut histogram = [0usize; 1024];
    for v in p.luma() {
        histogram[(v.clamp(0.0, 1.0) * 1023.0) as usize] += 1;
    }
    let percentile = |q: f64| {
        let target = (q * p.len() as f64) as usize;
        let mut seen = 0;
        for (bin, count) in histogram.iter().enumerate() {
            seen += count;
            if seen > target {
                return bin as f32 / 1023.0;
            }
        }
        1.0
    };
    let (mut lo, mut hi) = (percentile(0.005), percentile(0.995));
    if hi - lo >= 0.92 || hi <= lo {
        return (0.0, 1.0);
    }
    // At most a 2.5× stretch, centred on the photo's own range.
    let span = (hi - lo).max(1.0 / 2.5);
    let mid = (lo + hi) / 2.0;
    lo = (mid - span / 2.0).max(0.0);
    hi = (lo + span).min(1.0);
    let scale = 1.0 / (hi - lo);
    for ch in &mut p.c {
        ch.iter_mut()
            .for_each(|v| *v = ((*v - lo) * scale).clamp(0.0, 1.0));
    }
    (lo, hi)
}

/// Separable Gaussian blur (σ = 1, radius 3), edges clamped.
fn gaussian(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    const K: [f32; 7] = [0.00443, 0.05400, 0.24203, 0.39894, 0.24203, 0.05400, 0.00443];
    let mut tmp = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = (0..7)
                .map(|k| K[k] * src[y * w + (x as isize + k as isize - 3).clamp(0, w as isize - 1) as usize])
                .sum();
        }
    }
    let mut out = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..7)
                .map(|k| K[k] * tmp[(y as isize + k as isize - 3).clamp(0, h as isize - 1) as usize * w + x])
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
    let amount = if sigma > 6.0 / 255.0 { 0.2 } else { 0.45 };
    for ch in 0..3 {
        let blurred = gaussian(&p.c[ch], p.width, p.height);
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
    fn a_yellow_cast_is_removed() {
        let mut p = flat(16, 16, [0.6, 0.55, 0.35]);
        remove_colour_cast(&mut p);
        let (r, g, b) = (p.c[0][0], p.c[1][0], p.c[2][0]);
        assert!((r - b).abs() < 0.02 && (g - b).abs() < 0.02, "{r} {g} {b}");
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
    fn a_faded_photo_is_stretched_and_a_full_range_one_kept() {
        let mut p = Planes::new(100, 1);
        for ch in 0..3 {
            for (i, v) in p.c[ch].iter_mut().enumerate() {
                *v = 0.3 + 0.4 * i as f32 / 99.0;
            }
        }
        let (lo, hi) = restore_tone(&mut p);
        assert!(lo > 0.2 && hi < 0.8, "{lo} {hi}");
        assert!(p.c[0][0] < 0.1 && p.c[0][99] > 0.9);

        let mut full = Planes::new(100, 1);
        full.c[0]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 / 99.0);
        full.c[1] = full.c[0].clone();
        full.c[2] = full.c[0].clone();
        let before = full.clone();
        assert_eq!(restore_tone(&mut full), (0.0, 1.0));
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
