//! Hot paths of the paid-order path: verifying a Stripe signature, and
//! validating an upload (full decode) per megapixel, beside a bare decode of
//! the same bytes (the decode ceiling).

use std::{hint::black_box, io::Cursor, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use restoreclick::{
    providers::payments::signature,
    validation::{self, PhotoKind, PhotoLimits},
};

fn signature_verification(c: &mut Criterion) {
    let body = serde_json::json!({
        "id": "evt_bench", "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_bench", "client_reference_id": "ups_0190", "payment_status": "paid",
                            "amount_total": 1500, "currency": "usd", "metadata": {"upload_session_id": "ups_0190"}}}
    })
    .to_string();
    let now = 1_700_000_000;
    let header = signature::sign(body.as_bytes(), "whsec_bench", now);
    c.bench_function("stripe_signature_verify", |b| {
        b.iter(|| {
            signature::verify(
                black_box(Some(header.as_str())),
                black_box(body.as_bytes()),
                "whsec_bench",
                Duration::from_secs(300),
                now,
            )
        })
    });
}

fn photo(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = ImageBuffer::from_fn(width, height, |x, y| {
        Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

fn upload_validation(c: &mut Criterion) {
    let limits = PhotoLimits {
        max_file_bytes: 50 << 20,
        max_pixels: 100_000_000,
        min_dimension: 64,
        allowed: vec![PhotoKind::Jpeg, PhotoKind::Png, PhotoKind::Webp, PhotoKind::Tiff],
        max_decode_bytes: 905_969_664,
    };
    let mut group = c.benchmark_group("upload_validation");
    group.sample_size(20);
    for (name, format) in [("jpeg", ImageFormat::Jpeg), ("png", ImageFormat::Png)] {
        let (w, h) = (2000, 1000); // 2 megapixels
        let bytes = photo(w, h, format);
        group.throughput(Throughput::Elements(u64::from(w * h)));
        group.bench_with_input(BenchmarkId::new(name, "2MP"), &bytes, |b, bytes| {
            b.iter(|| validation::validate(black_box(bytes), &limits).expect("valid"))
        });
        // The decode ceiling: the same bytes decoded by `image` alone.
        group.bench_with_input(
            BenchmarkId::new(format!("{name}_bare_decode"), "2MP"),
            &bytes,
            |b, bytes| b.iter(|| image::load_from_memory(black_box(bytes)).expect("decodes")),
        );
    }
    group.finish();
}

criterion_group!(benches, signature_verification, upload_validation);
criterion_main!(benches);
