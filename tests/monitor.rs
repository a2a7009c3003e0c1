//! The Monitor: gauges, the four alerts as episodes (fired once, emailed
//! once, resolved), and what it does about them.

mod common;

use std::time::Duration;

use common::{
    Options, TestApp, eventually,
    restorers::{Script, spawn_scripted},
    spawn_app_with, wait_for_order,
};
use restoreclick::config::Settings;

const LONG: Duration = Duration::from_secs(30);

/// Fast ticks, and every alert quiet unless a test arms it.
fn watching(s: &mut Settings) {
    s.monitor.interval = Duration::from_millis(100);
    s.alerts.queue_backup.threshold = 10_000;
    s.alerts.queue_backup.hold = Duration::ZERO;
    s.alerts.slow_processing.threshold = Duration::from_secs(3600);
    s.alerts.slow_processing.min_jobs = 1;
    s.alerts.high_error_rate.min_jobs = 1_000;
    s.alerts.storage_limit.limit_bytes = 0;
}

async fn alert_active(app: &TestApp, alert: &str) -> Option<f64> {
    app.metric(&format!("restoreclick_alert_active{{alert=\"{alert}\"}}"))
        .await
}

async fn alert_status(app: &TestApp, alert: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, episode FROM alerts WHERE name = $1")
        .bind(alert)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn alert_emails(app: &TestApp, alert: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM email_queue WHERE kind = 'admin_alert' AND payload->>'alert' = $1",
    )
    .bind(alert)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_backed_up_queue_fires_once_raises_the_pool_and_resolves_when_it_drains() {
    let (app, restorer) = spawn_scripted(
        Script {
            held: true,
            ..Default::default()
        },
        |s| {
            watching(s);
            s.alerts.queue_backup.threshold = 2;
            s.restoration.concurrency = 1;
            s.restoration.concurrency_step = 1;
            s.restoration.max_concurrency = 3;
        },
    )
    .await;
    let (order, token) = app.paid_order(4).await;

    eventually(LONG, "queue_backup firing", || async {
        alert_active(&app, "queue_backup").await == Some(1.0)
    })
    .await;
    eventually(LONG, "the pool raised to its cap", || async {
        app.metric("restoreclick_pool_concurrency").await == Some(3.0)
    })
    .await;
    assert_eq!(alert_status(&app, "queue_backup").await, ("firing".into(), 1));
    assert_eq!(
        app.metric("restoreclick_queue_depth{queue=\"restoration\"}")
            .await,
        Some(4.0)
    );
    eventually(LONG, "three attempts at once", || async {
        restorer.calls.load(std::sync::atomic::Ordering::SeqCst) == 3
    })
    .await;

    restorer.open();
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    eventually(LONG, "queue_backup resolved", || async {
        alert_active(&app, "queue_backup").await == Some(0.0)
    })
    .await;
    assert_eq!(alert_status(&app, "queue_backup").await, ("resolved".into(), 1));
    eventually(LONG, "the pool back at its base", || async {
        app.metric("restoreclick_pool_concurrency").await == Some(1.0)
    })
    .await;
    assert_eq!(
        alert_emails(&app, "queue_backup").await,
        1,
        "one email per episode"
    );
    eventually(LONG, "the alert email sent", || async {
        app.outbox()
            .iter()
            .any(|m| m.contains("Subject: [RestoreClick] alert queue_backup firing"))
    })
    .await;
    let mail = app
        .outbox()
        .into_iter()
        .find(|m| m.contains("alert queue_backup firing"))
        .unwrap();
    assert!(mail.contains("4 photos are waiting"), "{mail}");
}

#[tokio::test]
async fn a_second_episode_is_a_new_episode_with_its_own_email() {
    let (app, restorer) = spawn_scripted(
        Script {
            held: true,
            ..Default::default()
        },
        |s| {
            watching(s);
            s.alerts.queue_backup.threshold = 1;
        },
    )
    .await;
    let (order, token) = app.paid_order(2).await;
    eventually(LONG, "the first episode", || async {
        alert_status(&app, "queue_backup").await == ("firing".into(), 1)
    })
    .await;
    restorer.open();
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    eventually(LONG, "resolved", || async {
        alert_status(&app, "queue_backup").await.0 == "resolved"
    })
    .await;
    restorer.hold();
    let (order, token) = app.paid_order(2).await;
    eventually(LONG, "the second episode", || async {
        alert_status(&app, "queue_backup").await == ("firing".into(), 2)
    })
    .await;
    restorer.open();
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(alert_emails(&app, "queue_backup").await, 2);
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM email_queue WHERE kind = 'admin_alert' ORDER BY idempotency_key",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(keys, ["alert:queue_backup:1", "alert:queue_backup:2"]);
}

#[tokio::test]
async fn a_high_error_rate_fires() {
    let (app, _restorer) = spawn_scripted(
        Script {
            failing: true,
            ..Default::default()
        },
        |s| {
            watching(s);
            s.alerts.high_error_rate.min_jobs = 2;
            s.alerts.high_error_rate.threshold = 0.5;
        },
    )
    .await;
    let (order, token) = app.paid_order(2).await;
    wait_for_order(&app, &order, &token, &["failed"], LONG).await;
    eventually(LONG, "high_error_rate firing", || async {
        alert_active(&app, "high_error_rate").await == Some(1.0)
    })
    .await;
    assert_eq!(alert_emails(&app, "high_error_rate").await, 1);
    assert_eq!(
        app.metric("restoreclick_images_total{outcome=\"failed\"}").await,
        Some(2.0)
    );
    assert_eq!(alert_active(&app, "queue_backup").await, Some(0.0));
}

#[tokio::test]
async fn slow_restorations_fire_slow_processing() {
    let (app, _restorer) = spawn_scripted(
        Script {
            delay: Duration::from_millis(400),
            ..Default::default()
        },
        |s| {
            watching(s);
            s.alerts.slow_processing.threshold = Duration::from_millis(200);
        },
    )
    .await;
    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    eventually(LONG, "slow_processing firing", || async {
        alert_active(&app, "slow_processing").await == Some(1.0)
    })
    .await;
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM email_queue WHERE payload->>'alert' = 'slow_processing'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(payload["value"].as_f64().unwrap() >= 0.4, "{payload}");
}

#[tokio::test]
async fn storage_past_its_limit_fires_and_runs_the_cleanup_at_once() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(|s| {
            watching(s);
            s.cleanup.interval = Duration::from_secs(3600);
            s.alerts.storage_limit.limit_bytes = 4_000;
            s.alerts.storage_limit.threshold = 0.5;
        })),
        ..Default::default()
    })
    .await;
    let upload = app.upload_photos(2).await;
    let stored: i64 = upload["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_i64().unwrap())
        .sum();
    assert!(stored > 2_000, "the photos must pass half the limit: {stored}");
    // The session is abandoned: the hourly sweep would not reach it for an hour.
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "storage_limit firing", || async {
        alert_status(&app, "storage_limit").await.1 == 1
    })
    .await;
    eventually(LONG, "the abandoned session swept early", || async {
        app.count("SELECT count(*) FROM upload_sessions").await == 0
    })
    .await;
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    eventually(LONG, "storage_limit resolved", || async {
        alert_status(&app, "storage_limit").await == ("resolved".into(), 1)
    })
    .await;
    assert_eq!(
        app.metric("restoreclick_storage_bytes{area=\"temp\"}").await,
        Some(0.0)
    );
    assert_eq!(alert_emails(&app, "storage_limit").await, 1);
}

#[tokio::test]
async fn storage_bytes_follow_the_photos_from_temp_to_originals_and_restored() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(watching)),
        ..Default::default()
    })
    .await;
    let upload = app.upload_photos(2).await;
    let uploaded: f64 = upload["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_f64().unwrap())
        .sum();
    eventually(LONG, "temp bytes counted", || async {
        app.metric("restoreclick_storage_bytes{area=\"temp\"}").await == Some(uploaded)
    })
    .await;

    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    let on_disk = |area: &str| -> f64 {
        app.stored_files()
            .iter()
            .filter(|f| f.starts_with(area))
            .map(|f| std::fs::metadata(app.storage_dir.path().join(f)).unwrap().len() as f64)
            .sum()
    };
    for (area, prefix) in [
        ("temp", "uploads/temp"),
        ("originals", "uploads/originals"),
        ("restored", "uploads/restored"),
    ] {
        let expected = on_disk(prefix);
        eventually(LONG, area, || async {
            app.metric(&format!("restoreclick_storage_bytes{{area=\"{area}\"}}"))
                .await
                == Some(expected)
        })
        .await;
    }
    assert!(on_disk("uploads/restored") > 0.0);
}

#[tokio::test]
async fn every_metric_the_contract_names_is_exported_with_fitting_buckets() {
    let app = spawn_app_with(Options {
        tweak: Some(Box::new(watching)),
        ..Default::default()
    })
    .await;
    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    let link: serde_json::Value = app
        .client
        .post(app.url(&format!("/api/orders/{order}/download-links")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let zip = app
        .client
        .get(app.url(link["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    zip.bytes().await.unwrap();
    eventually(LONG, "the emails sent", || async {
        app.count("SELECT count(*) FROM email_queue WHERE status <> 'sent'")
            .await
            == 0
    })
    .await;
    let text = app.metrics().await;
    // The Prometheus rules and the Grafana dashboard name only what the shop exports.
    for file in ["config/alerts.yml", "config/grafana-dashboard.json"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let source = std::fs::read_to_string(path).unwrap();
        for (at, _) in source.match_indices("restoreclick_") {
            let name: String = source[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let exported = ["", "_bucket", "_count"].iter().any(|suffix| {
                text.contains(&format!("\n{name}{suffix}{{")) || text.contains(&format!("\n{name}{suffix} "))
            });
            assert!(exported, "{file} names {name}, which /metrics does not export");
        }
    }
    for name in [
        "restoreclick_http_requests_total{",
        "restoreclick_http_request_duration_seconds_bucket{",
        "restoreclick_queue_depth{queue=\"restoration\"}",
        "restoreclick_queue_depth{queue=\"email\"}",
        "restoreclick_job_duration_seconds_bucket{provider=\"local\"",
        "restoreclick_jobs_total{provider=\"local\",outcome=\"completed\"}",
        "restoreclick_emails_total{kind=\"order_confirmation\",outcome=\"sent\"}",
        "restoreclick_orders_total{status=\"processing\"}",
        "restoreclick_orders_total{status=\"completed\"}",
        "restoreclick_storage_bytes{area=\"temp\"}",
        "restoreclick_storage_bytes{area=\"originals\"}",
        "restoreclick_storage_bytes{area=\"restored\"}",
        "restoreclick_storage_bytes{area=\"downloads\"}",
        "restoreclick_live_actors{kind=\"order\"}",
        "restoreclick_live_actors{kind=\"image\"}",
        "restoreclick_alert_active{alert=\"queue_backup\"}",
        "restoreclick_alert_active{alert=\"slow_processing\"}",
        "restoreclick_alert_active{alert=\"high_error_rate\"}",
        "restoreclick_alert_active{alert=\"storage_limit\"}",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // HTTP in milliseconds to seconds; restoration in seconds to half an hour.
    assert!(
        text.contains(
            "restoreclick_http_request_duration_seconds_bucket{route=\"/api/upload\",le=\"0.001\"}"
        )
    );
    assert!(text.contains("le=\"1800\""), "{text}");
    assert!(
        !text.contains("restoreclick_job_duration_seconds_bucket{provider=\"local\",le=\"0.001\"}"),
        "restoration buckets start at 50 ms"
    );
}
