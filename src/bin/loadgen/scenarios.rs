//! The scenarios: each prepares what it needs over HTTP, drives the shop,
//! measures its ceilings in the same run, and returns a report.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, stream};
use image::ImageFormat;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use super::{
    Run, ceilings,
    client::{self, Client, Unpaid},
    report::{Curve, Report, Table, f0, f1, pct},
    stats::{Latencies, median, percentile},
};

/// How many times each measured level is run; figures are the medians.
const REPEATS: usize = 3;

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Runs `work` on every item, `concurrency` at a time, timing each; returns
/// the latencies and the wall time of the whole batch.
pub async fn timed_all<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    progress: Option<&ProgressBar>,
    work: F,
) -> (Latencies, Duration)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut latencies = Latencies::default();
    let mut results = stream::iter(items)
        .map(|item| {
            let fut = work(item);
            async move {
                let t = Instant::now();
                (fut.await, t.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut first_error = None;
    while let Some((result, took)) = results.next().await {
        match result {
            Ok(()) => latencies.record(took),
            Err(e) => {
                latencies.error();
                first_error.get_or_insert(e);
            }
        }
        if let Some(bar) = progress {
            bar.inc(1);
        }
    }
    if let Some(e) = first_error {
        eprintln!("loadgen: some requests failed; the first: {e:#}");
    }
    (latencies, started.elapsed())
}

/// `n` upload sessions of `photos` photos each, with checkouts opened.
async fn prepare(http: &Client, photo: &Bytes, photos: usize, n: usize) -> anyhow::Result<Vec<Unpaid>> {
    let progress = bar(n, "uploading sessions");
    let results: Vec<anyhow::Result<Unpaid>> = stream::iter(0..n)
        .map(|_| {
            let (http, photo, progress) = (http.clone(), photo.clone(), progress.clone());
            async move {
                let unpaid = http.unpaid(&photo, photos).await;
                progress.inc(1);
                unpaid
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    progress.finish_and_clear();
    results.into_iter().collect()
}

fn database(run: &Run) -> anyhow::Result<PgPool> {
    let url = run
        .shop
        .database_url
        .as_deref()
        .context("this scenario reads the shop's database: pass --database-url with --target")?;
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(url)?)
}

async fn count(db: &PgPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(db).await?)
}

/// Waits until the shop has no restoration or email work left.
async fn drained(db: &PgPool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(
        db,
        "SELECT (SELECT count(*) FROM restoration_jobs WHERE status NOT IN ('completed', 'failed'))
              + (SELECT count(*) FROM email_queue WHERE status IN ('pending', 'sending'))",
    )
    .await?
        > 0
    {
        if Instant::now() > deadline {
            bail!("the shop did not finish its work in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn small_photo() -> Bytes {
    client::photo(0.01, ImageFormat::Jpeg, 7)
}

pub async fn checkout_storm(run: &Run, levels: &[usize], orders: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("checkout-storm");
    let db = database(run)?;
    let photo = small_photo();
    let scratch = ceilings::Scratch::create(&run.admin_database_url).await?;
    let mut table = Table::new(
        "Signed checkout.session.completed events → durable orders (medians of 3 runs)",
        &[
            "senders",
            "orders/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "DB ceiling orders/s",
            "share of DB ceiling",
            "DB ceiling p99 ms",
            "bare HTTP req/s",
        ],
    );
    let (mut p50, mut p95, mut p99, mut ceiling_p99) = (vec![], vec![], vec![], vec![]);
    let sample = client::completed_event(&Unpaid {
        session_id: "ups_x".into(),
        checkout_id: "cs_x".into(),
        amount: 500,
    })
    .to_string();
    let mut paid_total = 0i64;
    for &c in levels {
        let (mut rates, mut lat, mut db_rates, mut db_p99, mut http_rates) =
            (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..REPEATS {
            let unpaid = prepare(&run.http, &photo, 1, orders).await?;
            let progress = bar(orders, &format!("storm c={c} #{}", round + 1));
            let (http, secret) = (run.http.clone(), run.webhook_secret.clone());
            let (latencies, wall) = timed_all(unpaid, c, Some(&progress), move |u| {
                let (http, secret) = (http.clone(), secret.clone());
                async move { http.pay(&u, &secret).await }
            })
            .await;
            progress.finish_and_clear();
            let s = latencies.summary(wall);
            if s.errors > 0 {
                bail!("{} of {orders} payments failed at {c} senders", s.errors);
            }
            paid_total += orders as i64;
            let durable = count(&db, "SELECT count(*) FROM orders").await?;
            if durable != paid_total {
                bail!("{durable} orders in the database after {paid_total} answered payments");
            }
            rates.push(s.per_second);
            lat.push(s);
            // The ceiling gets the machine to itself: the shop finishes restoring first.
            drained(&db).await?;
            let ceiling = ceilings::order_transactions(&scratch, c, orders).await?;
            db_rates.push(ceiling.per_second);
            db_p99.push(ceiling.p99_ms);
            let bare = ceilings::bare_http(c, orders * 2, Bytes::from(sample.clone())).await?;
            http_rates.push(bare.per_second);
        }
        let m = |f: fn(&super::stats::Summary) -> f64| median(&lat.iter().map(f).collect::<Vec<_>>());
        let (rate, db_rate) = (median(&rates), median(&db_rates));
        table.row(vec![
            c.to_string(),
            f0(rate),
            f1(m(|s| s.p50_ms)),
            f1(m(|s| s.p95_ms)),
            f1(m(|s| s.p99_ms)),
            f0(db_rate),
            pct(rate / db_rate),
            f1(median(&db_p99)),
            f0(median(&http_rates)),
        ]);
        p50.push((c, m(|s| s.p50_ms)));
        p95.push((c, m(|s| s.p95_ms)));
        p99.push((c, m(|s| s.p99_ms)));
        ceiling_p99.push((c, median(&db_p99)));
        report.figure(
            &format!("c{c}"),
            serde_json::json!({"orders_per_s": rate, "db_ceiling_orders_per_s": db_rate, "share": rate / db_rate,
                               "p50_ms": m(|s| s.p50_ms), "p95_ms": m(|s| s.p95_ms), "p99_ms": m(|s| s.p99_ms),
                               "bare_http_per_s": median(&http_rates), "runs": lat}),
        );
    }
    scratch.drop_database().await;
    report.tables.push(table);
    report.curves = vec![
        Curve {
            label: "shop p50".into(),
            points: p50,
        },
        Curve {
            label: "shop p95".into(),
            points: p95,
        },
        Curve {
            label: "shop p99".into(),
            points: p99,
        },
        Curve {
            label: "DB ceiling p99".into(),
            points: ceiling_p99,
        },
    ];
    report.notes.push(
        "Each payment is answered only after its order, images, jobs, journal and confirmation email are committed; \
         the order count in the database is checked after every run. The DB ceiling runs the same transaction \
         (fulfilment::apply) from the same number of tasks without HTTP, signature or Redis; the bare HTTP figure \
         is an axum handler that reads the same body and answers JSON. The shop's actors restore the new orders \
         (instant provider) while the storm runs."
            .into(),
    );
    Ok(report)
}

pub async fn pipeline(run: &Run, orders: usize, photos: usize, pool: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("pipeline");
    let db = database(run)?;
    let photo = small_photo();
    let mut table = Table::new(
        "Paid → completed, instant provider (medians of 3 runs)",
        &[
            "orders × photos",
            "pool",
            "payments/s",
            "images/s",
            "time to complete p50 ms",
            "p95 ms",
            "p99 ms",
        ],
    );
    let (mut rates, mut pay_rates, mut t50, mut t95, mut t99) = (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..REPEATS {
        let unpaid = prepare(&run.http, &photo, photos, orders).await?;
        let before = count(&db, "SELECT count(*) FROM orders WHERE status = 'completed'").await?;
        let progress = bar(orders, &format!("paying #{}", round + 1));
        let (http, secret) = (run.http.clone(), run.webhook_secret.clone());
        let (paid, pay_wall) = timed_all(unpaid.clone(), 32, Some(&progress), move |u| {
            let (http, secret) = (http.clone(), secret.clone());
            async move { http.pay(&u, &secret).await }
        })
        .await;
        progress.finish_and_clear();
        if paid.summary(pay_wall).errors > 0 {
            bail!("some payments failed");
        }
        let target = before + orders as i64;
        let progress = bar(orders, &format!("restoring #{}", round + 1));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done = count(&db, "SELECT count(*) FROM orders WHERE status = 'completed'").await?;
            progress.set_position((done - before).max(0) as u64);
            if done >= target {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} of {orders} orders completed after 10 minutes", done - before);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        progress.finish_and_clear();
        let checkouts: Vec<String> = unpaid.iter().map(|u| u.checkout_id.clone()).collect();
        let (first, last, times): (f64, f64, Vec<f64>) = {
            let rows: Vec<(f64, f64)> = sqlx::query_as(
                "SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM completed_at)::float8
                 FROM orders WHERE stripe_checkout_session_id = ANY($1)",
            )
            .bind(&checkouts)
            .fetch_all(&db)
            .await?;
            let first = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
            let last = rows.iter().map(|r| r.1).fold(0.0, f64::max);
            (first, last, rows.iter().map(|r| (r.1 - r.0) * 1000.0).collect())
        };
        rates.push((orders * photos) as f64 / (last - first));
        pay_rates.push(orders as f64 / pay_wall.as_secs_f64());
        t50.push(percentile(&times, 0.5));
        t95.push(percentile(&times, 0.95));
        t99.push(percentile(&times, 0.99));
    }
    let images_per_s = median(&rates);
    table.row(vec![
        format!("{orders} × {photos}"),
        pool.to_string(),
        f0(median(&pay_rates)),
        f0(images_per_s),
        f0(median(&t50)),
        f0(median(&t95)),
        f0(median(&t99)),
    ]);
    report.tables.push(table);
    report.figure("images_per_s", images_per_s);
    report.figure("runs_images_per_s", &rates);
    report.figure("payments_per_s", median(&pay_rates));
    report.notes.push(format!(
        "images/s = photos of the run's orders / (last completed_at − first created_at), read from the shop's \
         database; each order is paid by a signed webhook from 32 senders. When payments/s × {photos} is near \
         images/s, the payments bound the figure rather than the pipeline."
    ));
    Ok(report)
}

pub async fn uploads(run: &Run, levels: &[usize], files: usize, megapixels: f64) -> anyhow::Result<Report> {
    let mut report = Report::new("uploads");
    let photos: Vec<(String, Bytes)> = (0..files)
        .map(|i| {
            let (format, ext) = if i % 2 == 0 {
                (ImageFormat::Jpeg, "jpg")
            } else {
                (ImageFormat::Png, "png")
            };
            (
                format!("photo-{i}.{ext}"),
                client::photo(megapixels, format, i as u32),
            )
        })
        .collect();
    let bytes: usize = photos.iter().map(|p| p.1.len()).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let blobs: Vec<Bytes> = photos.iter().map(|p| p.1.clone()).collect();
    let mut table = Table::new(
        &format!(
            "Validated uploads of {files} photos of {megapixels} MP (half JPEG, half PNG; medians of 3 runs)"
        ),
        &[
            "clients",
            "files/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "decode ceiling files/s",
            "share of ceiling",
        ],
    );
    let (mut ceiling_rates, mut ceiling_mb) = (vec![], vec![]);
    for _ in 0..REPEATS {
        let blobs = blobs.clone();
        let (rate, mb) = tokio::task::spawn_blocking(move || ceilings::bare_decode(&blobs, cores)).await??;
        ceiling_rates.push(rate);
        ceiling_mb.push(mb);
    }
    let ceiling = median(&ceiling_rates);
    let mut best_share: f64 = 0.0;
    for &c in levels {
        let (mut rates, mut sums) = (vec![], vec![]);
        for round in 0..REPEATS {
            let progress = bar(files, &format!("uploads c={c} #{}", round + 1));
            let http = run.http.clone();
            let (latencies, wall) = timed_all(photos.clone(), c, Some(&progress), move |file| {
                let http = http.clone();
                async move { http.upload(&[file], None).await.map(drop) }
            })
            .await;
            progress.finish_and_clear();
            let s = latencies.summary(wall);
            if s.errors > 0 {
                bail!("{} uploads failed", s.errors);
            }
            rates.push(s.per_second);
            sums.push(s);
        }
        let rate = median(&rates);
        best_share = best_share.max(rate / ceiling);
        table.row(vec![
            c.to_string(),
            f1(rate),
            f1(rate * bytes as f64 / files as f64 / 1e6),
            f0(median(&sums.iter().map(|s| s.p50_ms).collect::<Vec<_>>())),
            f0(median(&sums.iter().map(|s| s.p99_ms).collect::<Vec<_>>())),
            f1(ceiling),
            pct(rate / ceiling),
        ]);
        report.figure(
            &format!("c{c}"),
            serde_json::json!({"files_per_s": rate, "share": rate / ceiling}),
        );
    }
    report.tables.push(table);
    report.figure("decode_ceiling_files_per_s", ceiling);
    report.figure("decode_ceiling_mb_per_s", median(&ceiling_mb));
    report.figure("best_share_of_decode_ceiling", best_share);
    report.notes.push(format!(
        "The decode ceiling decodes the same {files} files with `image` alone on {cores} threads (one per core). \
         Each upload is one request with one file: magic bytes, header, full decode under limits, checksum, \
         storage write and rows."
    ));
    Ok(report)
}

pub async fn downloads(
    run: &Run,
    levels: &[usize],
    photos: usize,
    photo_mb: usize,
    rounds: usize,
) -> anyhow::Result<Report> {
    let mut report = Report::new("downloads");
    // Noise does not compress: a PNG of it is as big as its pixels.
    let side = (((photo_mb << 20) / 3) as f64).sqrt() as u32;
    let files: Vec<(String, Bytes)> = (0..photos)
        .map(|i| (format!("noise-{i}.png"), noise_png(side, i as u64)))
        .collect();
    let mut session: Option<String> = None;
    for chunk in files.chunks(10) {
        let view = run.http.upload(chunk, session.as_deref()).await?;
        session = view["session_id"].as_str().map(str::to_owned);
    }
    let session = session.context("no upload session")?;
    let checkout: serde_json::Value = run
        .http
        .raw()
        .post(run.http.url("/api/checkout"))
        .json(&serde_json::json!({"session_id": session}))
        .send()
        .await?
        .json()
        .await?;
    let unpaid = Unpaid {
        session_id: session,
        checkout_id: checkout["checkout_session_id"]
            .as_str()
            .context("checkout")?
            .to_owned(),
        amount: 500 * photos as i64,
    };
    run.http.pay(&unpaid, &run.webhook_secret).await?;
    let (order, token) = run.http.order_of(&unpaid.checkout_id).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while run.http.order(&order, &token).await?["status"] != "completed" {
        if Instant::now() > deadline {
            bail!("the order did not complete in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One download to build the cached archive and keep a copy for the ceiling.
    let scratch = tempfile::tempdir()?;
    let zip_path = scratch.path().join("order.zip");
    let link = run.http.link(&order, &token).await?;
    let zip = run
        .http
        .raw()
        .get(run.http.url(&link))
        .send()
        .await?
        .bytes()
        .await?;
    std::fs::write(&zip_path, &zip)?;
    let zip_mb = zip.len() as f64 / 1e6;
    let storage = run.shop.storage_dir();
    let mut table = Table::new(
        &format!("ZIP of {photos} restored photos ({zip_mb:.0} MB) over HTTP (medians of 3 runs)"),
        &[
            "clients",
            "read from",
            "ZIP MB/s",
            "raw read MB/s",
            "share of raw read",
            "bare HTTP file MB/s",
            "share of bare HTTP",
            "p50 s per ZIP",
        ],
    );
    let mut disk_shares = Vec::new();
    for &c in levels {
        for cold in [true, false] {
            if cold && storage.is_none() {
                continue; // the shop's files are out of reach with --target
            }
            // A cold run reads each byte once after the eviction; later rounds would be warm.
            let rounds = if cold { 1 } else { rounds };
            let (mut rates, mut raw, mut bare, mut p50) = (vec![], vec![], vec![], vec![]);
            for _ in 0..REPEATS {
                let mut links = Vec::new();
                for _ in 0..(c * rounds).div_ceil(5) {
                    links.push(run.http.link(&order, &token).await?);
                }
                let paths: Vec<String> = links
                    .iter()
                    .flat_map(|l| std::iter::repeat_n(l.clone(), 5))
                    .take(c * rounds)
                    .collect();
                if let (true, Some(dir)) = (cold, &storage) {
                    ceilings::evict_tree(dir)?;
                }
                let http = run.http.clone();
                let (latencies, wall) = timed_all(paths, c, None, move |path| {
                    let http = http.clone();
                    async move { http.drain(&path).await.map(drop) }
                })
                .await;
                let s = latencies.summary(wall);
                if s.errors > 0 {
                    bail!("{} downloads failed", s.errors);
                }
                rates.push(zip.len() as f64 * (c * rounds) as f64 / 1e6 / wall.as_secs_f64());
                p50.push(s.p50_ms / 1000.0);
                raw.push(ceilings::raw_read(&zip_path, c, rounds, cold).await?);
                if cold {
                    ceilings::evict(&zip_path)?;
                }
                bare.push(ceilings::bare_file_server(&zip_path, c, rounds).await?);
            }
            let (rate, ceiling, http) = (median(&rates), median(&raw), median(&bare));
            if cold {
                disk_shares.push(rate / ceiling);
            }
            let from = if cold { "disk" } else { "page cache" };
            table.row(vec![
                c.to_string(),
                from.to_owned(),
                f0(rate),
                f0(ceiling),
                pct(rate / ceiling),
                f0(http),
                pct(rate / http),
                format!("{:.2}", median(&p50)),
            ]);
            report.figure(
                &format!("c{c}_{}", if cold { "disk" } else { "cache" }),
                serde_json::json!({"mb_per_s": rate, "raw_read_mb_per_s": ceiling, "share": rate / ceiling,
                                   "bare_http_file_mb_per_s": http, "share_of_bare_http": rate / http}),
            );
        }
    }
    let write = ceilings::raw_write(scratch.path(), &zip)?;
    report.tables.push(table);
    report.figure(
        "worst_share_of_disk_read",
        disk_shares.iter().copied().fold(f64::INFINITY, f64::min),
    );
    report.figure("raw_write_mb_per_s", write);
    report.notes.push(format!(
        "The shop serves the archive it built once into storage (downloads.zip_ttl). \"disk\": the shop's files and \
         the raw copy are dropped from the page cache before each run (posix_fadvise), so both read from the disk — \
         the disk-read ceiling; \"page cache\": both warm. The raw read is a plain read of the same archive's bytes \
         by as many readers as clients; a raw write of it, flushed, ran at {write:.0} MB/s."
    ));
    Ok(report)
}

fn noise_png(side: u32, seed: u64) -> Bytes {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let img = image::RgbImage::from_fn(side.max(64), side.max(64), |_, _| image::Rgb(rng.random()));
    let mut out = std::io::Cursor::new(Vec::new());
    let _ = image::DynamicImage::ImageRgb8(img).write_to(&mut out, ImageFormat::Png);
    Bytes::from(out.into_inner())
}

/// One sample of the shop's health during a soak.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    at_s: f64,
    rss_mb: f64,
    sockets: usize,
    restoration_depth: f64,
    email_depth: f64,
    journeys: u64,
}

async fn queue_depth(http: &Client, ops: &str, queue: &str) -> f64 {
    let text = http.get_text(&format!("{ops}/metrics")).await.unwrap_or_default();
    let series = format!("restoreclick_queue_depth{{queue=\"{queue}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One customer's whole journey: upload, pay, wait, look, download.
async fn journey(http: &Client, secret: &str, photo: &Bytes) -> anyhow::Result<()> {
    let unpaid = http.unpaid(photo, 2).await?;
    http.pay(&unpaid, secret).await?;
    let (order, token) = http.order_of(&unpaid.checkout_id).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let view = http.order(&order, &token).await?;
        if view["status"] == "completed" {
            break;
        }
        if Instant::now() > deadline {
            bail!("order {order} not completed in 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let link = http.link(&order, &token).await?;
    http.drain(&link).await?;
    Ok(())
}

pub async fn soak(run: &Run, duration: Duration, customers: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("soak");
    let ops = run
        .shop
        .ops_base
        .clone()
        .context("the soak reads a started shop's process: leave out --target")?;
    let photo = client::photo(0.3, ImageFormat::Jpeg, 3);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_at = Instant::now() + duration;
    let workers: Vec<_> = (0..customers)
        .map(|_| {
            let (http, secret, photo) = (run.http.clone(), run.webhook_secret.clone(), photo.clone());
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    match journey(&http, &secret, &photo).await {
                        Ok(()) => done.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("loadgen: a journey failed: {e:#}");
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let started = Instant::now();
    let progress = bar(duration.as_secs() as usize, "soaking (s)");
    let mut samples = Vec::new();
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_secs(5).min(stop_at.saturating_duration_since(Instant::now())))
            .await;
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_mb: run.shop.rss().unwrap_or(0) as f64 / 1e6,
            sockets: run.shop.sockets().unwrap_or(0),
            restoration_depth: queue_depth(&run.http, &ops, "restoration").await,
            email_depth: queue_depth(&run.http, &ops, "email").await,
            journeys: done.load(std::sync::atomic::Ordering::Relaxed),
        });
        progress.set_position(started.elapsed().as_secs());
    }
    for w in workers {
        let _ = w.await;
    }
    progress.finish_and_clear();
    let fifth = (samples.len() / 5).max(1);
    let mean = |s: &[Sample], f: fn(&Sample) -> f64| s.iter().map(f).sum::<f64>() / s.len().max(1) as f64;
    let (head, tail) = (
        &samples[..fifth.min(samples.len())],
        &samples[samples.len().saturating_sub(fifth)..],
    );
    let mut table = Table::new(
        &format!(
            "{customers} customers' journeys for {} (upload 2 photos, pay, wait, view, download)",
            humantime::format_duration(duration)
        ),
        &["", "RSS MB", "open sockets", "restoration queue", "email queue"],
    );
    for (name, part) in [("first fifth", head), ("last fifth", tail)] {
        table.row(vec![
            name.to_owned(),
            f1(mean(part, |s| s.rss_mb)),
            f1(mean(part, |s| s.sockets as f64)),
            f1(mean(part, |s| s.restoration_depth)),
            f1(mean(part, |s| s.email_depth)),
        ]);
    }
    let journeys = done.load(std::sync::atomic::Ordering::Relaxed);
    let rss_growth = mean(tail, |s| s.rss_mb) / mean(head, |s| s.rss_mb).max(1e-9) - 1.0;
    report.tables.push(table);
    report.figure("journeys", journeys);
    report.figure(
        "failed_journeys",
        failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    report.figure("journeys_per_s", journeys as f64 / duration.as_secs_f64());
    report.figure("rss_growth", rss_growth);
    report.figure("samples", &samples);
    report.notes.push(format!(
        "{journeys} journeys ({:.1}/s); RSS from the first to the last fifth of the run: {:+.1} %; samples every 5 s \
         in soak.json.",
        journeys as f64 / duration.as_secs_f64(),
        rss_growth * 100.0
    ));
    Ok(report)
}

pub async fn live_orders(run: &Run, orders: usize, photos: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("live-orders");
    let ops = run
        .shop
        .ops_base
        .clone()
        .context("live-orders reads a started shop's process: leave out --target")?;
    let rss_idle = run.shop.rss().unwrap_or(0) as f64 / 1e6;
    let photo = small_photo();
    let unpaid = prepare(&run.http, &photo, photos, orders).await?;
    let progress = bar(orders, "paying");
    let (http, secret) = (run.http.clone(), run.webhook_secret.clone());
    let (paid, wall) = timed_all(unpaid, 32, Some(&progress), move |u| {
        let (http, secret) = (http.clone(), secret.clone());
        async move { http.pay(&u, &secret).await }
    })
    .await;
    progress.finish_and_clear();
    if paid.summary(wall).errors > 0 {
        bail!("some payments failed");
    }
    let metric = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // Every order has started once no original is left in temp storage.
    let db = database(run)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(&db, "SELECT count(*) FROM images WHERE status = 'pending'").await? > 0 {
        if Instant::now() > deadline {
            bail!("the orders did not all start in 10 minutes");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut rss = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss.push(run.shop.rss().unwrap_or(0) as f64 / 1e6);
    }
    let text = run
        .http
        .get_text(&format!("{ops}/metrics"))
        .await
        .unwrap_or_default();
    let order_actors = metric(&text, "restoreclick_live_actors{kind=\"order\"} ");
    let image_actors = metric(&text, "restoreclick_live_actors{kind=\"image\"} ");
    let peak = rss.iter().copied().fold(0.0, f64::max);
    let all = (orders * photos) as f64;
    let mut table = Table::new(
        &format!("{orders} live orders of {photos} photos waiting on a provider that never finishes"),
        &[
            "order actors",
            "image actors",
            "photos waiting as rows",
            "RSS idle MB",
            "RSS live MB (peak of 1 min)",
            "KB per photo",
        ],
    );
    table.row(vec![
        f0(order_actors),
        f0(image_actors),
        f0(all - image_actors),
        f1(rss_idle),
        f1(peak),
        f1((peak - rss_idle) * 1000.0 / all),
    ]);
    report.tables.push(table);
    report.figure("rss_peak_mb", peak);
    report.figure("rss_idle_mb", rss_idle);
    report.figure("order_actors", order_actors);
    report.figure("image_actors", image_actors);
    report.notes.push(
        "The provider is a fake Replicate on loopback whose predictions stay `processing`. Every order has its \
         actor; restoration.max_live_photos photos have theirs (restoration.concurrency of them polling, the rest \
         queued in the pool), and the others wait as rows for a photo slot, first come, first served."
            .into(),
    );
    Ok(report)
}
