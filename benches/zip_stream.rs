//! ZIP streaming throughput against a raw read of the same bytes.
//!
//! Writes `ZIP_FILES` photos of `ZIP_FILE_MB` MB (random bytes, as
//! incompressible as JPEG) into a local storage directory, then times, in
//! one run: reading every file through the storage layer (the disk
//! ceiling), and writing the download ZIP of them to a sink. Prints MB/s of
//! both and their ratio, median of three rounds.
//!
//! Run: `cargo bench --bench zip_stream`

use std::time::Instant;

use rand::Rng;
use restoreclick::{
    storage::Storage,
    zipstream::{Entry, write_zip},
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (files, mb) = (env_or("ZIP_FILES", 100), env_or("ZIP_FILE_MB", 4));
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::local(dir.path()).expect("storage");
    let mut entries = Vec::new();
    for i in 0..files {
        let mut data = vec![0u8; mb << 20];
        rand::rng().fill_bytes(&mut data);
        let key = format!("uploads/restored/bench/{i:03}_photo_restored.jpg");
        storage.put(&key, data.into()).await.expect("put");
        entries.push(Entry {
            name: format!("{i:03}_photo_restored.jpg"),
            key,
            modified: time::OffsetDateTime::now_utc(),
        });
    }
    let total_mb = (files * mb) as f64;
    let (mut raw, mut zip) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let started = Instant::now();
        for entry in &entries {
            let mut stream = storage.get_stream(&entry.key).await.expect("stream");
            while let Some(chunk) = futures::TryStreamExt::try_next(&mut stream).await.expect("chunk") {
                std::hint::black_box(&chunk);
            }
        }
        raw.push(total_mb / started.elapsed().as_secs_f64());
        let started = Instant::now();
        write_zip(tokio::io::sink(), storage.clone(), entries.clone())
            .await
            .expect("zip");
        zip.push(total_mb / started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw, zip) = (median(&mut raw), median(&mut zip));
    println!("| data | raw read MB/s | ZIP stream MB/s | ZIP / raw |");
    println!("|---|---|---|---|");
    println!(
        "| {files} × {mb} MB | {raw:.0} | {zip:.0} | {:.0}% |",
        100.0 * zip / raw
    );
}
