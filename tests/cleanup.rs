//! The cleanup sweeps and the customer's deletion request.

mod common;

use std::time::Duration;

use common::{Options, eventually, spawn_app_with, wait_for_order};

const LONG: Duration = Duration::from_secs(30);

fn sweeping() -> Options {
    Options {
        tweak: Some(Box::new(|s| s.cleanup.interval = Duration::from_millis(200))),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_unpaid_session_is_kept_while_fresh_and_swept_with_its_photos_after_expiry() {
    let app = spawn_app_with(sweeping()).await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    app.checkout(session, None).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.stored_files().len(),
        2,
        "a fresh session keeps its photos while the customer pays"
    );

    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "the abandoned session swept", || async {
        app.count("SELECT count(*) FROM upload_sessions").await == 0
    })
    .await;
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    assert_eq!(app.count("SELECT count(*) FROM file_uploads").await, 0);
    // The checkout is kept (without its session), so a payment that lands
    // after all is recognised and refunded.
    assert_eq!(
        app.count("SELECT count(*) FROM checkout_sessions WHERE upload_session_id IS NULL")
            .await,
        1
    );
    let (status, _) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn paid_sessions_are_never_swept() {
    let app = spawn_app_with(sweeping()).await;
    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '2 days'")
        .execute(&app.db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.count("SELECT count(*) FROM upload_sessions").await, 1);
    let (status, _) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn photos_past_retention_are_purged_and_the_order_says_so() {
    let app = spawn_app_with(sweeping()).await;
    let (order, token) = app.paid_order(2).await;
    let body = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    let restored = body["images"][0]["restored_url"].as_str().unwrap().to_owned();
    assert_eq!(
        app.client
            .get(app.url(&restored))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    sqlx::query("UPDATE orders SET completed_at = now() - interval '31 days'")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "the order purged", || async {
        app.count("SELECT count(*) FROM orders WHERE purged_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    let (status, body) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(status, 200);
    assert!(body["purged_at"].is_string());
    assert_eq!(
        app.client
            .get(app.url(&restored))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
}

#[tokio::test]
async fn dead_download_links_are_deleted() {
    let app = spawn_app_with(sweeping()).await;
    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    for _ in 0..2 {
        app.client
            .post(app.url(&format!("/api/orders/{order}/download-links")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    sqlx::query("UPDATE download_links SET expires_at = now() - interval '1 minute' WHERE id = (SELECT id FROM download_links ORDER BY created_at LIMIT 1)")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "the expired link deleted", || async {
        app.count("SELECT count(*) FROM download_links").await == 1
    })
    .await;
}

#[tokio::test]
async fn a_customer_can_delete_their_photos_at_once() {
    let app = common::spawn_app().await;
    let (order, token) = app.paid_order(2).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    let delete = |token: String| {
        let url = app.url(&format!("/api/orders/{order}"));
        let client = app.client.clone();
        async move { client.delete(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(delete("wrong".into()).await.status(), 404);
    let r = delete(token.clone()).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["purged_at"].is_string());
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    assert_eq!(
        delete(token.clone()).await.status(),
        200,
        "deleting again is harmless"
    );
    let r = app
        .client
        .post(app.url(&format!("/api/orders/{order}/download-links")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410, "no links to deleted photos");
}
