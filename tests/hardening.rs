//! HTTP hardening: load shedding, body limits, timeouts, CORS and security
//! headers. Every refusal carries the API's error body.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Options, TestApp, spawn_app_with};
use futures::{SinkExt, channel::mpsc};
use restoreclick::config::Settings;
use serde_json::Value;

fn with(tweak: impl FnOnce(&mut Settings) + Send + 'static) -> Options {
    Options {
        tweak: Some(Box::new(tweak)),
        ..Default::default()
    }
}

/// A request body the test feeds piece by piece (or never finishes).
fn trickle() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, reqwest::Body) {
    let (tx, rx) = mpsc::channel(8);
    (tx, reqwest::Body::wrap_stream(rx))
}

const BOUNDARY: &str = "restoreclick-test-boundary";

fn multipart_head(filename: &str) -> Bytes {
    Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\nContent-Type: image/jpeg\r\n\r\n"
    ))
}

fn multipart_tail() -> Bytes {
    Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"))
}

async fn send_upload(app: &TestApp, body: reqwest::Body) -> reqwest::Response {
    app.client
        .post(app.url("/api/upload"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("an error body");
    body["error"]["code"].as_str().expect("error.code").to_owned()
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_are_shed_with_retry_after() {
    let app = spawn_app_with(with(|s| s.http.max_concurrent_uploads = 1)).await;
    let (mut feed, body) = trickle();
    feed.send(Ok(multipart_head("slow.jpg"))).await.unwrap();
    let slow = {
        let request = app
            .client
            .post(app.url("/api/upload"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body);
        tokio::spawn(async move { request.send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let shed = app.client.get(app.url("/api/upload/ups_x")).send().await.unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert!(shed.headers().contains_key("x-request-id"));
    assert_eq!(error_code(shed).await, "overloaded");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health checks are never shed");

    feed.send(Ok(Bytes::from(common::photos::jpeg(80, 80))))
        .await
        .unwrap();
    feed.send(Ok(multipart_tail())).await.unwrap();
    drop(feed);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 201, "the request in flight is served");
    let after = app.client.get(app.url("/api/upload/ups_x")).send().await.unwrap();
    assert_eq!(
        after.status(),
        404,
        "once the slot is free, requests are served again"
    );
}

/// Slow uploads hold every upload slot; checkout and Stripe's webhook have
/// their own budget and get through.
#[tokio::test]
async fn six_trickling_uploads_do_not_keep_stripes_webhook_out() {
    let app = spawn_app_with(with(|s| {
        s.http.max_concurrent_uploads = 6;
        s.http.max_concurrent_requests = 6;
    }))
    .await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().expect("session id").to_owned();
    let opened: serde_json::Value = app
        .checkout(&session, Some("slow@example.com"))
        .await
        .json()
        .await
        .expect("checkout json");
    let cs = opened["checkout_session_id"]
        .as_str()
        .expect("checkout id")
        .to_owned();
    let mut feeds = Vec::new();
    let mut slow = Vec::new();
    for i in 0..6 {
        let (mut feed, body) = trickle();
        feed.send(Ok(multipart_head(&format!("slow{i}.jpg"))))
            .await
            .unwrap();
        let request = app
            .client
            .post(app.url("/api/upload"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body);
        slow.push(tokio::spawn(async move { request.send().await }));
        feeds.push(feed);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = app.client.get(app.url("/api/upload/ups_x")).send().await.unwrap();
    assert_eq!(shed.status(), 503, "every upload slot is held");

    let event = common::completed_event(&cs, &session, 500);
    let webhook = app.post_event(&event).await;
    assert_eq!(webhook.status(), 200, "Stripe's webhook got through");
    let checkout = app
        .client
        .get(app.url(&format!("/api/checkout/{cs}")))
        .send()
        .await
        .unwrap();
    assert_eq!(checkout.status(), 200);
    drop(feeds);
    for s in slow {
        let _ = s.await;
    }
}

#[tokio::test]
async fn bodies_over_their_route_limit_are_refused_with_the_error_body() {
    let app = spawn_app_with(with(|s| {
        s.http.json_body_limit = 1024;
        s.http.webhook_body_limit = 4096;
    }))
    .await;
    let big = format!(
        r#"{{"session_id": "ups_x", "email": "{}@example.com"}}"#,
        "a".repeat(2000)
    );
    let r = app
        .client
        .post(app.url("/api/checkout"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "payload_too_large");

    let r = app.post_webhook_raw(&"x".repeat(8000), Some("t=1,v1=00")).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/json");

    // A webhook under its own limit is past the JSON limit: each route has its own.
    let r = app.post_webhook_raw(&"x".repeat(2000), Some("t=1,v1=00")).await;
    assert_eq!(r.status(), 400, "read, then refused for its signature");

    // Uploads keep theirs: a photo bigger than every JSON limit is accepted.
    let upload = app
        .upload(vec![("big.png", common::photos::png(400, 400))], None)
        .await;
    assert_eq!(upload.status(), 201);
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_503_but_uploads_have_longer() {
    let app = spawn_app_with(with(|s| {
        s.http.request_timeout = Duration::from_millis(300);
        s.http.upload_timeout = Duration::from_secs(20);
    }))
    .await;
    let (mut feed, body) = trickle();
    feed.send(Ok(Bytes::from_static(b"{\"session_id\": ")))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = app
        .client
        .post(app.url("/api/checkout"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, "unavailable");
    drop(feed);

    // An upload slower than the request timeout still lands.
    let (mut feed, body) = trickle();
    let upload = {
        let app_url = app.url("/api/upload");
        let client = app.client.clone();
        tokio::spawn(async move {
            client
                .post(app_url)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(body)
                .send()
                .await
        })
    };
    feed.send(Ok(multipart_head("slow.jpg"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    feed.send(Ok(Bytes::from(common::photos::jpeg(80, 80))))
        .await
        .unwrap();
    feed.send(Ok(multipart_tail())).await.unwrap();
    drop(feed);
    assert_eq!(upload.await.unwrap().unwrap().status(), 201);
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_with_408() {
    let app = spawn_app_with(with(|s| s.http.body_idle_timeout = Duration::from_millis(300))).await;
    let (mut feed, body) = trickle();
    feed.send(Ok(multipart_head("stalled.jpg"))).await.unwrap();
    let r = send_upload(&app, body).await;
    assert_eq!(r.status(), 408);
    assert_eq!(error_code(r).await, "request_timeout");
    drop(feed);
    assert_eq!(app.count("SELECT count(*) FROM file_uploads").await, 0);
    assert!(app.stored_files().is_empty());
}

/// A body that keeps arriving, but slower than `uploads.min_body_rate`,
/// is cut off once it falls behind: a trickle cannot hold an upload slot.
#[tokio::test]
async fn an_upload_trickling_below_the_minimum_rate_is_cut_off_with_408() {
    let app = spawn_app_with(with(|s| {
        s.uploads.min_body_rate = 4096;
        s.uploads.min_body_rate_grace = Duration::from_secs(1);
    }))
    .await;
    let (mut feed, body) = trickle();
    let trickler = tokio::spawn(async move {
        feed.send(Ok(multipart_head("trickle.jpg"))).await.ok();
        // 100 bytes every 100 ms: 1 KB/s, a quarter of the minimum.
        for _ in 0..600 {
            if feed.send(Ok(Bytes::from_static(&[0xAB; 100]))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = std::time::Instant::now();
    let r = send_upload(&app, body).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 408);
    let body: Value = r.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("4 KB/s")),
        "{body}"
    );
    assert!(took < Duration::from_secs(10), "cut off after {took:?}");
    trickler.abort();
    assert_eq!(app.count("SELECT count(*) FROM file_uploads").await, 0);
    assert!(app.stored_files().is_empty());
}

#[tokio::test]
async fn no_other_site_may_call_the_api_unless_configured() {
    let app = spawn_app_with(Options::default()).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/checkout"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!preflight.headers().contains_key("access-control-allow-origin"));
    let r = app
        .client
        .get(app.url("/api/upload/ups_x"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    let app = spawn_app_with(with(|s| {
        s.http.cors_origins = vec!["https://partner.example".into()]
    }))
    .await;
    let allowed = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/checkout"))
        .header("origin", "https://partner.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://partner.example"
    );
    let other = app
        .client
        .get(app.url("/api/upload/ups_x"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_assets_their_types() {
    let app = spawn_app_with(Options::default()).await;
    for path in ["/", "/success"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline scripts on {path}");
        assert!(!html.contains("style=\""), "no inline styles on {path}");
    }
    for (path, kind) in [
        ("/assets/app.css", "text/css"),
        ("/assets/upload.js", "text/javascript"),
        ("/assets/success.js", "text/javascript"),
        ("/assets/common.js", "text/javascript"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!r.text().await.unwrap().is_empty(), "{path}");
    }
    let missing = app
        .client
        .get(app.url("/assets/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let missing = app.client.get(app.url("/assets/secret.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "not_found");

    // API answers are not sniffed either, and the ops listener names its requests.
    let r = app.client.get(app.url("/api/upload/ups_x")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = app
        .client
        .get(format!("{}/healthz", app.ops_address))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_shop_served_over_https_asks_browsers_to_stay_on_https() {
    let app = spawn_app_with(with(|s| s.app.public_url = "https://shop.example".into())).await;
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let plain = spawn_app_with(Options::default()).await;
    let r = plain.client.get(plain.url("/")).send().await.unwrap();
    assert!(!r.headers().contains_key("strict-transport-security"));
}

/// A connection that sends half a request's headers and waits is closed
/// by the header-read deadline; the shop keeps serving everyone else.
#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(with(|s| s.http.header_read_timeout = Duration::from_secs(2))).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the idle connection was closed within 15 s");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before its deadline"
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// Past `http.max_connections` a new connection waits; it is served as
/// soon as one closes.
#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_one() {
    let app = spawn_app_with(with(|s| {
        s.http.max_connections = 1;
        s.http.header_read_timeout = Duration::from_secs(2);
    }))
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let holder = tokio::net::TcpStream::connect(&address).await.unwrap();
    let waiting = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(waiting.is_err(), "the only connection slot is held");
    drop(holder);
    let served = reqwest::Client::new()
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}
