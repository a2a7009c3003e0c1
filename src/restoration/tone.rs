//! Black-and-white prints and their tone. A monochrome print that has
//! yellowed comes back neutral grey. One toned on purpose (sepia) keeps an
//! even tone of the strength it was toned to, with the yellowing taken out,
//! when `restoration.keep_tone` is on (the default).
//!
//! Told apart by how the colour follows the grey: in a monochrome print the
//! chroma is a function of luma alone (little spread around it). Yellowing
//! tints every tone alike, so its chroma rises evenly with luma (an affine
//! function of it); sepia toning colours the mid-tones and leaves the paper
//! white and the blacks alone, a hump over the grey scale.

use super::Planes;

/// Luma bins the chroma is gathered in.
const BINS: usize = 64;
/// Spread of 16×16 blocks' chroma around its mean at their luma (of 1)
/// under which a photo is monochrome: the aged black-and-white prints of
/// the benchmark measure 0.0046–0.0067, its faintest colour photo (the
/// Hubble deep field) 0.0105, the others 0.016–0.076.
const MONOCHROME_SPREAD: f64 = 0.008;
/// Hump amplitude (of 1) above which a monochrome print was toned on
/// purpose rather than merely yellowed: yellowed prints measure
/// 0.001–0.009, a moderately sepia-toned one 0.015.
const TONED: f64 = 0.012;
/// The strongest tone kept: a print is never toned more than this.
const MAX_TONE: f32 = 0.2;

/// What the engine does to a photo's colour beyond its levels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Tone {
    /// A colour photo: its colours are its own.
    #[default]
    Colour,
    /// A black-and-white print: every pixel grey.
    Neutral,
    /// A toned print: grey plus this offset per channel (R, G, B) at
    /// mid-grey, fading to none at black and white.
    Toned([f32; 3]),
}

/// Chroma gathered by luma bin, for telling a monochrome print from a
/// colour photo, and a toned one from a yellowed one.
#[derive(Debug, Clone)]
pub struct ChromaStats {
    n: [f64; BINS],
    sum: [[f64; 2]; BINS],
    squares: [f64; BINS],
}

impl Default for ChromaStats {
    fn default() -> Self {
        Self {
            n: [0.0; BINS],
            sum: [[0.0; 2]; BINS],
            squares: [0.0; BINS],
        }
    }
}

impl ChromaStats {
    /// Adds one pixel (channels of 1).
    pub fn add(&mut self, r: f32, g: f32, b: f32) {
        let luma = (r + g + b) / 3.0;
        let bin = ((luma.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        let (cr, cb) = ((r - luma) as f64, (b - luma) as f64);
        self.n[bin] += 1.0;
        self.sum[bin][0] += cr;
        self.sum[bin][1] += cb;
        self.squares[bin] += cr * cr + cb * cb;
    }

    pub fn merge(&mut self, other: &ChromaStats) {
        for i in 0..BINS {
            self.n[i] += other.n[i];
            self.sum[i][0] += other.sum[i][0];
            self.sum[i][1] += other.sum[i][1];
            self.squares[i] += other.squares[i];
        }
    }

    /// The spread of the chroma around its mean at each luma.
    fn spread(&self) -> f64 {
        let total: f64 = self.n.iter().sum();
        if total == 0.0 {
            return 0.0;
        }
        let residual: f64 = (0..BINS)
            .filter(|&i| self.n[i] > 0.0)
            .map(|i| {
                let [cr, cb] = self.sum[i];
                self.squares[i] - (cr * cr + cb * cb) / self.n[i]
            })
            .sum();
        (residual.max(0.0) / total).sqrt()
    }

    /// How the photo's colour is to be treated. `stretch` is how much the
    /// levels widen its tones (a faded print's tone faded with it);
    /// `keep_tone` keeps a toned print's tone.
    pub fn tone(&self, stretch: f32, keep_tone: bool) -> Tone {
        if self.n.iter().sum::<f64>() == 0.0 || self.spread() > MONOCHROME_SPREAD {
            return Tone::Colour;
        }
        // Per chroma channel: c(L) = a + b·L + s·4L(1−L). The affine part is
        // the yellowing (and any cast), the hump the toning.
        let hump = [0, 1].map(|channel| self.hump(channel));
        let (cr, cb) = (hump[0], hump[1]);
        let warm = cr > 0.0 && cb < 0.0;
        if !keep_tone || !warm || cr.hypot(cb) < TONED {
            return Tone::Neutral;
        }
        let scale = |c: f64| (c as f32 * stretch).clamp(-MAX_TONE, MAX_TONE);
        Tone::Toned([scale(cr), scale(-(cr + cb)), scale(cb)])
    }

    /// The hump's amplitude in one chroma channel (0: R − L, 1: B − L), by
    /// weighted least squares over the bins' means.
    /// The hump spans the photo's own grey scale (a faded print's is narrow).
    fn hump(&self, channel: usize) -> f64 {
        let Some((lo, hi)) = self.luma_range() else {
            return 0.0;
        };
        let mut normal = [[0.0f64; 3]; 3];
        let mut right = [0.0f64; 3];
        for i in (0..BINS).filter(|&i| self.n[i] > 0.0) {
            let luma = (i as f64 + 0.5) / BINS as f64;
            let u = ((luma - lo) / (hi - lo)).clamp(0.0, 1.0);
            let basis = [1.0, luma, 4.0 * u * (1.0 - u)];
            let mean = self.sum[i][channel] / self.n[i];
            for r in 0..3 {
                right[r] += self.n[i] * basis[r] * mean;
                for c in 0..3 {
                    normal[r][c] += self.n[i] * basis[r] * basis[c];
                }
            }
        }
        solve(normal, right).map_or(0.0, |x| x[2])
    }
}

impl ChromaStats {
    /// The luma bins' centres at the 1st and 99th percentiles; `None` for
    /// a photo of nearly one grey (no hump to tell from a line).
    fn luma_range(&self) -> Option<(f64, f64)> {
        let total: f64 = self.n.iter().sum();
        let at = |q: f64| {
            let mut seen = 0.0;
            for (i, n) in self.n.iter().enumerate() {
                seen += n;
                if seen > q * total {
                    return (i as f64 + 0.5) / BINS as f64;
                }
            }
            1.0
        };
        let (lo, hi) = (at(0.01), at(0.99));
        (hi - lo >= 4.0 / BINS as f64).then_some((lo, hi))
    }
}

/// Solves a 3×3 system by Cramer's rule; `None` when it is (nearly)
/// singular (too few distinct tones to tell a hump from a line).
fn solve(a: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    let scale: f64 = a.iter().flatten().map(|v| v.abs()).fold(0.0, f64::max);
    if d.abs() <= 1e-9 * scale.powi(3) {
        return None;
    }
    let mut x = [0.0; 3];
    for (col, value) in x.iter_mut().enumerate() {
        let mut m = a;
        for row in 0..3 {
            m[row][col] = b[row];
        }
        *value = det(m) / d;
    }
    Some(x)
}

/// Applies `tone` to planes whose levels are already set.
pub fn apply(p: &mut Planes, tone: Tone) {
    let offsets = match tone {
        Tone::Colour => return,
        Tone::Neutral => [0.0; 3],
        Tone::Toned(offsets) => offsets,
    };
    let [r, g, b] = &mut p.c;
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let luma = (*r + *g + *b) / 3.0;
        let hump = 4.0 * luma * (1.0 - luma);
        *r = (luma + hump * offsets[0]).clamp(0.0, 1.0);
        *g = (luma + hump * offsets[1]).clamp(0.0, 1.0);
        *b = (luma + hump * offsets[2]).clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pixel: impl Fn(f32) -> [f32; 3]) -> ChromaStats {
        let mut s = ChromaStats::default();
        for i in 0..10_000 {
            let luma = 0.05 + 0.9 * (i as f32 / 10_000.0);
            let [r, g, b] = pixel(luma);
            s.add(r, g, b);
        }
        s
    }

    #[test]
    fn a_yellowed_grey_print_is_neutral() {
        let yellowed = stats(|l| [l, l * 0.93 + 0.004, l * 0.72 + 0.014]);
        assert_eq!(yellowed.tone(1.5, true), Tone::Neutral);
    }

    #[test]
    fn a_sepia_print_keeps_its_tone_only_when_asked() {
        let sepia = |l: f32| {
            let h = 4.0 * l * (1.0 - l) * 0.08;
            [l + h, l + 0.1 * h, l - 0.9 * h]
        };
        let Tone::Toned([r, g, b]) = stats(sepia).tone(1.0, true) else {
            panic!("a toned print keeps its tone");
        };
        assert!(r > 0.05 && b < -0.05 && r > g && g > b, "{r} {g} {b}");
        assert_eq!(stats(sepia).tone(1.0, false), Tone::Neutral);
    }

    #[test]
    fn colour_is_left_alone() {
        let mut s = ChromaStats::default();
        for i in 0..10_000 {
            let t = i as f32 / 10_000.0;
            s.add(t, 1.0 - t, (t * 7.0).fract());
        }
        assert_eq!(s.tone(1.0, true), Tone::Colour);
    }

    #[test]
    fn neutral_and_toned_planes() {
        let mut p = Planes {
            width: 2,
            height: 1,
            c: [vec![0.6, 0.3], vec![0.5, 0.3], vec![0.3, 0.3]],
        };
        apply(&mut p, Tone::Neutral);
        assert!((p.c[0][0] - p.c[2][0]).abs() < 1e-6);
        apply(&mut p, Tone::Toned([0.1, 0.0, -0.1]));
        assert!(p.c[0][0] > p.c[1][0] && p.c[1][0] > p.c[2][0]);
    }
}
