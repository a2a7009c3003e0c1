//! Photo-wide measurements, taken tile by tile before any tile is changed,
//! so every tile is restored with the same parameters (no seams): the
//! channels' tonal ranges (fade and colour cast), the noise as it came (for
//! telling dust from grain) and as the levels leave it (for the denoiser),
//! and how much of the photo looks like dust.

use image::DynamicImage;
use rayon::prelude::*;

use super::{
    stages::{self, BINS, Level, Rect},
    tiles::Tile,
    tone::{ChromaStats, Tone},
};

/// What the engine measured, and so how it works on this photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub levels: [Option<Level>; 3],
    /// Noise σ after the levels, 0..=1 units.
    pub noise_sigma: f32,
    pub defect_threshold: f32,
    /// False when "defects" are everywhere: that is texture, not dust.
    pub remove_defects: bool,
    /// Whether the photo looks like an old print (grain); a clean one gets
    /// no levels, denoising or sharpening, only its defects removed.
    pub aged: bool,
    /// A black-and-white print made neutral (or evenly toned), or colour.
    pub tone: Tone,
}

/// Distance classes (from a pixel's luma to its 5×5 median) of the joint
/// histogram, so tones can be counted without the dust once the threshold
/// is known.
const CLASSES: usize = 64;

/// σ of the blur the tonal range is measured through.
const TONE_BLUR: f32 = 2.0;
/// Grain above which a photo counts as aged (σ, of 1): the aged photos of
/// the benchmark measure 4.2–5.2/255, clean scans 0–2.9/255.
const AGED_NOISE: f32 = 3.5 / 255.0;

/// Side of the blocks whose mean colour tells monochrome from colour.
const CHROMA_BLOCK: usize = 16;

/// What one tile contributes to the photo-wide measurements.
struct Sample {
    /// Channel values by distance class: `[class * BINS + bin]` per channel.
    tones: [Vec<u64>; 3],
    /// Noise blocks of the photo as it came.
    deviations: Vec<f32>,
    /// Distances from the median, for the share of dust.
    distances: Vec<u64>,
    /// Chroma by luma: monochrome or colour, toned or yellowed.
    chroma: ChromaStats,
    pixels: usize,
}

impl Sample {
    fn empty() -> Self {
        let tones = || vec![0u64; CLASSES * BINS];
        Self {
            tones: [tones(), tones(), tones()],
            deviations: Vec::new(),
            distances: vec![0; BINS],
            chroma: ChromaStats::default(),
            pixels: 0,
        }
    }

    fn merge(mut self, other: Sample) -> Self {
        for (a, b) in self.tones.iter_mut().zip(other.tones) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.deviations.extend(other.deviations);
        self.distances = add_histogram(self.distances, other.distances);
        self.chroma.merge(&other.chroma);
        self.pixels += other.pixels;
        self
    }

    fn of(planes: &super::Planes, core: Rect) -> Self {
        let mut sample = Self::empty();
        let (w, h) = (planes.width, planes.height);
        let luma = planes.luma();
        if w >= 16 && h >= 16 {
            sample.deviations = stages::block_deviations(&luma, w, h, core);
        }
        let median = if w >= 5 && h >= 5 {
            stages::median_filter(&luma, w, h, 2)
        } else {
            luma.clone()
        };
        // Tones are counted slightly blurred: grain's tails are not the photo's range.
        let toned = planes
            .c
            .each_ref()
            .map(|plane| stages::gaussian_sigma(plane, w, h, TONE_BLUR));
        for y in core.y..core.y + core.height {
            for x in core.x..core.x + core.width {
                let i = y * w + x;
                let d = (luma[i] - median[i]).abs();
                sample.distances[((d * (BINS - 1) as f32) as usize).min(BINS - 1)] += 1;
                let class = ((d * CLASSES as f32) as usize).min(CLASSES - 1);
                for (tones, plane) in sample.tones.iter_mut().zip(&toned) {
                    tones[class * BINS + ((plane[i].clamp(0.0, 1.0) * (BINS - 1) as f32) as usize)] += 1;
                }
            }
        }
        // Colour is judged on block means: grain is per pixel and per
        // channel, a photo's colours are regions.
        for by in (core.y..core.y + core.height).step_by(CHROMA_BLOCK) {
            for bx in (core.x..core.x + core.width).step_by(CHROMA_BLOCK) {
                let (bw, bh) = (
                    CHROMA_BLOCK.min(core.x + core.width - bx),
                    CHROMA_BLOCK.min(core.y + core.height - by),
                );
                if bw < CHROMA_BLOCK || bh < CHROMA_BLOCK {
                    continue;
                }
                let mut sum = [0.0f32; 3];
                for y in by..by + bh {
                    for (s, plane) in sum.iter_mut().zip(&planes.c) {
                        *s += plane[y * w + bx..y * w + bx + bw].iter().sum::<f32>();
                    }
                }
                let n = (bw * bh) as f32;
                sample.chroma.add(sum[0] / n, sum[1] / n, sum[2] / n);
            }
        }
        sample.pixels = core.width * core.height;
        sample
    }

    /// Per-channel histograms of the pixels closer than `threshold` to
    /// their median: the photo's tones without its dust and scratches.
    fn tones_without_dust(&self, threshold: f32) -> [Vec<u64>; 3] {
        let classes = ((threshold * CLASSES as f32) as usize).clamp(1, CLASSES);
        self.tones.each_ref().map(|tones| {
            let mut histogram = vec![0u64; BINS];
            for class in tones.chunks(BINS).take(classes) {
                histogram.iter_mut().zip(class).for_each(|(h, c)| *h += c);
            }
            histogram
        })
    }
}

/// Measures the photo; `keep_tone` keeps a toned print's tone.
pub fn measure(image: &DynamicImage, tiles: &[Tile], keep_tone: bool) -> Params {
    // The photo as it came: its noise, how much of it stands out from its
    // surroundings the way dust does, and its tones without that dust.
    let sample = tiles
        .par_iter()
        .map(|tile| {
            let (planes, _) = tile.planes(image, true);
            Sample::of(&planes, tile.core())
        })
        .reduce(Sample::empty, Sample::merge);
    let raw_sigma = noise(sample.deviations.clone(), image, tiles, None);
    let defect_threshold = stages::defect_threshold(raw_sigma);
    // An old print is grainy; a photo this clean is a modern scan or a
    // digital photo, and its tones and colours are its own.
    let aged = raw_sigma > AGED_NOISE;
    // A clean photo's thin dark lines are its own (text, wires): it is left
    // as it came.
    let remove_defects = aged && stages::dust_not_texture(&sample.distances, defect_threshold, sample.pixels);
    let levels = if aged {
        stages::levels_from(&sample.tones_without_dust(if remove_defects { defect_threshold } else { 1.0 }))
    } else {
        [None; 3]
    };
    // A faded print's tone faded with its contrast: it comes back as the
    // levels widen the grey scale.
    let stretch = stages::luma_stretch(&levels);
    let tone = if aged {
        sample.chroma.tone(stretch, keep_tone)
    } else {
        Tone::Colour
    };
    // The noise the denoiser meets: after the levels have stretched it.
    let stretched = tiles
        .par_iter()
        .map(|tile| {
            let (mut planes, _) = tile.planes(image, true);
            stages::apply_levels(&mut planes, &levels);
            let (w, h) = (planes.width, planes.height);
            if w >= 16 && h >= 16 {
                stages::block_deviations(&planes.luma(), w, h, tile.core())
            } else {
                Vec::new()
            }
        })
        .reduce(Vec::new, |mut a, b| {
            a.extend(b);
            a
        });
    Params {
        noise_sigma: noise(stretched, image, tiles, Some(&levels)),
        levels,
        defect_threshold,
        remove_defects,
        aged,
        tone,
    }
}

/// σ from the blocks; a photo too small for 8×8 blocks is one tile, measured whole.
fn noise(
    deviations: Vec<f32>,
    image: &DynamicImage,
    tiles: &[Tile],
    levels: Option<&[Option<Level>; 3]>,
) -> f32 {
    if !deviations.is_empty() {
        return stages::noise_from_deviations(deviations);
    }
    let Some(tile) = tiles.first() else { return 0.0 };
    let (mut planes, _) = tile.planes(image, false);
    if let Some(levels) = levels {
        stages::apply_levels(&mut planes, levels);
    }
    stages::estimate_noise(&planes)
}

fn add_histogram(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}
