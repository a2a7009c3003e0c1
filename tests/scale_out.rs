//! The real binary against a fake Replicate: killed mid-flight and started
//! again, or one of two instances killed. Every order finishes, each attempt
//! makes at most one prediction, and each email row exists once.

mod common;

use std::time::Duration;

use common::{
    fake_replicate::FakeReplicate,
    shop::{Shop, ShopConfig},
};
use serde_json::Value;
use sqlx::PgPool;

const ORDERS: usize = 4;
const PHOTOS: usize = 2;

/// Uploads, opens a checkout and pays on the dev page, as a customer does.
async fn buy(client: &reqwest::Client, base: &str, seed: usize) -> String {
    let mut form = reqwest::multipart::Form::new();
    for i in 0..PHOTOS {
        let photo =
            common::photos::encode(80 + i as u32, 70, image::ImageFormat::Png, (seed * 10 + i) as u32);
        form = form.part(
            "files",
            reqwest::multipart::Part::bytes(photo).file_name(format!("p{i}.png")),
        );
    }
    let upload: Value = client
        .post(format!("{base}/api/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checkout: Value = client
        .post(format!("{base}/api/checkout"))
        .json(&serde_json::json!({"session_id": upload["session_id"], "email": "scale@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cs = checkout["checkout_session_id"].as_str().unwrap().to_owned();
    let paid = client
        .post(format!("{base}/dev/checkout/{cs}/pay"))
        .send()
        .await
        .unwrap();
    assert!(
        paid.status().is_redirection() || paid.status().is_success(),
        "{}",
        paid.status()
    );
    cs
}

async fn scalar(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

async fn all_finished(db: &PgPool) {
    common::eventually(Duration::from_secs(60), "every order to complete", || async {
        scalar(db, "SELECT count(*) FROM orders WHERE status = 'completed'").await == ORDERS as i64
    })
    .await;
}

/// Each attempt made at most one prediction, every email row exists once,
/// and each was sent exactly once (one outbox file per row).
async fn no_duplicates(db: &PgPool, fake: &FakeReplicate, outbox: &std::path::Path) {
    let attempts = scalar(db, "SELECT sum(attempts)::bigint FROM restoration_jobs").await;
    // A kill between starting an attempt and creating its prediction leaves
    // an attempt that made none; an attempt never makes two.
    assert!(
        fake.created() as i64 <= attempts,
        "at most one prediction per attempt: {} predictions, {attempts} attempts",
        fake.created()
    );
    assert!(attempts >= (ORDERS * PHOTOS) as i64);
    assert_eq!(
        scalar(
            db,
            "SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation'"
        )
        .await,
        ORDERS as i64
    );
    assert_eq!(
        scalar(
            db,
            "SELECT count(*) FROM email_queue WHERE kind = 'restoration_complete'"
        )
        .await,
        ORDERS as i64
    );
    assert_eq!(
        scalar(db, "SELECT count(*) FROM images WHERE status = 'completed'").await,
        (ORDERS * PHOTOS) as i64
    );
    common::eventually(Duration::from_secs(30), "every email sent", || async {
        scalar(db, "SELECT count(*) FROM email_queue WHERE status = 'sent'").await == 2 * ORDERS as i64
    })
    .await;
    let files = std::fs::read_dir(outbox)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .count();
    assert_eq!(files, 2 * ORDERS, "one email per row");
}

#[tokio::test]
async fn killed_mid_flight_and_restarted_every_order_finishes_once() {
    let fake = FakeReplicate::start_with(12).await;
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().unwrap();
    let config = || ShopConfig::serve(&database_url, storage.path()).replicate(&fake.base);
    let mut shop = Shop::start(config()).await;
    let db = PgPool::connect(&database_url).await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for seed in 0..ORDERS {
        buy(&client, &shop.base, seed).await;
    }
    common::eventually(Duration::from_secs(20), "predictions in flight", || async {
        fake.created() >= 3
    })
    .await;
    shop.kill();
    let unfinished = scalar(&db, "SELECT count(*) FROM images WHERE status <> 'completed'").await;
    assert!(unfinished > 0, "killed while work was in flight");

    let _restarted = Shop::start(config()).await;
    all_finished(&db).await;
    no_duplicates(&db, &fake, &storage.path().join("outbox")).await;
}

#[tokio::test]
async fn when_one_of_two_instances_dies_the_other_finishes_its_orders() {
    let fake = FakeReplicate::start_with(12).await;
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().unwrap();
    let db = PgPool::connect(&database_url).await.unwrap();
    let mut serving =
        Shop::start(ShopConfig::serve(&database_url, storage.path()).replicate(&fake.base)).await;
    let worker = Shop::start(ShopConfig {
        command: "worker",
        ..ShopConfig::serve(&database_url, storage.path()).replicate(&fake.base)
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for seed in 0..ORDERS {
        buy(&client, &serving.base, seed).await;
    }
    common::eventually(Duration::from_secs(20), "predictions in flight", || async {
        fake.created() >= 3
    })
    .await;
    let held_by_server = scalar(&db, "SELECT count(*) FROM orders WHERE owner_id LIKE 'serve-%'").await;
    assert!(
        held_by_server > 0,
        "the serving instance holds orders when it dies"
    );
    serving.kill();

    all_finished(&db).await;
    no_duplicates(&db, &fake, &storage.path().join("outbox")).await;
    let finished_by_worker = scalar(
        &db,
        "SELECT count(DISTINCT order_id) FROM order_events WHERE kind = 'order' AND status = 'completed'",
    )
    .await;
    assert_eq!(finished_by_worker, ORDERS as i64);
    let metrics = reqwest::get(format!("{}/metrics", worker.ops_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("restoreclick_jobs_total{provider=\"replicate\",outcome=\"completed\"}"),
        "the worker's own work shows on its metrics:\n{metrics}"
    );
}
