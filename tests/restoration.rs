//! Paid orders restored by the actors: through the embedded engine and
//! through Replicate's API (a fake with faults), with retries, failures,
//! crashes and their outcomes.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{
    Options, TestApp,
    fake_replicate::{FakeReplicate, Fault},
    photos, spawn_app, spawn_app_with, wait_for_order,
};
use futures::future::BoxFuture;
use restoreclick::providers::restoration::{
    RecordSubmission, RestoreError, RestoreRequest, Restored, Restorer,
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

async fn attempts(app: &TestApp) -> Vec<i32> {
    sqlx::query_scalar("SELECT attempts FROM restoration_jobs ORDER BY created_at")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

async fn emails_of_kind(app: &TestApp, kind: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>("SELECT payload FROM email_queue WHERE kind = $1")
        .bind(kind)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// Pays for these photos; returns (order id, token).
async fn order_of(app: &TestApp, files: Vec<(&str, Vec<u8>)>) -> (String, String) {
    let (_, order, token) = app.order_of(files).await;
    (order, token)
}

#[tokio::test]
async fn many_orders_of_several_photos_are_all_restored_by_the_local_engine() {
    let app = spawn_app().await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        orders.push(app.paid_order(3).await);
    }
    for (order, token) in &orders {
        let body = wait_for_order(&app, order, token, &["completed"], LONG).await;
        assert_eq!(body["progress"]["completed"], 3);
        assert!(body["completed_at"].is_string());
        for image in body["images"].as_array().unwrap() {
            assert_eq!(image["status"], "completed");
            assert_eq!(image["attempts"], 1);
            let original = app
                .client
                .get(app.url(image["original_url"].as_str().unwrap()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let restored = app
                .client
                .get(app.url(image["restored_url"].as_str().unwrap()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(restored.status(), 200);
            let (original, restored) = (original.bytes().await.unwrap(), restored.bytes().await.unwrap());
            // These photos are clean (no grain): the engine leaves them as
            // they came rather than risk making them worse.
            let (a, b) = (
                image::load_from_memory(&original).unwrap(),
                image::load_from_memory(&restored).unwrap(),
            );
            assert_eq!((a.width(), a.height()), (b.width(), b.height()), "same size");
        }
    }
    assert_eq!(emails_of_kind(&app, "restoration_complete").await.len(), 5);
    assert_eq!(
        app.count("SELECT count(*) FROM order_events WHERE kind = 'order' AND status = 'completed'")
            .await,
        5
    );
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE owner_id IS NOT NULL")
            .await,
        0,
        "leases given back"
    );
}

#[tokio::test]
async fn replicate_predictions_restore_every_photo() {
    let fake = FakeReplicate::start().await;
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(3).await;
    let body = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(body["progress"]["completed"], 3);
    assert_eq!(fake.created(), 3, "one prediction per photo");
    assert!(
        fake.input_names().iter().all(|n| n == "img"),
        "the configured image input"
    );
    let restored = body["images"][0]["restored_url"].as_str().unwrap();
    let r = app
        .client
        .get(app.url(restored))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The fake answers PNG; the stored copy says so.
    let key: String = sqlx::query_scalar("SELECT restored_key FROM images ORDER BY position LIMIT 1")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(key.ends_with("_restored.png"), "{key}");
}

#[tokio::test]
async fn large_photos_go_through_the_files_api() {
    let fake = FakeReplicate::start().await;
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        tweak: Some(Box::new(|s| {
            s.replicate.data_uri_limit = 100;
            s.replicate.image_input = "image".into();
        })),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(fake.input_names(), ["image"]);
}

#[tokio::test]
async fn transient_faults_are_retried_to_success() {
    let fake = FakeReplicate::start().await;
    fake.inject([
        Fault::Throttle(1),
        Fault::ServerError(503),
        Fault::ServerError(500),
        Fault::Slow(Duration::from_millis(300)),
    ]);
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let (order, token) = app.paid_order(2).await;
    let body = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(body["progress"]["completed"], 2);
    assert_eq!(
        fake.created(),
        2,
        "faults answered before any prediction was made"
    );
    let attempts = attempts(&app).await;
    assert_eq!(
        attempts.iter().sum::<i32>(),
        4,
        "two successes after two failed attempts; the throttled try spent none: {attempts:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn a_photo_that_always_fails_ends_failed_with_its_error_and_the_order_says_so() {
    let fake = FakeReplicate::start().await;
    let bad = photos::photo(4);
    fake.always_fail(&bad);
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let (order, token) = order_of(
        &app,
        vec![("good.jpg", photos::photo(0)), ("bad.jpg", bad.clone())],
    )
    .await;
    let body = wait_for_order(&app, &order, &token, &["completed", "failed"], LONG).await;
    assert_eq!(
        body["status"], "completed",
        "some photos restored: the order completes"
    );
    assert_eq!(
        body["progress"],
        serde_json::json!({"total": 2, "completed": 1, "failed": 1})
    );
    let failed = &body["images"][1];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 3, "max_attempts");
    assert!(
        failed["error"].as_str().unwrap().contains("CUDA out of memory"),
        "{failed}"
    );
    assert_eq!(fake.created_for(&bad), 3);
    assert_eq!(app.count("SELECT failed_images::bigint FROM orders").await, 1);
    let emails = emails_of_kind(&app, "restoration_complete").await;
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0]["failed_photos"][0]["filename"], "bad.jpg");
}

#[tokio::test]
async fn an_order_whose_photos_all_fail_fails_and_the_customer_is_told() {
    let fake = FakeReplicate::start().await;
    let bad = photos::photo(6);
    fake.always_fail(&bad);
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let (order, token) = order_of(&app, vec![("bad.jpg", bad)]).await;
    let body = wait_for_order(&app, &order, &token, &["completed", "failed"], LONG).await;
    assert_eq!(body["status"], "failed");
    let emails = emails_of_kind(&app, "restoration_failed").await;
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0]["failed_photos"][0]["filename"], "bad.jpg");
    assert!(emails_of_kind(&app, "restoration_complete").await.is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM restoration_jobs WHERE status = 'processing'")
            .await,
        0
    );
}

/// A provider that panics on its first `panics` calls, then copies.
struct Panicky {
    panics: usize,
    calls: AtomicUsize,
    storage: restoreclick::storage::Storage,
}

impl Restorer for Panicky {
    fn name(&self) -> &'static str {
        "panicky"
    }

    fn restore<'a>(
        &'a self,
        request: &'a RestoreRequest,
        _record: RecordSubmission,
    ) -> BoxFuture<'a, Result<Restored, RestoreError>> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.panics {
                panic!("the provider fell over");
            }
            let bytes = self.storage.get(&request.input_key).await?;
            let size = bytes.len() as u64;
            self.storage.put(&request.output_key, bytes).await?;
            Ok(Restored {
                output_key: request.output_key.clone(),
                bytes: size,
            })
        })
    }
}

async fn spawn_with_panics(panics: usize) -> TestApp {
    // The storage is the shop's own directory, known only once the app has its temp dir:
    // build the provider on a directory the test then hands to the shop.
    let dir = tempfile::tempdir().unwrap();
    let storage = restoreclick::storage::Storage::local(dir.path()).unwrap();
    let path = dir.keep();
    spawn_app_with(Options {
        restorer: Some(Arc::new(Panicky {
            panics,
            calls: AtomicUsize::new(0),
            storage,
        })),
        tweak: Some(Box::new(move |s| s.storage.url = path.display().to_string())),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_provider_that_panics_once_restarts_the_actor_and_the_order_completes() {
    let app = spawn_with_panics(1).await;
    let (order, token) = app.paid_order(1).await;
    let body = wait_for_order(&app, &order, &token, &["completed", "failed"], LONG).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(
        body["images"][0]["attempts"], 2,
        "the crashed attempt counts, the next one succeeds"
    );
}

#[tokio::test]
async fn a_provider_that_always_panics_ends_the_order_cleanly() {
    let app = spawn_with_panics(usize::MAX).await;
    let (order, token) = app.paid_order(1).await;
    let body = wait_for_order(&app, &order, &token, &["completed", "failed"], LONG).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["images"][0]["status"], "failed");
    assert_eq!(emails_of_kind(&app, "restoration_failed").await.len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM restoration_jobs WHERE status <> 'failed'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_refund_stops_the_work_on_an_order() {
    let fake = FakeReplicate::start_with(1_000_000).await; // predictions that never end
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let checkout: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = checkout["checkout_session_id"].as_str().unwrap();
    app.post_event(&common::completed_event(cs, session, 500)).await;
    common::eventually(LONG, "the prediction to start", || async { fake.created() == 1 }).await;
    app.post_event(&common::refund_event(cs, 500, 500)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'refunded'")
            .await,
        1
    );
    common::eventually(LONG, "the order's actor to stop", || async {
        app.count("SELECT count(*) FROM orders WHERE owner_id IS NULL")
            .await
            == 1
    })
    .await;
    assert!(emails_of_kind(&app, "restoration_complete").await.is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM restoration_jobs WHERE status = 'processing'")
            .await,
        0
    );
}

const REPLICATE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn with_webhooks_a_pushed_completion_ends_the_wait_without_polling_it_out() {
    let fake = FakeReplicate::start_with(1_000_000).await; // polling alone never sees an end
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        tweak: Some(Box::new(|s| {
            s.replicate.webhooks = true;
            s.replicate.webhook_secret = restoreclick::config::Secret::new(REPLICATE_SECRET);
        })),
        ..Default::default()
    })
    .await;
    fake.send_webhooks(REPLICATE_SECRET, &app.address, Duration::from_millis(200));
    let (order, token) = app.paid_order(2).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE source = 'replicate'")
            .await,
        2
    );
}

#[tokio::test]
async fn replicate_webhooks_are_verified_and_applied_once() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|s| {
            s.replicate.webhooks = true;
            s.replicate.webhook_secret = restoreclick::config::Secret::new(REPLICATE_SECRET);
        })),
        ..Default::default()
    })
    .await;
    let body = r#"{"id":"pred1","status":"succeeded","output":"https://x/y.png","new_field":1}"#;
    let now = common::now();
    let post = |id: &'static str, ts: i64, sig: String, body: &'static str| {
        app.client
            .post(app.url("/api/webhooks/replicate"))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
    };
    let sign = |id: &str, ts: i64, body: &str| {
        restoreclick::providers::restoration::signature::sign(REPLICATE_SECRET, id, ts, body.as_bytes())
            .unwrap()
    };
    assert_eq!(
        post("msg_a", now, sign("msg_a", now, body), body)
            .await
            .unwrap()
            .status(),
        200
    );
    let again: Value = post("msg_a", now, sign("msg_a", now, body), body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        post("msg_b", now, sign("msg_b", now, "{}"), body)
            .await
            .unwrap()
            .status(),
        400,
        "tampered"
    );
    assert_eq!(
        post("msg_c", now - 600, sign("msg_c", now - 600, body), body)
            .await
            .unwrap()
            .status(),
        400,
        "stale"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE source = 'replicate'")
            .await,
        1
    );
}

#[tokio::test]
async fn photos_past_the_live_budget_wait_their_turn_and_every_order_finishes() {
    use common::restorers::{Script, spawn_scripted};
    let (app, restorer) = spawn_scripted(
        Script {
            held: true,
            ..Default::default()
        },
        |s| {
            s.restoration.concurrency = 1;
            s.restoration.max_concurrency = 1;
            s.restoration.max_live_photos = 2;
        },
    )
    .await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(app.paid_order(2).await);
    }
    common::eventually(LONG, "one attempt at the gate", || async {
        restorer.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.metric("restoreclick_live_actors{kind=\"image\"}").await,
        Some(2.0),
        "two photos have actors; four wait as rows"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM images WHERE status = 'uploaded'")
            .await,
        4,
        "the waiting photos' originals are stored; the two with actors are processing"
    );
    restorer.open();
    for (order, token) in &orders {
        let body = wait_for_order(&app, order, token, &["completed"], LONG).await;
        assert_eq!(body["progress"]["completed"], 2);
    }
    assert_eq!(restorer.calls.load(Ordering::SeqCst), 6, "one attempt per photo");
}
