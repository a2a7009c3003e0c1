//! Bounded memory on the real binary: upload bodies are spooled to disk as
//! they arrive and stored photos are served as streams, so neither a
//! gigabyte upload nor a crowd of slow readers grows the shop's memory by
//! more than a small, fixed amount. Memory is the shop process's resident
//! set (`/proc/<pid>/status`), sampled while the load runs.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::shop::{Shop, ShopConfig};
use futures::{StreamExt, stream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MB: u64 = 1 << 20;
const BOUNDARY: &str = "restoreclick-memory-boundary";
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// A real photo followed by zeros up to `size` bytes: the JPEG ends at its
/// end marker, so the padding is carried, stored and served, never decoded.
fn padded_photo_parts(size: u64) -> Vec<Bytes> {
    let photo = common::photos::jpeg(320, 240);
    let mut parts = vec![Bytes::from(photo.clone())];
    let mut left = size - photo.len() as u64;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        parts.push(Bytes::from_static(&ZEROS[..n]));
        left -= n as u64;
    }
    parts
}

/// The multipart body of `files` photos of `size` bytes each, generated as
/// it is sent (the test holds one chunk at a time, not the body).
fn upload_body(files: usize, size: u64) -> reqwest::Body {
    let chunks = stream::iter(0..files).flat_map(move |i| {
        let head = Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"scan{i}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        ));
        let mut part = vec![head];
        part.extend(padded_photo_parts(size));
        part.push(Bytes::from_static(b"\r\n"));
        stream::iter(part)
    });
    let tail = stream::once(async { Bytes::from(format!("--{BOUNDARY}--\r\n")) });
    reqwest::Body::wrap_stream(chunks.chain(tail).map(Ok::<_, std::io::Error>))
}

async fn upload(shop: &Shop, files: usize, size: u64) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/api/upload", shop.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(upload_body(files, size))
        .send()
        .await
        .expect("the shop answers");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.expect("the session")
}

/// Samples the shop's resident memory every 20 ms until stopped; the
/// highest sample.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(shop: &Shop) -> Self {
        let pid_status = shop.status_path();
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = common::shop::rss_of(&pid_status) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self { peak, stop, task }
    }

    async fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

async fn start_shop(storage: &std::path::Path, database_url: &str) -> Shop {
    Shop::start(
        ShopConfig::serve(database_url, storage)
            .env("RESTORECLICK__HTTP__MAX_CONCURRENT_REQUESTS", "1024")
            .env("RESTORECLICK__HTTP__MAX_CONCURRENT_UPLOADS", "1024")
            .env("RESTORECLICK__HTTP__MAX_CONNECTIONS", "2048")
            .env("RESTORECLICK__HTTP__UPLOAD_TIMEOUT", "10m"),
    )
    .await
}

#[tokio::test]
async fn a_one_gigabyte_upload_grows_the_shops_memory_by_less_than_100_mb() {
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().expect("temp dir");
    let shop = start_shop(storage.path(), &database_url).await;
    // Warm the allocator and the pools on a small upload first.
    upload(&shop, 1, MB).await;
    let (before, _) = shop.memory();

    let sampler = Sampler::start(&shop);
    let started = std::time::Instant::now();
    let (files, size) = (21, 48 * MB);
    let session = upload(&shop, files, size).await;
    let took = started.elapsed();
    let peak = sampler.peak().await;

    let stored = session["files"].as_array().expect("files");
    assert_eq!(stored.len(), files);
    assert!(stored.iter().all(|f| f["bytes"] == size), "every byte was kept");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "upload of {} MiB: rss before {} MiB, peak {} MiB, growth {} MiB, {:.1} s",
        files as u64 * size / MB,
        before / MB,
        peak / MB,
        growth / MB,
        took.as_secs_f64()
    );
    assert!(growth < 100 * MB, "memory grew by {} MiB", growth / MB);
}

#[tokio::test]
async fn two_hundred_slow_readers_of_a_40_mb_photo_grow_the_shops_memory_by_less_than_200_mb() {
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().expect("temp dir");
    let shop = start_shop(storage.path(), &database_url).await;
    let session = upload(&shop, 1, 40 * MB).await;
    let session_id = session["session_id"].as_str().expect("session id").to_owned();
    let file_id = session["files"][0]["id"].as_str().expect("file id").to_owned();
    let path = format!("/api/upload/{session_id}/files/{file_id}");
    let address = shop.base.trim_start_matches("http://").to_owned();
    let (before, _) = shop.memory();

    let sampler = Sampler::start(&shop);
    // Each reader asks for the photo, reads its first 64 KiB and then
    // stops reading, holding its connection open.
    let mut readers = Vec::new();
    for _ in 0..200 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect");
        socket
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("send the request");
        let mut head = vec![0u8; 64 << 10];
        socket.read_exact(&mut head).await.expect("the first 64 KiB");
        let text = String::from_utf8_lossy(&head[..200]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(&format!("content-length: {}", 40 * MB)), "{text}");
        readers.push(socket);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = sampler.peak().await;
    let growth = peak.saturating_sub(before);
    eprintln!(
        "200 slow readers of a 40 MiB photo: rss before {} MiB, peak {} MiB, growth {} MiB",
        before / MB,
        peak / MB,
        growth / MB
    );
    assert!(growth < 200 * MB, "memory grew by {} MiB", growth / MB);

    // A reader that does read gets the whole photo.
    let mut reader = readers.pop().expect("a reader");
    let mut rest = Vec::new();
    drop(readers);
    let read = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut rest)).await;
    let total = 64 * 1024 + rest.len();
    assert!(read.is_ok(), "the photo arrives");
    assert!(total as u64 >= 40 * MB, "{total} bytes");
}
