//! One state transition of a photo's job with its checkpoint — the
//! database round trip each step of a restoration costs: an attempt starts
//! (`queued → processing`, one statement) and is put back for a retry
//! (`processing → queued`, one transaction). Needs Postgres
//! (`TEST_DATABASE_URL`, as the tests).

mod fixtures;

use criterion::{Criterion, criterion_group, criterion_main};
use restoreclick::{
    config::{Secret, Settings},
    db,
    shop::fulfilment,
    storage::keys,
};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// A fresh database holding one paid order of one photo, its original stored.
async fn one_job() -> (PgPool, Uuid, Uuid, String) {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let name = format!("rc_test_bench_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.expect("postgres");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create db");
    let mut url = url::Url::parse(&admin).expect("url");
    url.set_path(&name);
    let mut settings = Settings::load_with_env(std::path::Path::new("config"), &[]).expect("settings");
    settings.database.url = Secret::new(url.to_string());
    let pool = db::connect(&settings.database).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");

    let session = fixtures::upload_session(&pool, 1, 1000, |s, f| keys::temp(s, f, "jpg")).await;
    let (event, payload) = fixtures::paid_event(&pool, &settings, session, "bench@example.com").await;
    fulfilment::apply(&pool, &settings, &event, &payload)
        .await
        .expect("order");
    let (job, image): (Uuid, Uuid) = sqlx::query_as("SELECT id, image_id FROM restoration_jobs")
        .fetch_one(&pool)
        .await
        .expect("job");
    sqlx::query("UPDATE images SET status = 'uploaded'")
        .execute(&pool)
        .await
        .expect("original stored");
    sqlx::query("UPDATE orders SET owner_id = 'bench', lease_until = now() + interval '1 day'")
        .execute(&pool)
        .await
        .expect("order held");
    (pool, job, image, name)
}

fn transitions(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (pool, job, image, name) = runtime.block_on(one_job());
    let mut group = c.benchmark_group("checkpoint");
    group.bench_function("job_start_then_retry", |b| {
        b.to_async(&runtime).iter(|| async {
            let begun = db::jobs::begin_attempt(&pool, job, image, "instant", "bench")
                .await
                .expect("start");
            let db::jobs::Begun::Started(attempt) = begun else {
                panic!("the job was queued: {begun:?}");
            };
            let mut tx = pool.begin().await.expect("tx");
            let written = db::jobs::retry_after(
                &mut tx,
                job,
                attempt,
                "bench",
                Duration::ZERO,
                "bench",
                "transient",
                None,
            )
            .await
            .expect("retry");
            assert!(written, "the attempt was ours");
            tx.commit().await.expect("commit");
        })
    });
    group.finish();
    runtime.block_on(async {
        pool.close().await;
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
        if let Ok(mut conn) = PgConnection::connect(&admin).await {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
                .await;
        }
    });
}

criterion_group!(benches, transitions);
criterion_main!(benches);
