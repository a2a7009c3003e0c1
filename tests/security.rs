//! Attacks from outside on the real server: a model whose output points
//! into the shop's own network (directly or by a redirect) or is not a
//! photo, and secrets kept out of the logs. Nothing the attacker chose is
//! fetched from inside, stored or served.

mod common;

use std::time::Duration;

use common::{Options, fake_replicate::FakeReplicate, spawn_app_with, wait_for_order};

const LONG: Duration = Duration::from_secs(30);

/// A paid order of one photo whose model answers with `output`: the photo
/// fails with a clear error, nothing is stored as its restoration, and the
/// model's output was never fetched from inside.
async fn a_hostile_output_fails_the_photo(output: impl FnOnce(&FakeReplicate, &str) -> String, why: &str) {
    let fake = FakeReplicate::start().await;
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    fake.output_url(&output(&fake, &app.ops_address));
    let (order, token) = app.paid_order(1).await;
    let body = wait_for_order(&app, &order, &token, &["failed"], LONG).await;
    let error = body["images"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains(why), "the photo failed naming why ({why}): {body}");
    assert!(
        !app.stored_files().iter().any(|f| f.starts_with("restored/")),
        "nothing stored as the restored photo: {:?}",
        app.stored_files()
    );
    assert_eq!(
        app.count("SELECT sum(attempts)::bigint FROM restoration_jobs")
            .await,
        1,
        "refused at once, not retried with new predictions"
    );
    let link = app.download_link(&order, &token).await;
    assert_ne!(link.status(), 200, "no download of what the model pointed at");
}

#[tokio::test]
async fn an_output_on_the_shops_own_network_is_never_fetched() {
    a_hostile_output_fails_the_photo(|_, ops| format!("{ops}/metrics"), "not https").await;
}

#[tokio::test]
async fn an_output_on_a_private_address_over_https_is_never_fetched() {
    a_hostile_output_fails_the_photo(
        |_, _| "https://169.254.169.254/latest/meta-data/".to_owned(),
        "output_hosts",
    )
    .await;
}

#[tokio::test]
async fn an_allowed_output_that_redirects_inside_is_not_followed() {
    a_hostile_output_fails_the_photo(|fake, ops| fake.redirect_to(&format!("{ops}/metrics")), "refused")
        .await;
}

#[tokio::test]
async fn an_output_that_is_not_a_photo_is_not_stored() {
    a_hostile_output_fails_the_photo(|fake, _| fake.text_url(), "not a photo").await;
}

/// Tokens and ids in URLs (order tokens, download tokens, upload sessions,
/// checkouts) never reach the logs: access-log lines name the matched route.
#[tokio::test]
async fn no_token_or_id_from_a_url_reaches_the_log() {
    use common::shop::{Shop, ShopConfig};
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().unwrap();
    let log = storage.path().join("shop.log");
    let shop = Shop::start(ShopConfig {
        log_to: Some(log.clone()),
        ..ShopConfig::serve(&database_url, storage.path())
            .env("RESTORECLICK__RESTORATION__PROVIDER", "instant")
    })
    .await;
    let (session, cs) = shop.open_checkout(1, Some("private@example.com")).await;
    shop.buy(1, "private@example.com").await;
    let client = reqwest::Client::new();
    let checkout: serde_json::Value = client
        .get(format!("{}/api/checkout/{cs}", shop.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    let cs_paid: String = sqlx::query_scalar("SELECT id FROM checkout_sessions WHERE status = 'paid'")
        .fetch_one(&db)
        .await
        .unwrap();
    let paid: serde_json::Value = client
        .get(format!("{}/api/checkout/{cs_paid}", shop.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (order, token) = (
        paid["order_id"].as_str().expect("order id").to_owned(),
        paid["order_token"].as_str().expect("order token").to_owned(),
    );
    common::eventually(LONG, "the order restored", || async {
        let body: serde_json::Value = client
            .get(format!("{}/api/orders/{order}?token={token}", shop.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        body["status"] == "completed"
    })
    .await;
    let link: serde_json::Value = client
        .post(format!("{}/api/orders/{order}/download-links", shop.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    let url = link["url"].as_str().expect("a download link").to_owned();
    let download_token = url.rsplit('/').next().unwrap_or_default().to_owned();
    if !url.is_empty() {
        let path = url::Url::parse(&url)
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        let _ = client.get(format!("{}{path}", shop.base)).send().await;
    }
    drop(shop);
    let text = std::fs::read_to_string(&log).expect("the shop's log");
    assert!(
        text.contains("/api/orders/{order_id}"),
        "the log names routes: {text}"
    );
    for secret in [token.as_str(), session.as_str(), download_token.as_str()] {
        if !secret.is_empty() {
            assert!(!text.contains(secret), "{secret} leaked into the log:\n{text}");
        }
    }
    assert!(
        !text.contains(&order),
        "order ids from URLs stay out of the access log"
    );
    assert!(checkout["status"].is_string());
}

/// No GPS leaves the shop: what Replicate receives and what is stored as
/// the restored photo are upright and carry no EXIF; the original keeps its
/// own, as the customer sent it.
#[tokio::test]
async fn no_gps_reaches_replicate_or_the_restored_photo() {
    let fake = FakeReplicate::start().await;
    // The model answers with a photo of its own that also carries GPS.
    fake.output_bytes(common::photos::with_gps(common::photos::jpeg(96, 64), 1));
    let app = spawn_app_with(Options {
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    // Taken with the camera turned: EXIF orientation 6 (a quarter turn).
    let turned = common::photos::with_gps(common::photos::jpeg(120, 80), 6);
    let flat = common::photos::with_gps(common::photos::png(90, 72), 1);
    let (_, order, token) = app
        .order_of(vec![("turned.jpg", turned.clone()), ("flat.png", flat.clone())])
        .await;
    let body = wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;

    let inputs = fake.inputs();
    assert_eq!(inputs.len(), 2);
    assert!(
        inputs.iter().all(|i| !common::photos::tells_where(i)),
        "no EXIF or GPS sent"
    );
    let dims: Vec<_> = inputs
        .iter()
        .map(|i| {
            image::load_from_memory(i)
                .map(|p| (p.width(), p.height()))
                .expect("a photo")
        })
        .collect();
    assert!(
        dims.contains(&(80, 120)),
        "the turned photo is sent upright: {dims:?}"
    );
    assert!(dims.contains(&(90, 72)), "{dims:?}");

    let fetch = |url: String| {
        let request = app.client.get(app.url(&url)).bearer_auth(&token);
        async move {
            let response = request.send().await.expect("the photo");
            response.bytes().await.expect("bytes")
        }
    };
    for image in body["images"].as_array().expect("images") {
        let url = |which: &str| image[which].as_str().expect("a photo url").to_owned();
        let restored = fetch(url("restored_url")).await;
        assert!(image::load_from_memory(&restored).is_ok(), "a photo");
        assert!(!common::photos::tells_where(&restored), "no EXIF or GPS stored");
        let original = fetch(url("original_url")).await;
        assert!(
            common::photos::tells_where(&original),
            "the original keeps its EXIF"
        );
    }
}
