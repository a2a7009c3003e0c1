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
    noise_from_deviations(block_deviations(&luma, w, h, Rect::all(w, h)))
}

/// A rectangle of a plane: the core of a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Rect {
    pub fn all(width: usize, height: usize) -> Self {
        Self {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    pub(crate) fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x && y >= self.y && x < self.x + self.width && y < self.y + self.height
    }
}

/// Standard deviations of `luma` minus its σ=2 blur, per 8×8 block of `core`.
pub fn block_deviations(luma: &[f32], w: usize, h: usize, core: Rect) -> Vec<f32> {
    let smooth = gaussian_sigma(luma, w, h, 2.0);
    let mut deviations = Vec::with_capacity((core.width / 8) * (core.height / 8));
    for by in 0..core.height / 8 {
        for bx in 0..core.width / 8 {
            let (mut sum, mut sq) = (0.0f32, 0.0f32);
            for y in core.y + by * 8..core.y + by * 8 + 8 {
                for x in core.x + bx * 8..core.x + bx * 8 + 8 {
                    let d = luma[y * w + x] - smooth[y * w + x];
                    sum += d;
                    sq += d * d;
                }
            }
            let mean = sum / 64.0;
            deviations.push((sq / 64.0 - mean * mean).max(0.0).sqrt());
        }
    }
    deviations
}

/// σ from block deviations: their 10th percentile (the flattest places).
pub fn noise_from_deviations(mut deviations: Vec<f32>) -> f32 {
    if deviations.is_empty() {
        return 0.0;
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
pub(crate) fn median_filter(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
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

/// How far from its 5×5 median a pixel must be to count as dust or a
/// scratch: beyond what the noise explains, and never under 40/255.
pub fn defect_threshold(sigma: f32) -> f32 {
    (5.0 * sigma).max(40.0 / 255.0)
}

/// Share of `core` pixels over `threshold` from their 5×5 median, as a
/// histogram of the distances (for deciding, photo-wide, whether the
/// "defects" are dust or texture).
pub fn defect_distances(luma: &[f32], w: usize, h: usize, core: Rect) -> Vec<u64> {
    let median = median_filter(luma, w, h, 2);
    let mut histogram = vec![0u64; BINS];
    for y in core.y..core.y + core.height {
        for x in core.x..core.x + core.width {
            let d = (luma[y * w + x] - median[y * w + x]).abs();
            histogram[((d * (BINS - 1) as f32) as usize).min(BINS - 1)] += 1;
        }
    }
    histogram
}

/// Finds dust, specks, scratches and hairs and rebuilds them from their
/// surroundings (`defects`). Returns the number of pixels filled inside
/// `core`.
pub fn fill_defects(p: &mut Planes, threshold: f32, core: Rect) -> usize {
    let mask = super::defects::find(p, threshold);
    super::defects::fill(p, &mask, core)
}

/// [`fill_defects`] on a whole photo, with the threshold from its noise and
/// nothing done where "defects" are everywhere (texture, not dust).
pub fn remove_defects(p: &mut Planes) -> usize {
    let (w, h) = (p.width, p.height);
    if w < 5 || h < 5 {
        return 0;
    }
    let threshold = defect_threshold(estimate_noise(p));
    let distances = defect_distances(&p.luma(), w, h, Rect::all(w, h));
    if !dust_not_texture(&distances, threshold, p.len()) {
        return 0;
    }
    fill_defects(p, threshold, Rect::all(w, h))
}

/// Whether the pixels past `threshold` are few enough (at most 1 in 20) to
/// be dust and scratches rather than the photo's own texture.
pub fn dust_not_texture(distances: &[u64], threshold: f32, pixels: usize) -> bool {
    let from = ((threshold * (BINS - 1) as f32) as usize + 1).min(distances.len());
    let seeds: u64 = distances[from..].iter().sum();
    seeds > 0 && seeds as usize <= pixels / 20
}

/// Edge-preserving denoising in a luma/chroma split: the luminance gets
/// non-local means whose strength follows the measured noise;
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
    let y = non_local_means(&luma, w, h, sigma, NLM_SEARCH, NLM_PATCH, NLM_STRENGTH);
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

/// Non-local means' search radius (offsets compared), patch radius, and
/// strength (h = strength × σ).
const NLM_SEARCH: usize = 4;
const NLM_PATCH: usize = 2;
const NLM_STRENGTH: f32 = 2.0;

/// Non-local means (Buades, Coll and Morel), computed offset by offset with
/// box sums (Darbon et al.) so the cost is linear in the pixels: every pixel
/// becomes the average of the pixels within `search` whose `(2·patch+1)²`
/// neighbourhoods look like its own, weighted by `exp(-max(d² − 2σ², 0) / h²)`
/// with `h = strength·σ`. It keeps edges and fine texture that a bilateral
/// filter rounds off.
pub fn non_local_means(
    src: &[f32],
    w: usize,
    h: usize,
    sigma: f32,
    search: usize,
    patch: usize,
    strength: f32,
) -> Vec<f32> {
    const LUT_BINS: usize = 1024;
    const LUT_SPAN: f32 = 8.0; // weights below e^-8 are dropped
    let lut: Vec<f32> = (0..LUT_BINS)
        .map(|i| (-(i as f32) * LUT_SPAN / LUT_BINS as f32).exp())
        .collect();
    let n = w * h;
    let inv_h2 = 1.0 / (strength * sigma).powi(2).max(1e-12);
    let floor = 2.0 * sigma * sigma;
    let area = ((2 * patch + 1) * (2 * patch + 1)) as f32;
    let scale = inv_h2 / area * LUT_BINS as f32 / LUT_SPAN;
    let (mut num, mut den, mut best) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let (mut diff, mut rows, mut sums) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let s = search as isize;
    for dy in 0..=s {
        for dx in -s..=s {
            if dy == 0 && dx <= 0 {
                continue; // each pair once: the weight serves both pixels
            }
            // Squared differences to the offset pixel; outside the photo, too far to count.
            for y in 0..h {
                let yy = y as isize + dy;
                for x in 0..w {
                    let xx = x as isize + dx;
                    diff[y * w + x] = if yy < h as isize && xx >= 0 && xx < w as isize {
                        let d = src[y * w + x] - src[yy as usize * w + xx as usize];
                        d * d
                    } else {
                        1.0
                    };
                }
            }
            box_sum(&diff, &mut rows, &mut sums, w, h, patch);
            for y in 0..h {
                let yy = y as isize + dy;
                if yy >= h as isize {
                    break;
                }
                for x in 0..w {
                    let xx = x as isize + dx;
                    if xx < 0 || xx >= w as isize {
                        continue;
                    }
                    let (i, j) = (y * w + x, yy as usize * w + xx as usize);
                    let bin = ((sums[i] - floor * area).max(0.0) * scale) as usize;
                    if bin >= LUT_BINS {
                        continue;
                    }
                    let weight = lut[bin];
                    num[i] += weight * src[j];
                    den[i] += weight;
                    best[i] = best[i].max(weight);
                    num[j] += weight * src[i];
                    den[j] += weight;
                    best[j] = best[j].max(weight);
                }
            }
        }
    }
    // A pixel counts itself as much as its most similar neighbour.
    (0..n)
        .map(|i| {
            let own = if best[i] > 0.0 { best[i] } else { 1.0 };
            (num[i] + own * src[i]) / (den[i] + own)
        })
        .collect()
}

/// Sums of `src` over `(2r+1)²` windows (cut at the edges), separably.
fn box_sum(src: &[f32], rows: &mut [f32], out: &mut [f32], w: usize, h: usize, r: usize) {
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let mut acc: f32 = row[..r.min(w)].iter().sum();
        for x in 0..w {
            if x + r < w {
                acc += row[x + r];
            }
            rows[y * w + x] = acc;
            if x >= r {
                acc -= row[x - r];
            }
        }
    }
    for x in 0..w {
        let mut acc: f32 = (0..r.min(h)).map(|y| rows[y * w + x]).sum();
        for y in 0..h {
            if y + r < h {
                acc += rows[(y + r) * w + x];
            }
            out[y * w + x] = acc;
            if y >= r {
                acc -= rows[(y - r) * w + x];
            }
        }
    }
}

/// Histogram bins over 0..=1 used by the photo-wide measurements.
pub const BINS: usize = 1024;

/// How one channel's tones are remapped: `lo..lo + span` onto the tonal
/// range photographs keep. `None` leaves the channel as it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub lo: f32,
    pub span: f32,
}

/// Empty per-channel histograms of [`BINS`] bins (on the heap: tiles are
/// measured on threads with small stacks).
pub fn histograms() -> [Vec<u64>; 3] {
    [vec![0; BINS], vec![0; BINS], vec![0; BINS]]
}

/// Adds `p`'s pixels to per-channel histograms.
pub fn add_to_histograms(p: &Planes, histograms: &mut [Vec<u64>; 3]) {
    for (plane, histogram) in p.c.iter().zip(histograms.iter_mut()) {
        for v in plane {
            histogram[(v.clamp(0.0, 1.0) * (BINS - 1) as f32) as usize] += 1;
        }
    }
}

/// Levels that undo fading and yellowing, and only those. Each channel's
/// tonal range is its 0.5th to 99.5th percentile (of the photo slightly
/// blurred, so grain and dust do not widen it).
///
/// - **Yellowing** dims blue most and green a little, every tone alike. It
///   is corrected only when the channels' white points are in that order
///   (red ≥ green ≥ blue), and only as far as yellowing goes (green × 1.15,
///   blue × 1.5 at most): a photo's own strong colour, or a cast of
///   another hue, is its own.
/// - **Fading** pulls every tone towards one grey, the same for every
///   channel, so all channels get one remapping, never each its own (which
///   would turn strong natural colour into a cast). How far it pulled, and
///   towards which grey, cannot be read off one photo: a narrow range is
///   also what a brick wall or the moon has by nature. So the remapping is
///   the most likely original given what is seen ([`unfade`]), not a
///   stretch to a fixed range, averaged with the old centred stretch to
///   the photo's likely span: neither alone is safe on every photo.
///
/// A photo that already spans its range and shows no yellowing is left alone.
pub fn levels_from(histograms: &[Vec<u64>; 3]) -> [Option<Level>; 3] {
    let ranges = histograms.each_ref().map(|h| percentiles(h, 0.005, 0.995));
    let white = ranges.map(|(_, hi)| hi);
    let gains = if white[0] >= white[1] && white[1] >= white[2] && white[2] > 0.0 {
        [
            1.0,
            (white[0] / white[1]).min(MAX_GREEN_GAIN),
            (white[0] / white[2]).min(MAX_BLUE_GAIN),
        ]
    } else {
        [1.0; 3]
    };
    // The grey scale's range: the channels' (gained) ranges averaged, so a
    // channel the cast correction could not match exactly does not shift it.
    let lo = (0..3).map(|c| ranges[c].0 * gains[c]).sum::<f32>() / 3.0;
    let hi = (0..3).map(|c| ranges[c].1 * gains[c]).sum::<f32>() / 3.0;
    let seen = hi - lo;
    let yellowed = gains.iter().any(|g| *g > 1.0 + 1e-3);
    if seen <= 0.0 || (seen >= 0.92 && !yellowed) {
        return [None; 3];
    }
    // Two estimates, averaged: the centred stretch (the range to the span
    // it most likely had, centred in the range photographs keep) and the
    // unfaded tones (the most likely original under the fade's own model).
    // Each fails where the other holds: centring shifts a photo whose own
    // tones sit high or low; unfading over-stretches a photo narrow by
    // nature. Their mean scored best on the tuning six under both ageings.
    let scale = if seen >= 0.92 {
        1.0
    } else {
        likely_span(seen) / seen
    };
    let centre = (TONE_BOTTOM + TONE_TOP) / 2.0;
    let centred = (centre - (lo + hi) / 2.0 * scale, scale);
    let (offset, scale) = match unfade(lo, hi) {
        Some((offset, scale)) => ((offset + centred.0) / 2.0, (scale + centred.1) / 2.0),
        // Outside what fading explains (barely faded, or beyond the
        // strongest fade): the centred stretch alone.
        None => centred,
    };
    // out = offset + scale·gain·v, as `apply_levels` writes it.
    gains.map(|gain| {
        Some(Level {
            lo: (TONE_BOTTOM - offset) / (scale * gain),
            span: (TONE_TOP - TONE_BOTTOM) / (scale * gain),
        })
    })
}

const MAX_GREEN_GAIN: f32 = 1.15;
const MAX_BLUE_GAIN: f32 = 1.5;
/// How much of its contrast a faded print keeps, at least and at most.
const FADE: (f32, f32) = (0.25, 0.8);
/// The grey fading pulls tones towards: the blacks lift towards the paper
/// far more than the whites dim.
const FADE_GREY: (f32, f32) = (0.45, 0.7);
/// How much of the tonal range a photograph spans, at least.
const MIN_SPAN: f32 = 0.25;
/// How far above black a photograph's black point usually lies (the scale
/// of an exponential prior): most photographs hold a near-black somewhere.
const BLACK_POINT: f32 = 0.07;

/// Undoing fading as `out = offset + scale·v`: the mean original tone given
/// the range `lo..hi` seen. Fading took every tone `v` to
/// `g·(1 − k) + k·v` for a grey `g` in [`FADE_GREY`] and a fade `k` in
/// [`FADE`]; each (g, k) whose original range would be a photograph's
/// (inside 0..1, at least [`MIN_SPAN`] wide) is weighted by the prior on
/// its black point and 1/k (the density of the span for a uniform fade),
/// and the inverses `(v − g·(1 − k)) / k` are averaged — still a line in
/// `v`. `None` when no fade explains the range.
fn unfade(lo: f32, hi: f32) -> Option<(f32, f32)> {
    const STEPS: (usize, usize) = (25, 55);
    let (mut weights, mut offsets, mut scales) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..=STEPS.0 {
        let grey = FADE_GREY.0 + (FADE_GREY.1 - FADE_GREY.0) * i as f32 / STEPS.0 as f32;
        for j in 0..=STEPS.1 {
            let k = FADE.0 + (FADE.1 - FADE.0) * j as f32 / STEPS.1 as f32;
            let lift = grey * (1.0 - k);
            let (lo0, hi0) = ((lo - lift) / k, (hi - lift) / k);
            if lo0 < -0.02 || hi0 > 1.02 || hi0 - lo0 < MIN_SPAN {
                continue;
            }
            let w = f64::from((-lo0.max(0.0) / BLACK_POINT).exp() / k);
            weights += w;
            offsets += w * f64::from(-lift / k);
            scales += w * f64::from(1.0 / k);
        }
    }
    (weights > 0.0).then(|| ((offsets / weights) as f32, (scales / weights) as f32))
}

/// The span a photo most likely had when `seen` is what fading left of it:
/// the mean of `seen / k` over the fades `k` that give a possible span
/// (weighted 1/k, the density of the span for a uniform fade).
fn likely_span(seen: f32) -> f32 {
    let k1 = FADE.0.max(seen);
    let k2 = FADE.1.min(seen / MIN_SPAN);
    if k1 >= k2 {
        // Faded beyond the model (a span under 1/16), or barely at all.
        return if seen < FADE.0 {
            MIN_SPAN
        } else {
            seen.clamp(TONE_TOP - TONE_BOTTOM, 1.0)
        };
    }
    seen * (1.0 / k1 - 1.0 / k2) / (k2 / k1).ln()
}

/// How much `levels` widen the grey scale, on average over the channels.
pub fn luma_stretch(levels: &[Option<Level>; 3]) -> f32 {
    levels
        .iter()
        .map(|l| l.map_or(1.0, |l| (TONE_TOP - TONE_BOTTOM) / l.span))
        .sum::<f32>()
        / 3.0
}

/// Remaps each channel by its level, onto 3%..90%, where most photographs
/// keep their tones: stretching a faded print to pure black and white
/// overshoots more often than not.
pub fn apply_levels(p: &mut Planes, levels: &[Option<Level>; 3]) {
    for (plane, level) in p.c.iter_mut().zip(levels) {
        if let Some(Level { lo, span }) = *level {
            let scale = (TONE_TOP - TONE_BOTTOM) / span;
            plane
                .iter_mut()
                .for_each(|v| *v = (TONE_BOTTOM + (*v - lo) * scale).clamp(0.0, 1.0));
        }
    }
}

/// [`levels_from`] and [`apply_levels`] on a whole photo; returns the black
/// and white points of each channel.
pub fn stretch_channels(p: &mut Planes) -> [(f32, f32); 3] {
    let mut histograms = histograms();
    add_to_histograms(p, &mut histograms);
    let levels = levels_from(&histograms);
    apply_levels(p, &levels);
    levels.map(|l| l.map_or((0.0, 1.0), |l| (l.lo, l.lo + l.span)))
}

pub(crate) const TONE_BOTTOM: f32 = 0.03;
pub(crate) const TONE_TOP: f32 = 0.90;

fn percentiles(histogram: &[u64], low: f64, high: f64) -> (f32, f32) {
    let total: u64 = histogram.iter().sum();
    let at = |q: f64| {
        let target = (q * total as f64) as u64;
        let mut seen = 0;
        for (bin, count) in histogram.iter().enumerate() {
            seen += count;
            if seen > target {
                return bin as f32 / (histogram.len() - 1) as f32;
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
    fn box_sums_match_a_plain_sum() {
        let (w, h) = (9, 7);
        let src: Vec<f32> = (0..w * h).map(|i| (i % 5) as f32).collect();
        let (mut rows, mut out) = (vec![0.0; w * h], vec![0.0; w * h]);
        box_sum(&src, &mut rows, &mut out, w, h, 2);
        for y in 0..h {
            for x in 0..w {
                let mut expected = 0.0;
                for yy in y.saturating_sub(2)..=(y + 2).min(h - 1) {
                    for xx in x.saturating_sub(2)..=(x + 2).min(w - 1) {
                        expected += src[yy * w + xx];
                    }
                }
                assert!((out[y * w + x] - expected).abs() < 1e-4, "({x}, {y})");
            }
        }
    }

    #[test]
    fn non_local_means_keeps_an_edge_and_removes_noise() {
        let (w, h) = (48, 32);
        let mut seed = 11u32;
        let clean: Vec<f32> = (0..w * h)
            .map(|i| if i % w < w / 2 { 0.2 } else { 0.8 })
            .collect();
        let noisy: Vec<f32> = clean
            .iter()
            .map(|v| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                v + ((seed >> 16) % 41) as f32 / 1000.0 - 0.02
            })
            .collect();
        let out = non_local_means(&noisy, w, h, 0.012, 4, 2, 0.6);
        let error =
            |a: &[f32]| a.iter().zip(&clean).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        assert!(
            error(&out) < error(&noisy) / 2.0,
            "{} vs {}",
            error(&out),
            error(&noisy)
        );
        let edge = |v: &[f32], y: usize| v[y * w + w / 2] - v[y * w + w / 2 - 1];
        assert!(edge(&out, 16) > 0.5, "the edge stays sharp: {}", edge(&out, 16));
    }

    #[test]
    fn texture_everywhere_is_not_dust() {
        let mut distances = vec![0u64; BINS];
        let threshold = defect_threshold(0.0);
        let far = ((threshold + 0.1) * (BINS - 1) as f32) as usize;
        distances[far] = 40;
        distances[0] = 960;
        assert!(dust_not_texture(&distances, threshold, 1000), "4 % may be dust");
        distances[far] = 100;
        assert!(!dust_not_texture(&distances, threshold, 1000), "10 % is texture");
        assert!(
            !dust_not_texture(&[0; BINS], threshold, 1000),
            "nothing to remove"
        );
    }

    fn ramp(ranges: [(f32, f32); 3]) -> Planes {
        let mut p = Planes::new(100, 1);
        for (ch, (offset, span)) in ranges.into_iter().enumerate() {
            for (i, v) in p.c[ch].iter_mut().enumerate() {
                *v = offset + span * i as f32 / 99.0;
            }
        }
        p
    }

    /// A faded, yellowed print: one stretch for every channel, and the
    /// yellowing (blue and green dimmed) taken out.
    #[test]
    fn a_faded_yellowed_photo_is_stretched_and_its_yellowing_removed() {
        let mut p = ramp([(0.3, 0.4), (0.279, 0.372), (0.216, 0.288)]);
        stretch_channels(&mut p);
        for i in [0, 50, 99] {
            let (r, g, b) = (p.c[0][i], p.c[1][i], p.c[2][i]);
            assert!(
                (r - g).abs() < 0.02 && (r - b).abs() < 0.02,
                "neutral again: {r} {g} {b}"
            );
        }
        let contrast = p.c[0][99] - p.c[0][0];
        assert!(
            contrast > 0.55 && contrast < 0.9,
            "stretched from 0.4: {contrast}"
        );
    }

    /// Strong natural colour (a red photo, blue nearly absent) keeps its
    /// colour: no channel is stretched on its own.
    #[test]
    fn strong_natural_colour_is_not_read_as_a_cast() {
        let mut p = ramp([(0.1, 0.85), (0.05, 0.4), (0.0, 0.15)]);
        stretch_channels(&mut p);
        // Stretched on its own, blue would span what red spans; it gets
        // one stretch with red, raised at most by yellowing's own
        // correction (× 1.5).
        let span = |q: &Planes, c: usize| q.c[c][99] - q.c[c][0];
        let (red, blue) = (span(&p, 0), span(&p, 2));
        assert!(blue < 0.4 * red, "blue {blue} against red {red}");
    }

    #[test]
    fn a_full_range_photo_is_kept() {
        let mut full = ramp([(0.0, 1.0); 3]);
        let before = full.clone();
        assert_eq!(stretch_channels(&mut full), [(0.0, 1.0); 3]);
        assert_eq!(full, before);
    }

    /// A narrow range is stretched less the narrower it is relative to
    /// what fading leaves: never to the full range.
    #[test]
    fn a_narrow_range_is_stretched_to_its_likely_span() {
        assert!((likely_span(0.6) - 0.85).abs() < 0.1, "{}", likely_span(0.6));
        let narrow = likely_span(0.15);
        assert!(narrow > 0.3 && narrow < 0.5, "{narrow}");
        assert!(likely_span(0.02) <= MIN_SPAN);
    }

    /// Fading undone: a faded print's range comes back near its original
    /// place, and a dark photo darker than a light one, not both re-centred
    /// (a light photo's black point is pulled down a little by the prior:
    /// most photographs hold a near-black).
    #[test]
    fn unfading_gives_back_the_original_range_and_brightness() {
        let fade = |v: f32, grey: f32, k: f32| grey * (1.0 - k) + k * v;
        for (lo0, hi0) in [(0.02, 0.95), (0.0, 0.6)] {
            let (lo, hi) = (fade(lo0, 0.6, 0.5), fade(hi0, 0.6, 0.5));
            let (offset, scale) = unfade(lo, hi).expect("a fade explains it");
            let (a, b) = (offset + scale * lo, offset + scale * hi);
            assert!(
                (a - lo0).abs() < 0.12 && (b - hi0).abs() < 0.12,
                "{lo0}..{hi0} came back as {a}..{b}"
            );
        }
        // The middle of each restored range.
        let middle = |lo0: f32, hi0: f32| {
            let (lo, hi) = (fade(lo0, 0.6, 0.5), fade(hi0, 0.6, 0.5));
            let (offset, scale) = unfade(lo, hi).expect("a fade explains it");
            offset + scale * (lo + hi) / 2.0
        };
        assert!(middle(0.0, 0.6) < middle(0.3, 0.98) - 0.1);
        assert_eq!(unfade(0.5, 0.51), None, "faded beyond any fade");
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
