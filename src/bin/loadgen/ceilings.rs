//! The ceilings each figure is a share of, measured in the same run on the
//! same machine: the order transaction alone against Postgres, a bare axum
//! handler, a raw read of the same bytes, and a bare decode of the same files.

use std::{path::Path, sync::Arc, time::Instant};

use anyhow::Context;
use bytes::Bytes;
use restoreclick::{
    config::{Secret, Settings},
    db,
    shop::fulfilment,
    storage::keys,
};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use super::{fixtures, scenarios::timed_all, stats::Summary};

/// A fresh, migrated database on the same server, dropped when done.
pub struct Scratch {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    admin: String,
    name: String,
}

impl Scratch {
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("rc_bench_ceiling_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        let mut settings = Settings::load_with_env(Path::new("config"), &[])?;
        settings.database.url = Secret::new(url.to_string());
        settings.database.max_connections = 40;
        let pool = db::connect(&settings.database).await?;
        db::migrate(&pool).await?;
        Ok(Self {
            pool,
            settings: Arc::new(settings),
            admin: admin_url.to_owned(),
            name,
        })
    }

    pub async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(mut conn) = PgConnection::connect(&self.admin).await {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await;
        }
    }
}

/// The paid-checkout transaction the webhook runs (order, image, job,
/// journal, email), run bare from `concurrency` tasks: the database ceiling.
pub async fn order_transactions(
    scratch: &Scratch,
    concurrency: usize,
    orders: usize,
) -> anyhow::Result<Summary> {
    let mut paid = Vec::with_capacity(orders);
    for _ in 0..orders {
        let session = fixtures::upload_session(&scratch.pool, 1, 1000, |s, f| keys::temp(s, f, "jpg")).await;
        let email = format!("load+{}@example.com", session.simple());
        paid.push(fixtures::paid_event(&scratch.pool, &scratch.settings, session, &email).await);
    }
    let (pool, settings) = (scratch.pool.clone(), scratch.settings.clone());
    let (latencies, wall) = timed_all(paid, concurrency, None, move |(event, payload)| {
        let (pool, settings) = (pool.clone(), settings.clone());
        async move {
            fulfilment::apply(&pool, &settings, &event, &payload).await?;
            anyhow::Ok(())
        }
    })
    .await;
    Ok(latencies.summary(wall))
}

/// A bare axum handler that reads a body and answers JSON, driven like
/// the webhook: the HTTP ceiling.
pub async fn bare_http(concurrency: usize, requests: usize, body: Bytes) -> anyhow::Result<Summary> {
    use axum::{Json, Router, routing::post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/echo", listener.local_addr()?);
    let app = Router::new().route(
        "/echo",
        post(|body: Bytes| async move { Json(serde_json::json!({"received": true, "bytes": body.len()})) }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build()?;
    let (latencies, wall) = timed_all(vec![(); requests], concurrency, None, move |()| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "bare handler answered {}", r.status());
            r.bytes().await?;
            anyhow::Ok(())
        }
    })
    .await;
    server.abort();
    Ok(latencies.summary(wall))
}

/// MB/s of a bare axum handler streaming `file` (256 KiB reads) to
/// `clients` clients `rounds` times each: what HTTP on this machine allows.
pub async fn bare_file_server(file: &Path, clients: usize, rounds: usize) -> anyhow::Result<f64> {
    use axum::{Router, body::Body, routing::get};
    let size = tokio::fs::metadata(file).await?.len();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/file", listener.local_addr()?);
    let path = file.to_owned();
    let app = Router::new().route(
        "/file",
        get(move || {
            let path = path.clone();
            async move {
                match tokio::fs::File::open(&path).await {
                    Ok(f) => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)),
                    Err(e) => Body::from(e.to_string()),
                }
            }
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::new();
    let (_, wall) = timed_all(vec![(); clients * rounds], clients, None, move |()| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            use futures::StreamExt;
            let mut body = client.get(&url).send().await?.bytes_stream();
            while let Some(chunk) = body.next().await {
                chunk?;
            }
            anyhow::Ok(())
        }
    })
    .await;
    server.abort();
    Ok((size * (clients * rounds) as u64) as f64 / 1e6 / wall.as_secs_f64())
}

/// MB/s of `readers` reading `file` `rounds` times each: from the page
/// cache (`cold = false`), or with the file evicted before each reader's
/// first read begins (`cold`: the disk-read ceiling).
pub async fn raw_read(file: &Path, readers: usize, rounds: usize, cold: bool) -> anyhow::Result<f64> {
    use tokio::io::AsyncReadExt;
    let size = tokio::fs::metadata(file).await?.len();
    if cold {
        evict(file)?;
    } else {
        let _warm = tokio::fs::read(file).await?;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            let file = file.to_owned();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 << 10];
                for _ in 0..rounds {
                    let mut f = tokio::fs::File::open(&file).await?;
                    while f.read(&mut buf).await? > 0 {}
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("reader")??;
    }
    Ok((size * (readers * rounds) as u64) as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// Drops a file's pages from the page cache, so its next read comes from
/// the disk (the file is flushed first: only clean pages can be dropped).
pub fn evict(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open for the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    anyhow::ensure!(rc == 0, "posix_fadvise failed on {}: {rc}", path.display());
    Ok(())
}

/// Every file under `dir`, evicted from the page cache.
pub fn evict_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            evict_tree(&path)?;
        } else {
            evict(&path)?;
        }
    }
    Ok(())
}

/// MB/s writing `bytes` to a new file, flushed to the disk.
pub fn raw_write(dir: &Path, bytes: &[u8]) -> anyhow::Result<f64> {
    use std::io::Write;
    let started = Instant::now();
    let mut f = std::fs::File::create(dir.join("ceiling.bin"))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(bytes.len() as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// Files/s and MB/s decoding `files` with `image` alone on `threads`
/// threads: the decode ceiling for validating uploads.
pub fn bare_decode(files: &[Bytes], threads: usize) -> anyhow::Result<(f64, f64)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(i) else {
                            return anyhow::Ok(());
                        };
                        std::hint::black_box(image::load_from_memory(file)?);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a decode thread panicked"))??;
        }
        anyhow::Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: usize = files.iter().map(Bytes::len).sum();
    Ok((files.len() as f64 / seconds, bytes as f64 / 1e6 / seconds))
}
