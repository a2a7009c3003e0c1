//! The admin API: bearer-token access, order inspection, refunds.

mod common;

use std::time::Duration;

use common::{Options, TestApp, spawn_app, spawn_app_with, wait_for_order};
use serde_json::Value;

const TOKEN: &str = "admin-secret-token-0123456789";

fn with_admin(stripe: bool) -> Options {
    Options {
        stripe,
        tweak: Some(Box::new(|s| {
            s.admin.token = restoreclick::config::Secret::new(TOKEN)
        })),
        ..Default::default()
    }
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.ops_address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn without_a_configured_token_there_is_no_admin_api() {
    let app = spawn_app().await;
    let r = admin(&app, reqwest::Method::GET, "/admin/orders", Some("anything")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn only_the_admin_token_opens_the_admin_api() {
    let app = spawn_app_with(with_admin(false)).await;
    for token in [None, Some("wrong"), Some("admin-secret-token-012345678")] {
        let r = admin(&app, reqwest::Method::GET, "/admin/orders", token).await;
        assert_eq!(r.status(), 401, "{token:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let r = app
        .client
        .get(app.url("/admin/orders"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the admin API is not on the customer listener");
}

#[tokio::test]
async fn orders_can_be_listed_filtered_and_inspected() {
    let app = spawn_app_with(with_admin(false)).await;
    let (order, token) = app.paid_order(2).await;
    wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;
    app.upload_photos(1).await;

    let list: Value = admin(&app, reqwest::Method::GET, "/admin/orders", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
    assert_eq!(list["orders"][0]["id"], order.as_str());
    let none: Value = admin(
        &app,
        reqwest::Method::GET,
        "/admin/orders?status=refunded",
        Some(TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(none["orders"].as_array().unwrap().is_empty());
    let r = admin(
        &app,
        reqwest::Method::GET,
        "/admin/orders?status=shipped",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 422);

    let detail: Value = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/orders/{order}"),
        Some(TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["jobs"].as_array().unwrap().len(), 2);
    assert!(!detail["emails"].as_array().unwrap().is_empty());
    assert!(detail["events"].as_array().unwrap().len() >= 5);
    let r = admin(
        &app,
        reqwest::Method::GET,
        "/admin/orders/ord_00000000000000000000000000000000",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_dev_refund_refunds_the_order_once() {
    let app = spawn_app_with(with_admin(false)).await;
    let (order, token) = app.paid_order(1).await;
    wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;
    let path = format!("/admin/orders/{order}/refund");
    let r = admin(&app, reqwest::Method::POST, &path, Some(TOKEN)).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["amount"], 500);
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["status"], "refunded");
    assert_eq!(view["amount_refunded"], 500);
    let again = admin(&app, reqwest::Method::POST, &path, Some(TOKEN)).await;
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn a_stripe_refund_carries_an_idempotency_key_and_lands_with_charge_refunded() {
    let app = spawn_app_with(with_admin(true)).await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    let checkout: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = checkout["checkout_session_id"].as_str().unwrap();
    app.post_event(&common::completed_event(cs, session, 1000)).await;
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    let order = state["order_id"].as_str().unwrap();

    let r = app
        .client
        .post(format!("{}/admin/orders/{order}/refund", app.ops_address))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"amount": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let stripe = app.stripe.as_ref().unwrap();
    let refunds = stripe.refunds().await;
    assert_eq!(refunds.len(), 1);
    assert!(refunds[0].headers.get("idempotency-key").is_some());
    let form = common::fake_stripe::form(&refunds[0]);
    assert_eq!(
        form.get("payment_intent").map(String::as_str),
        Some(format!("pi_{}", cs.trim_start_matches("cs_")).as_str())
    );
    assert_eq!(form.get("amount").map(String::as_str), Some("500"));
    assert_eq!(form.get("metadata[order_id]").map(String::as_str), Some(order));

    let too_much = app
        .client
        .post(format!("{}/admin/orders/{order}/refund", app.ops_address))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"amount": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_much.status(), 422);

    app.post_event(&common::refund_event(cs, 1000, 1000)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'refunded'")
            .await,
        1
    );
}
