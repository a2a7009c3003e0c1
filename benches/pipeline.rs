//! The orchestration's throughput: paid orders restored with the `instant`
//! provider (which copies the photo), so the figure is the actor tree,
//! Postgres checkpoints and storage moves alone.
//!
//! Orders are paid through the real fulfilment path (a Stripe event applied
//! in its transaction), then the actor tree is started and timed until every
//! order is `completed`. Needs Postgres (`TEST_DATABASE_URL`, as the tests).
//!
//! With `PIPELINE_OPTIONS` (say `faces,colorize,upscale_2x`) every photo
//! runs that chain, and the bench reports each step's orchestration
//! overhead: with instant models, the time from one step's output being
//! recorded to the next one's is the shop's own work (the step's commit,
//! the actor's next message, the attempt's checkpoint, the pool, the
//! storage copy), as a median and a p99.
//!
//! Run: `cargo bench --bench pipeline` (`PIPELINE_ORDERS`, `PIPELINE_PHOTOS`,
//! `PIPELINE_CONCURRENCY`, `PIPELINE_OPTIONS` to change the load).

mod fixtures;

use std::{sync::Arc, time::Instant};

use restoreclick::{
    config::{RestorationProvider, Secret, Settings},
    db,
    domain::options::Choice,
    shop::{checkout::Selection, fulfilment},
    startup::Workers,
    storage::{Storage, keys},
};
use sqlx::{Connection, Executor, PgConnection};

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
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (orders, photos, concurrency) = (
        env_or("PIPELINE_ORDERS", 1000),
        env_or("PIPELINE_PHOTOS", 3),
        env_or("PIPELINE_CONCURRENCY", 32),
    );
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let name = format!("rc_test_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.expect("postgres");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create db");
    let mut url = url::Url::parse(&admin).expect("url");
    url.set_path(&name);

    let dir = tempfile::tempdir().expect("temp dir");
    let env = vec![("APP_ENV".to_owned(), "test".to_owned())];
    let mut settings = Settings::load_with_env(std::path::Path::new("config"), &env).expect("settings");
    settings.database.url = Secret::new(url.to_string());
    settings.database.max_connections = 20;
    settings.storage.url = dir.path().display().to_string();
    settings.restoration.provider = Some(RestorationProvider::Instant);
    settings.restoration.concurrency = concurrency;
    let settings = Arc::new(settings);
    let pool = db::connect(&settings.database).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    let storage = Storage::open(&settings).expect("storage");

    let options: Vec<String> = std::env::var("PIPELINE_OPTIONS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    let selection = Selection {
        every: Choice::parse(&options, |_| true).expect("PIPELINE_OPTIONS names options"),
        ..Selection::default()
    };
    let photo = tiny_jpeg();
    let paid = Instant::now();
    for n in 0..orders {
        pay(&pool, &settings, &storage, &photo, photos, n, &selection).await;
    }
    let paying = paid.elapsed();
    // Planner statistics, as a live database has them (autovacuum would take a minute).
    sqlx::query("ANALYZE").execute(&pool).await.expect("analyze");

    let started = Instant::now();
    let workers = Workers::start(settings.clone(), pool.clone(), storage)
        .await
        .expect("workers");
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'completed'")
            .fetch_one(&pool)
            .await
            .expect("count");
        if done as usize == orders {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    workers.stop().await;
    let images = (orders * photos) as f64;
    println!(
        "| orders | photos each | steps each | pool concurrency | paid in (s) | restored in (s) | images/s | orders/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {orders} | {photos} | {} | {concurrency} | {:.2} | {elapsed:.2} | {:.0} | {:.0} |",
        options.len() + 1,
        paying.as_secs_f64(),
        images / elapsed,
        orders as f64 / elapsed
    );
    if !options.is_empty() {
        // Each step after the first: from the previous step's output recorded to its own.
        let mut gaps: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM s.finished_at - p.finished_at)::float8 * 1000
             FROM image_steps s JOIN image_steps p ON p.image_id = s.image_id AND p.position = s.position - 1
             WHERE s.status = 'completed' AND p.status = 'completed'",
        )
        .fetch_all(&pool)
        .await
        .expect("step gaps");
        gaps.sort_by(f64::total_cmp);
        let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize];
        println!();
        println!("| steps measured | overhead per step, median (ms) | p99 (ms) | max (ms) |");
        println!("|---|---|---|---|");
        println!(
            "| {} | {:.1} | {:.1} | {:.1} |",
            gaps.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    pool.close().await;
    if std::env::var_os("PIPELINE_KEEP_DB").is_some() {
        eprintln!("kept database {name}");
        return;
    }
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .await;
}

/// One upload session with `photos` files in temp storage, paid by a
/// `checkout.session.completed` applied through fulfilment.
async fn pay(
    pool: &sqlx::PgPool,
    settings: &Settings,
    storage: &Storage,
    photo: &[u8],
    photos: usize,
    n: usize,
    selection: &Selection,
) {
    let session =
        fixtures::upload_session(pool, photos, photo.len() as i64, |s, f| keys::temp(s, f, "jpg")).await;
    for file in db::uploads::list_files(pool, session).await.expect("files") {
        storage
            .put(&file.storage_key, photo.to_vec().into())
            .await
            .expect("put");
    }
    let (event, payload) = fixtures::paid_event_with(
        pool,
        settings,
        session,
        &format!("bench{n}@example.com"),
        selection,
    )
    .await;
    fulfilment::apply(pool, settings, &event, &payload)
        .await
        .expect("fulfilment");
}

fn tiny_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("jpeg");
    out.into_inner()
}
