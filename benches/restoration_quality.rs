//! The local engine against the tuned classical OpenCV pipeline
//! (`scripts/opencv_baseline.py`), on the same seeded "old photo"
//! degradations, in the same run: PSNR, SSIM and milliseconds per
//! megapixel (both single-threaded) for the aged input, the engine and
//! OpenCV, per photo and on average; photos made worse; a contact sheet.
//!
//! The clean photos are scikit-image's bundled photographs
//! (`scripts/samples`): `var/samples/` (the six the engine's parameters
//! were chosen on) and `var/samples-held-out/` (six it never saw). Then a
//! 100-megapixel photo is restored to show the engine's memory stays bounded.
//!
//! Run: `scripts/samples && scripts/opencv-setup && cargo bench --bench restoration_quality`
//! Outputs: `artifacts/restoration/quality.md`, `contact-sheet.png`.
//! `RESTORATION_BIG=0` skips the 100-megapixel photo; `RESTORATION_KEEP=DIR`
//! keeps the clean and aged photos, the outputs, the masks and the engine's
//! reports there; `RESTORATION_WEAR=light` ages with scratches and dust only.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use image::{DynamicImage, GenericImage, RgbImage, imageops::FilterType};
use restoreclick::restoration::{self, quality};

struct Sample {
    set: &'static str,
    name: String,
    clean: RgbImage,
    aged: RgbImage,
    /// The pixels the ageing's scratches and specks covered.
    mask: Vec<bool>,
}

#[derive(Default, Clone, Copy)]
struct Scores {
    psnr: f64,
    ssim: f64,
    ms_per_mp: f64,
    /// How visible the defects still are (grey levels; 0 invisible).
    visibility: Option<f64>,
}

/// `RESTORATION_WEAR=light` ages the photos with straight scratches and
/// dust only (the ageing before hairs and creases were added), to check
/// that what the engine gained on worn prints it did not lose on lighter ones.
fn wear() -> quality::Wear {
    match std::env::var("RESTORATION_WEAR").as_deref() {
        Ok("light") => quality::Wear::Light,
        _ => quality::Wear::Worn,
    }
}

fn samples(root: &Path) -> Vec<Sample> {
    let mut out = Vec::new();
    for (set, dir) in [
        ("tuning", "var/samples"),
        ("held-out", "var/samples-held-out"),
        ("as-is", "var/samples-as-is"),
    ] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        for path in paths {
            let Ok(clean) = image::open(&path) else { continue };
            let clean = clean.to_rgb8();
            let seed = out.len() as u64 + 1;
            // Clean photos come as a modern scan would: a light JPEG, no damage.
            let (aged, mask) = if set == "as-is" {
                (quality::jpeg(&clean, 90), vec![false; clean.len() / 3])
            } else {
                quality::age(&clean, seed, wear())
            };
            out.push(Sample {
                set,
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                aged,
                mask,
                clean,
            });
        }
    }
    out
}

fn score(sample: &Sample, result: &RgbImage, seconds: f64) -> Scores {
    let clean = &sample.clean;
    let mp = f64::from(clean.width() * clean.height()) / 1e6;
    Scores {
        psnr: quality::psnr(clean, result),
        ssim: quality::ssim(clean, result),
        ms_per_mp: seconds * 1000.0 / mp,
        visibility: quality::defect_visibility(clean, result, &sample.mask),
    }
}

/// Runs the OpenCV pipeline on every aged photo; `None` when it cannot run.
fn opencv(aged_dir: &Path, out_dir: &Path, root: &Path) -> Option<Vec<(String, f64)>> {
    let output = Command::new("python3")
        .arg(root.join("scripts/opencv_baseline.py"))
        .arg(aged_dir)
        .arg(out_dir)
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "the OpenCV baseline did not run (scripts/opencv-setup installs it): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(
        report["photos"]
            .as_array()?
            .iter()
            .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["seconds"].as_f64()?)))
            .collect(),
    )
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The mean to one decimal, or a dash when there is nothing to average.
fn mean_of(values: impl Iterator<Item = f64>) -> String {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        "—".into()
    } else {
        format!("{:.1}", mean(v.into_iter()))
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One row per photo: clean, aged, OpenCV, engine, each scaled to `height`.
fn contact_sheet(rows: &[(&Sample, Option<&RgbImage>, &RgbImage)], height: u32) -> RgbImage {
    let scaled = |img: &RgbImage| {
        let w = (img.width() * height / img.height().max(1)).max(1);
        image::imageops::resize(img, w, height, FilterType::Triangle)
    };
    let gap = 6;
    let width = rows
        .iter()
        .map(|(s, _, _)| 4 * (s.clean.width() * height / s.clean.height().max(1)).max(1) + 5 * gap)
        .max()
        .unwrap_or(1);
    let mut sheet = RgbImage::from_pixel(
        width,
        rows.len() as u32 * (height + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    for (row, (sample, opencv, engine)) in rows.iter().enumerate() {
        let blank = RgbImage::from_pixel(
            sample.clean.width(),
            sample.clean.height(),
            image::Rgb([220, 220, 220]),
        );
        let mut x = gap;
        for img in [&sample.clean, &sample.aged, opencv.unwrap_or(&blank), *engine] {
            let thumb = scaled(img);
            let _ = sheet.copy_from(&thumb, x, gap + row as u32 * (height + gap));
            x += thumb.width() + gap;
        }
    }
    sheet
}

/// A large aged photo made cheaply (faded, tinted, noisy, scratched), pixel
/// by pixel: the full degradation would hold several float copies of it.
fn big_aged(w: u32, h: u32) -> RgbImage {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 25) as i32 - 12
    };
    let clean = quality::scene(w, h);
    RgbImage::from_fn(w, h, |x, y| {
        let p = clean.get_pixel(x, y).0;
        let scratch = x % 2917 < 2 && y % 5000 < 4000;
        let mut out = [0u8; 3];
        for (c, tint) in [1.0f32, 0.93, 0.72].into_iter().enumerate() {
            let faded = 70.0 + 0.5 * f32::from(p[c]);
            let v = if scratch {
                235.0
            } else {
                faded * tint + noise() as f32
            };
            out[c] = v.clamp(0.0, 255.0) as u8;
        }
        image::Rgb(out)
    })
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // Test runners list benches as tests; this one has none to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let samples = samples(&root);
    if samples.is_empty() {
        eprintln!("no sample photos; run scripts/samples first");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let (aged_dir, cv_dir) = (work.path().join("aged"), work.path().join("opencv"));
    std::fs::create_dir_all(&aged_dir).expect("aged dir");
    // RESTORATION_KEEP=DIR keeps the clean and aged photos, for a look.
    let keep = std::env::var_os("RESTORATION_KEEP").map(PathBuf::from);
    for s in &samples {
        s.aged
            .save(aged_dir.join(format!("{}.png", s.name)))
            .expect("write aged photo");
        if let Some(dir) = &keep {
            let _ = std::fs::create_dir_all(dir.join("clean"));
            let _ = std::fs::create_dir_all(dir.join("aged"));
            let _ = s.clean.save(dir.join("clean").join(format!("{}.png", s.name)));
            let _ = s.aged.save(dir.join("aged").join(format!("{}.png", s.name)));
        }
    }
    let cv_times = opencv(&aged_dir, &cv_dir, &root);

    // The engine single-threaded, as OpenCV runs.
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut rows = Vec::new();
    for s in &samples {
        let input = DynamicImage::ImageRgb8(s.aged.clone());
        let started = Instant::now();
        let (restored, report) = one_thread.install(|| restoration::restore(&input));
        let seconds = started.elapsed().as_secs_f64();
        if let Some(dir) = &keep {
            // What the engine measured, beside the photos it kept.
            let _ = std::fs::write(dir.join(format!("{}.report", s.name)), format!("{report:?}\n"));
        }
        let engine = restored.to_rgb8();
        let cv = cv_times.as_ref().and_then(|times| {
            let file = format!("{}.png", s.name);
            let secs = times.iter().find(|(n, _)| *n == file)?.1;
            let img = image::open(cv_dir.join(&file)).ok()?.to_rgb8();
            Some((img, secs))
        });
        rows.push((s, engine, seconds, cv));
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "| set | photo | size | PSNR aged | PSNR OpenCV | PSNR engine | SSIM aged | SSIM OpenCV | SSIM engine | defects aged | defects OpenCV | defects engine | found: precision / recall | ms/MP OpenCV | ms/MP engine |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut table: Vec<(&str, Scores, Option<Scores>, Scores)> = Vec::new();
    for (s, engine, seconds, cv) in &rows {
        let aged = score(s, &s.aged, 0.0);
        let ours = score(s, engine, *seconds);
        let theirs = cv.as_ref().map(|(img, secs)| score(s, img, *secs));
        let cell = |v: Option<f64>, digits: usize| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
        let found = restoration::defect_mask(&DynamicImage::ImageRgb8(s.aged.clone()));
        if let Some(dir) = &keep {
            // The true and found masks (white where defective) and the result.
            let (w, h) = (s.clean.width(), s.clean.height());
            let as_image = |m: &[bool]| {
                image::GrayImage::from_fn(w, h, |x, y| {
                    image::Luma([if m[(y * w + x) as usize] { 255 } else { 0 }])
                })
            };
            for (sub, img) in [("mask", as_image(&s.mask)), ("found", as_image(&found))] {
                let _ = std::fs::create_dir_all(dir.join(sub));
                let _ = img.save(dir.join(sub).join(format!("{}.png", s.name)));
            }
            let _ = std::fs::create_dir_all(dir.join("engine"));
            let _ = engine.save(dir.join("engine").join(format!("{}.png", s.name)));
        }
        let (precision, recall) = quality::precision_recall(
            &found,
            &s.mask,
            s.clean.width() as usize,
            s.clean.height() as usize,
        );
        let _ = writeln!(
            md,
            "| {} | {} | {}×{} | {:.2} | {} | {:.2} | {:.3} | {} | {:.3} | {} | {} | {} | {:.2} / {:.2} | {} | {:.0} |",
            s.set,
            s.name,
            s.clean.width(),
            s.clean.height(),
            aged.psnr,
            cell(theirs.map(|t| t.psnr), 2),
            ours.psnr,
            aged.ssim,
            cell(theirs.map(|t| t.ssim), 3),
            ours.ssim,
            cell(aged.visibility, 1),
            cell(theirs.and_then(|t| t.visibility), 1),
            cell(ours.visibility, 1),
            precision,
            recall,
            cell(theirs.map(|t| t.ms_per_mp), 0),
            ours.ms_per_mp
        );
        table.push((s.set, aged, theirs, ours));
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| photos | mean PSNR gain OpenCV | mean PSNR gain engine | mean SSIM aged | mean SSIM OpenCV | mean SSIM engine | mean defects aged | mean defects OpenCV | mean defects engine | worse in PSNR: OpenCV | worse in PSNR: engine | median ms/MP OpenCV | median ms/MP engine |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for set in ["tuning", "held-out", "as-is", "all"] {
        let part: Vec<_> = table.iter().filter(|r| set == "all" || r.0 == set).collect();
        if part.is_empty() {
            continue;
        }
        let cv_known = part.iter().all(|r| r.2.is_some());
        let cv = |f: &dyn Fn(&Scores, &Scores) -> f64| {
            if cv_known {
                format!(
                    "{:.2}",
                    mean(part.iter().map(|r| f(&r.1, &r.2.unwrap_or_default())))
                )
            } else {
                "—".to_owned()
            }
        };
        let worse_cv = part
            .iter()
            .filter(|r| r.2.is_some_and(|t| t.psnr < r.1.psnr))
            .count();
        let _ = writeln!(
            md,
            "| {set} ({}) | {} dB | {:+.2} dB | {:.3} | {} | {:.3} | {} | {} | {} | {} | {} of {} | {} | {:.0} |",
            part.len(),
            cv(&|aged, t| t.psnr - aged.psnr),
            mean(part.iter().map(|r| r.3.psnr - r.1.psnr)),
            mean(part.iter().map(|r| r.1.ssim)),
            cv(&|_, t| t.ssim),
            mean(part.iter().map(|r| r.3.ssim)),
            mean_of(part.iter().filter_map(|r| r.1.visibility)),
            if cv_known {
                mean_of(part.iter().filter_map(|r| r.2.and_then(|t| t.visibility)))
            } else {
                "—".into()
            },
            mean_of(part.iter().filter_map(|r| r.3.visibility)),
            if cv_known {
                format!("{worse_cv} of {}", part.len())
            } else {
                "—".into()
            },
            part.iter().filter(|r| r.3.psnr < r.1.psnr).count(),
            part.len(),
            if cv_known {
                format!(
                    "{:.0}",
                    median(part.iter().filter_map(|r| r.2.map(|t| t.ms_per_mp)))
                )
            } else {
                "—".into()
            },
            median(part.iter().map(|r| r.3.ms_per_mp)),
        );
    }

    let out_dir = root.join("artifacts/restoration");
    std::fs::create_dir_all(&out_dir).expect("artifacts dir");
    let sheet_rows: Vec<_> = rows
        .iter()
        .map(|(s, engine, _, cv)| (*s, cv.as_ref().map(|(img, _)| img), engine))
        .collect();
    contact_sheet(&sheet_rows, 180)
        .save(out_dir.join("contact-sheet.png"))
        .expect("write the contact sheet");

    if std::env::var("RESTORATION_BIG").map_or(true, |v| v != "0") {
        let (w, h) = (10_000u32, 10_000u32);
        let big = DynamicImage::ImageRgb8(big_aged(w, h));
        // Start the high-water mark afresh (Linux: "5" resets VmHWM).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = peak_rss_kb();
        let started = Instant::now();
        let (restored, _) = restoration::restore(&big);
        let seconds = started.elapsed().as_secs_f64();
        let peak = peak_rss_kb();
        let _ = writeln!(
            md,
            "\n100-megapixel photo ({w}×{h}, {} cores): restored in {seconds:.1} s ({:.0} ms/MP); peak memory grew by {} MB \
             over the input's {} MB (the output itself is {} MB).",
            rayon::current_num_threads(),
            seconds * 1000.0 / 100.0,
            peak.saturating_sub(before) / 1024,
            big.as_bytes().len() >> 20,
            restored.as_bytes().len() >> 20,
        );
    }
    let _ = writeln!(
        md,
        "\nContact sheet (artifacts/restoration/contact-sheet.png), one row per photo in the table's order: clean, aged, OpenCV, engine."
    );
    std::fs::write(out_dir.join("quality.md"), &md).expect("write quality.md");
    println!("{md}");
}
