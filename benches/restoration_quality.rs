//! The local engine's quality and speed on aged photos.
//!
//! Each clean sample (scikit-image's bundled photographs, fetched by
//! `scripts/samples` into `var/samples/`, or any directory named by
//! `RESTORECLICK_SAMPLES`) is aged with a fixed seed, restored, and compared
//! with the clean original: PSNR and SSIM before and after, and the engine's
//! milliseconds per megapixel. Prints a Markdown table.
//!
//! Run: `scripts/samples && cargo bench --bench restoration_quality`

use std::{path::PathBuf, time::Instant};

use image::DynamicImage;
use restoreclick::restoration::{self, quality};

fn main() {
    // Test runners list benches as tests; this one has none to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::var("RESTORECLICK_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("var/samples"));
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    if paths.is_empty() {
        eprintln!("no sample photos in {}; run scripts/samples first", dir.display());
        return;
    }
    println!("| photo | size | PSNR aged | PSNR restored | gain | SSIM aged | SSIM restored | ms/MP |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut gains, mut ssim_before, mut ssim_after, mut ms_per_mp, mut worse) =
        (vec![], vec![], vec![], vec![], 0);
    for (seed, path) in paths.iter().enumerate() {
        let Ok(clean) = image::open(path) else { continue };
        let clean = clean.to_rgb8();
        let aged = quality::degrade(&clean, seed as u64 + 1);
        let started = Instant::now();
        let (restored, _) = restoration::restore(&DynamicImage::ImageRgb8(aged.clone()));
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let restored = restored.to_rgb8();
        let mp = f64::from(clean.width() * clean.height()) / 1e6;
        let (pa, pr) = (quality::psnr(&clean, &aged), quality::psnr(&clean, &restored));
        let (sa, sr) = (quality::ssim(&clean, &aged), quality::ssim(&clean, &restored));
        worse += usize::from(pr < pa);
        gains.push(pr - pa);
        ssim_before.push(sa);
        ssim_after.push(sr);
        ms_per_mp.push(elapsed / mp);
        println!(
            "| {} | {}×{} | {pa:.2} | {pr:.2} | {:+.2} | {sa:.3} | {sr:.3} | {:.0} |",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            clean.width(),
            clean.height(),
            pr - pa,
            elapsed / mp
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut sorted = ms_per_mp.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "| **mean** | | | | **{:+.2} dB** | {:.3} | {:.3} | median {:.0} |",
        mean(&gains),
        mean(&ssim_before),
        mean(&ssim_after),
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    );
    println!("\nphotos made worse in PSNR: {worse} of {}", gains.len());
}
