//! `POST /api/webhooks/stripe`: signatures, exactly-once orders, refunds.

mod common;

use std::time::Duration;

use common::private_redis::PrivateRedis;
use common::{WEBHOOK_SECRET, checkout_event, completed_event, now, refund_event, spawn_app, spawn_app_with};
use restoreclick::providers::payments::signature;
use serde_json::{Value, json};

/// An upload session with `n` photos and an open checkout: (session id, checkout id).
async fn open_checkout(app: &common::TestApp, n: usize) -> (String, String) {
    let upload = app.upload_photos(n).await;
    let session = upload["session_id"].as_str().unwrap().to_owned();
    let checkout: Value = app.checkout(&session, None).await.json().await.unwrap();
    (
        session,
        checkout["checkout_session_id"].as_str().unwrap().to_owned(),
    )
}

async fn orders(app: &common::TestApp) -> i64 {
    app.count("SELECT count(*) FROM orders").await
}

async fn confirmations(app: &common::TestApp) -> i64 {
    app.count("SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation'")
        .await
}

#[tokio::test]
async fn a_paid_checkout_becomes_one_durable_order_with_everything_it_needs() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 3).await;
    let response = app.post_event(&completed_event(&cs, &session, 1500)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));

    // Committed before the 200.
    assert_eq!(orders(&app).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM images").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM restoration_jobs").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation' AND to_email = 'Buyer@Example.com'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE email = 'buyer@example.com'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM upload_sessions WHERE status = 'paid'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_events WHERE (kind = 'order' AND status = 'processing') OR (kind = 'image' AND status = 'pending')")
            .await,
        4
    );

    // The order token is only ever stored hashed.
    let (_, body) = app.get_json(&format!("/api/checkout/{cs}")).await;
    let token = body["order_token"].as_str().unwrap();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT access_token_hash FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_ne!(stored, token.as_bytes());
    assert_eq!(stored.len(), 32);

    // The actors store the originals, restore every photo and finish the order.
    common::eventually(Duration::from_secs(20), "the order to complete", || async {
        app.count("SELECT count(*) FROM orders WHERE status = 'completed'")
            .await
            == 1
    })
    .await;
    let restored = app.stored_files();
    assert_eq!(
        restored
            .iter()
            .filter(|k| k.starts_with("uploads/restored/"))
            .count(),
        3,
        "{restored:?}"
    );
    assert!(
        restored.iter().any(|k| k.ends_with("001_photo_restored.jpg")),
        "{restored:?}"
    );
    let stored = app.stored_files();
    assert_eq!(
        stored
            .iter()
            .filter(|k| k.starts_with("uploads/originals/"))
            .count(),
        3,
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|k| k.ends_with("001_photo_original.jpg")),
        "{stored:?}"
    );
    assert!(
        !stored.iter().any(|k| k.starts_with("uploads/temp/")),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_wrong_secret_a_stale_timestamp_no_header_or_a_tampered_body_are_refused() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 1).await;
    let body = completed_event(&cs, &session, 500).to_string();

    let wrong = signature::sign(body.as_bytes(), "whsec_not_ours", now());
    let stale = signature::sign(body.as_bytes(), WEBHOOK_SECRET, now() - 301);
    let good = signature::sign(body.as_bytes(), WEBHOOK_SECRET, now());
    let tampered = body.replace("\"amount_total\":500", "\"amount_total\":1");
    assert_ne!(tampered, body);
    for (what, body, header) in [
        ("wrong secret", body.as_str(), Some(wrong.as_str())),
        ("stale timestamp", body.as_str(), Some(stale.as_str())),
        ("no header", body.as_str(), None),
        ("garbage header", body.as_str(), Some("t=abc,v1=xyz")),
        ("tampered body", tampered.as_str(), Some(good.as_str())),
    ] {
        let response = app.post_webhook_raw(body, header).await;
        assert_eq!(response.status(), 400, "{what}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_signature", "{what}");
    }
    assert_eq!(orders(&app).await, 0);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);

    // Several v1 values (a secret being rolled): any match is enough.
    let sig = good.split("v1=").nth(1).unwrap();
    let rotated = format!("t={},v1={},v1={sig}", now(), "ab".repeat(32));
    assert_eq!(app.post_webhook_raw(&body, Some(&rotated)).await.status(), 200);
    assert_eq!(orders(&app).await, 1);
}

#[tokio::test]
async fn twenty_concurrent_deliveries_of_one_event_make_one_order_and_one_email() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 2).await;
    let event = completed_event(&cs, &session, 1000);
    let deliveries = (0..20).map(|_| app.post_event(&event));
    let statuses: Vec<u16> = futures::future::join_all(deliveries)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(orders(&app).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM images").await, 2);
    assert_eq!(confirmations(&app).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1);
}

#[tokio::test]
async fn two_different_events_for_one_paid_checkout_make_one_order() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 1).await;
    let completed = completed_event(&cs, &session, 500);
    let succeeded = checkout_event(
        "checkout.session.async_payment_succeeded",
        &cs,
        &session,
        500,
        "paid",
    );
    let (a, b) = tokio::join!(app.post_event(&completed), app.post_event(&succeeded));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(orders(&app).await, 1);
    assert_eq!(confirmations(&app).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 2);
}

#[tokio::test]
async fn a_second_payment_for_a_paid_session_makes_no_second_order_and_alerts_the_operator() {
    let app = spawn_app().await;
    let (session, first) = open_checkout(&app, 1).await;
    app.post_event(&completed_event(&first, &session, 500)).await;
    let second = "cs_test_second_payment";
    let response = app.post_event(&completed_event(second, &session, 500)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(orders(&app).await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM email_queue WHERE kind = 'admin_alert'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_delayed_payment_makes_the_order_only_when_it_succeeds() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 1).await;
    let unpaid = checkout_event("checkout.session.completed", &cs, &session, 500, "unpaid");
    assert_eq!(app.post_event(&unpaid).await.status(), 200);
    assert_eq!(orders(&app).await, 0);
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "pending");

    let succeeded = checkout_event(
        "checkout.session.async_payment_succeeded",
        &cs,
        &session,
        500,
        "paid",
    );
    assert_eq!(app.post_event(&succeeded).await.status(), 200);
    assert_eq!(orders(&app).await, 1);
}

#[tokio::test]
async fn unknown_event_types_are_acknowledged_and_ignored() {
    let app = spawn_app().await;
    let event = json!({"id": "evt_unknown_1", "object": "event", "type": "customer.subscription.paused",
                       "api_version": "2031-01-01", "data": {"object": {"id": "sub_1", "anything": [1]}}});
    let response = app.post_event(&event).await;
    assert_eq!(response.status(), 200);
    assert_eq!(orders(&app).await, 0);
}

#[tokio::test]
async fn malformed_but_signed_bodies_are_refused_clearly() {
    let app = spawn_app().await;
    for body in ["not json", "{\"no\":\"envelope\"}"] {
        let header = signature::sign(body.as_bytes(), WEBHOOK_SECRET, now());
        let response = app.post_webhook_raw(body, Some(&header)).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_payload");
    }
}

#[tokio::test]
async fn a_full_refund_moves_the_order_to_refunded_and_cancels_its_work() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 2).await;
    app.post_event(&completed_event(&cs, &session, 1000)).await;

    let partial = refund_event(&cs, 1000, 500);
    assert_eq!(app.post_event(&partial).await.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'processing' AND amount_refunded = 500")
            .await,
        1
    );

    let full = refund_event(&cs, 1000, 1000);
    assert_eq!(app.post_event(&full).await.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'refunded'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM restoration_jobs WHERE status = 'pending'")
            .await,
        0
    );
    let (_, body) = app.get_json(&format!("/api/checkout/{cs}")).await;
    let (order, token) = (
        body["order_id"].as_str().unwrap(),
        body["order_token"].as_str().unwrap(),
    );
    let (status, order) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(status, 200);
    assert_eq!(order["status"], "refunded");

    // The same refund again changes nothing.
    assert_eq!(app.post_event(&full).await.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM order_events WHERE status = 'refunded'")
            .await,
        1
    );
}

#[tokio::test]
async fn with_redis_stopped_a_repeated_event_still_makes_exactly_one_order() {
    let mut redis = PrivateRedis::start();
    let port = redis.port;
    let app = spawn_app_with(common::Options {
        tweak: Some(Box::new(move |s| {
            s.redis.url = restoreclick::config::Secret::new(format!("redis://127.0.0.1:{port}"));
        })),
        ..Default::default()
    })
    .await;
    let (session, cs) = open_checkout(&app, 1).await;
    let event = completed_event(&cs, &session, 500);
    assert_eq!(app.post_event(&event).await.status(), 200);

    redis.stop();
    let retries = (0..5).map(|_| app.post_event(&event));
    for response in futures::future::join_all(retries).await {
        assert_eq!(response.status(), 200);
    }
    let (session2, cs2) = open_checkout(&app, 1).await;
    let other = completed_event(&cs2, &session2, 500);
    let (a, b) = tokio::join!(app.post_event(&other), app.post_event(&other));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(orders(&app).await, 2);
    assert_eq!(confirmations(&app).await, 2);
}

#[tokio::test]
async fn a_payment_that_does_not_match_what_was_sold_makes_no_order_and_is_refunded() {
    let app = spawn_app().await;
    let (session, cs) = open_checkout(&app, 2).await;
    let response = app.post_event(&completed_event(&cs, &session, 500)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(orders(&app).await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM email_queue WHERE kind = 'admin_alert' AND payload->>'reason' = 'amount_mismatch'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM payment_audit WHERE reason = 'amount_mismatch'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM refunds WHERE reason = 'payment_mismatch' AND amount = 500")
            .await,
        1
    );
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "refunded");
    assert!(state["order_id"].is_null());
}
