//! Health, readiness and metrics; the error body and request ids everywhere.

mod common;

use common::spawn_app;
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness_answer_on_both_listeners() {
    let app = spawn_app().await;
    for base in [&app.address, &app.ops_address] {
        let r = app.client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["checks"]["database"], true);
        assert_eq!(body["checks"]["redis"], true);
        assert_eq!(body["checks"]["storage"], true);
    }
}

#[tokio::test]
async fn with_redis_unreachable_the_shop_is_ready_and_says_redis_is_degraded() {
    let app = common::spawn_app_with(common::Options {
        tweak: Some(Box::new(|s| {
            s.redis.url = restoreclick::config::Secret::new("redis://127.0.0.1:1")
        })),
        ..Default::default()
    })
    .await;
    // Redis is only the webhook dedup fast path: the shop can still take a payment.
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["redis"], "degraded");
    assert_eq!(body["checks"]["redis"], false);
    assert_eq!(body["checks"]["database"], true);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_unreachable() {
    let app = spawn_app().await;
    app.db.close().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["database"], false);
}

#[tokio::test]
async fn metrics_are_on_the_ops_listener_only() {
    let app = spawn_app().await;
    app.upload_photos(1).await;
    let text = app
        .client
        .get(format!("{}/metrics", app.ops_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("restoreclick_http_requests_total"), "{text}");
    assert!(
        text.contains("restoreclick_http_request_duration_seconds"),
        "{text}"
    );
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn unknown_paths_get_the_error_body_and_every_response_a_request_id() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // A request id the caller sent is kept.
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn the_customer_pages_are_served() {
    let app = spawn_app().await;
    for path in ["/", "/success"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn the_price_and_limits_are_known_before_any_upload() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/pricing").await;
    assert_eq!(status, 200);
    assert_eq!(body["unit_amount"], 500);
    assert_eq!(body["currency"], "usd");
    assert_eq!(body["max_files"], 50);
    assert_eq!(
        body["accepted_types"],
        serde_json::json!(["jpeg", "png", "webp", "tiff"])
    );
}

#[tokio::test]
async fn the_openapi_document_names_every_route() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/upload",
        "/api/upload/{session_id}",
        "/api/upload/{session_id}/files/{file_id}",
        "/api/checkout",
        "/api/checkout/{checkout_session_id}",
        "/api/orders/{order_id}",
        "/api/orders/{order_id}/events",
        "/api/orders/{order_id}/download-links",
        "/download/{token}",
        "/api/webhooks/stripe",
        "/api/webhooks/replicate",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/orders",
        "/admin/orders/{order_id}",
        "/admin/orders/{order_id}/refund",
        "/admin/jobs/{job_id}/retry",
        "/api/pricing",
        "/api/upload/{session_id}/files/{file_id}",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert!(paths["/api/upload"]["post"]["responses"]["201"].is_object());
}
