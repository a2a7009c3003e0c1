//! Rate limits per client (`http.rate_limits`): past a route group's burst
//! the answer is 429 with `Retry-After` and the error body; a forged
//! `X-Forwarded-For` buys nothing; Stripe's webhook is never limited.

mod common;

use common::{Options, TestApp, spawn_app_with};
use restoreclick::config::{RateLimit, Settings};
use serde_json::Value;

fn with(tweak: impl FnOnce(&mut Settings) + Send + 'static) -> Options {
    Options {
        tweak: Some(Box::new(tweak)),
        ..Default::default()
    }
}

/// One request a minute after a burst of `burst`: the bucket stays empty for
/// the whole test once spent.
fn slow(burst: u32) -> RateLimit {
    RateLimit { per_minute: 1, burst }
}

async fn get(app: &TestApp, path: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.expect("the shop answers")
}

/// Asserts a 429 with the error body and a sensible `Retry-After`.
async fn assert_limited(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn download_tokens_past_the_burst_get_429_with_retry_after_and_the_error_body() {
    let app = spawn_app_with(with(|s| s.http.rate_limits.tokens = slow(3))).await;
    for _ in 0..3 {
        let guess = get(&app, "/download/dl_guess", None).await;
        assert_ne!(guess.status(), 429, "within the burst");
    }
    assert_limited(get(&app, "/download/dl_guess", None).await).await;
    assert!(
        app.metric("restoreclick_rate_limited_total{group=\"tokens\"}")
            .await
            .is_some_and(|n| n >= 1.0),
        "the refusal is counted"
    );
    // Other groups keep their own buckets.
    let pricing = get(&app, "/api/pricing", None).await;
    assert_eq!(pricing.status(), 200);
    let order = get(&app, "/api/orders/ord_x", None).await;
    assert_ne!(order.status(), 429);
}

#[tokio::test]
async fn uploads_past_the_burst_get_429_and_store_nothing() {
    let app = spawn_app_with(with(|s| s.http.rate_limits.upload = slow(2))).await;
    let first = app.upload_photos(1).await;
    assert!(first["session_id"].is_string());
    let second = app.upload_photos(1).await;
    assert!(second["session_id"].is_string());
    let stored = app.stored_files().len();
    let third = app
        .upload(vec![("third.jpg", common::photos::jpeg(64, 64))], None)
        .await;
    assert_limited(third).await;
    assert_eq!(
        app.stored_files().len(),
        stored,
        "a refused upload stores nothing"
    );
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_buys_no_new_bucket() {
    let app = spawn_app_with(with(|s| s.http.rate_limits.orders = slow(2))).await;
    for i in 0..2 {
        let r = get(&app, "/api/orders/ord_x", Some(&format!("198.51.100.{i}"))).await;
        assert_ne!(r.status(), 429);
    }
    let forged = get(&app, "/api/orders/ord_x", Some("203.0.113.77")).await;
    assert_limited(forged).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let app = spawn_app_with(with(|s| {
        s.http.rate_limits.orders = slow(2);
        s.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a network")];
    }))
    .await;
    for _ in 0..2 {
        let r = get(&app, "/api/orders/ord_x", Some("198.51.100.1")).await;
        assert_ne!(r.status(), 429);
    }
    assert_limited(get(&app, "/api/orders/ord_x", Some("198.51.100.1")).await).await;
    // A client prepending a forged hop is still counted by the hop the
    // proxy appended.
    let prepended = get(&app, "/api/orders/ord_x", Some("203.0.113.5, 198.51.100.1")).await;
    assert_limited(prepended).await;
    let other = get(&app, "/api/orders/ord_x", Some("198.51.100.2")).await;
    assert_ne!(
        other.status(),
        429,
        "another client behind the proxy is not limited"
    );
}

#[tokio::test]
async fn checkouts_per_upload_session_are_limited_even_from_many_addresses() {
    let app = spawn_app_with(with(|s| {
        s.http.rate_limits.checkout_per_session = slow(2);
        s.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a network")];
    }))
    .await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().expect("session id").to_owned();
    let open = |i: u32| {
        app.client
            .post(app.url("/api/checkout"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&serde_json::json!({ "session_id": session }))
            .send()
    };
    for i in 0..2 {
        let r = open(i).await.expect("answer");
        assert_eq!(r.status(), 200, "within the session's burst");
    }
    assert_limited(open(9).await.expect("answer")).await;
    let other = app.upload_photos(1).await;
    let other = other["session_id"].as_str().expect("session id");
    let r = app.checkout(other, None).await;
    assert_eq!(r.status(), 200, "another session has its own bucket");
}

#[tokio::test]
async fn checkout_from_one_address_past_the_burst_gets_429_but_stripes_webhook_never_does() {
    let app = spawn_app_with(with(|s| {
        s.http.rate_limits.checkout = slow(1);
        s.http.rate_limits.orders = slow(1);
        s.http.rate_limits.tokens = slow(1);
        s.http.rate_limits.upload = slow(1);
    }))
    .await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().expect("session id").to_owned();
    let opened: Value = app
        .checkout(&session, None)
        .await
        .json()
        .await
        .expect("checkout json");
    let cs = opened["checkout_session_id"]
        .as_str()
        .expect("checkout id")
        .to_owned();
    assert_limited(app.checkout(&session, None).await).await;
    for _ in 0..20 {
        let r = app.post_webhook_raw("{}", Some("t=1,v1=00")).await;
        assert_ne!(r.status(), 429, "the webhook has no rate limit");
    }
    let event = common::completed_event(&cs, &session, 500);
    assert_eq!(app.post_event(&event).await.status(), 200);
}
