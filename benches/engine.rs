//! The local restoration engine's time per megapixel, on a seeded aged
//! photo (the benchmark of quality and speed on real photos is
//! `restoration_quality`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use image::{DynamicImage, RgbImage};
use restoreclick::restoration::{self, quality};

fn clean(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let v = |f: f32| (f.clamp(0.0, 1.0) * 255.0) as u8;
        image::Rgb([v(0.2 + 0.6 * fx), v(0.3 + 0.5 * fy), v(0.5 + 0.3 * (fx - fy))])
    })
}

fn local_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("local_engine");
    group.sample_size(10);
    // Run as a test (no --bench) it only has to work, quickly, in a debug build.
    let sizes: &[(u32, u32)] = if std::env::args().any(|a| a == "--bench") {
        &[(1000, 1000), (2000, 1500)]
    } else {
        &[(200, 150)]
    };
    for &(w, h) in sizes {
        let aged = DynamicImage::ImageRgb8(quality::degrade(&clean(w, h), 7));
        group.throughput(Throughput::Elements(u64::from(w * h)));
        group.bench_with_input(
            BenchmarkId::new("restore", format!("{}MP", w * h / 1_000_000)),
            &aged,
            |b, aged| b.iter(|| restoration::restore(black_box(aged))),
        );
    }
    group.finish();
}

criterion_group!(benches, local_engine);
criterion_main!(benches);
