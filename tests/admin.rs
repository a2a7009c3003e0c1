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

/// The ids of an order's jobs, in photo order, as the admin API shows them.
async fn job_ids(app: &TestApp, order: &str) -> Vec<String> {
    let detail: Value = admin(
        app,
        reqwest::Method::GET,
        &format!("/admin/orders/{order}"),
        Some(TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    let mut jobs: Vec<(String, String)> = detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["created_at"].as_str().unwrap_or_default().to_owned(),
                j["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    jobs.sort();
    jobs.into_iter().map(|(_, id)| id).collect()
}

async fn retry(app: &TestApp, job: &str, token: Option<&str>) -> reqwest::Response {
    admin(
        app,
        reqwest::Method::POST,
        &format!("/admin/jobs/{job}/retry"),
        token,
    )
    .await
}

/// A failed order's own refund, told by Stripe after an operator's retry
/// reopened the order, is the shop's refund heard again: the retry goes on.
#[tokio::test]
async fn stripe_telling_of_the_shops_own_refund_does_not_stop_an_operators_retry() {
    let (app, restorer) = failing_scripted().await;
    let (order, token) = app.paid_order(2).await;
    wait_for_order(&app, &order, &token, &["failed"], Duration::from_secs(30)).await;
    common::eventually(Duration::from_secs(30), "the failed photos refunded", || async {
        app.count("SELECT count(*) FROM refunds WHERE status = 'succeeded'")
            .await
            == 1
    })
    .await;
    restorer.fail(false);
    let jobs = job_ids(&app, &order).await;
    assert_eq!(retry(&app, &jobs[0], Some(TOKEN)).await.status(), 202);
    let intent: String = sqlx::query_scalar("SELECT stripe_payment_intent_id FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let mut echo = common::refund_event("cs_echo", 1000, 1000);
    echo["data"]["object"]["payment_intent"] = serde_json::json!(intent);
    assert_eq!(app.post_event(&echo).await.status(), 200);
    let done = wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;
    assert_eq!(done["progress"]["completed"], 1, "{done}");
    assert_eq!(done["amount_refunded"], 1000);
}

/// The shop with a scripted restorer that fails until told otherwise.
async fn failing_scripted() -> (TestApp, std::sync::Arc<common::restorers::Scripted>) {
    use common::restorers::{Script, spawn_scripted};
    spawn_scripted(
        Script {
            failing: true,
            ..Default::default()
        },
        scripted_admin,
    )
    .await
}

fn scripted_admin(s: &mut restoreclick::config::Settings) {
    s.admin.token = restoreclick::config::Secret::new(TOKEN);
}

#[tokio::test]
async fn a_failed_photo_of_a_finished_order_is_restored_on_an_operators_retry() {
    let (app, restorer) = failing_scripted().await;
    let (order, token) = app.paid_order(2).await;
    let failed = wait_for_order(&app, &order, &token, &["failed"], Duration::from_secs(30)).await;
    assert_eq!(failed["progress"]["failed"], 2);
    let jobs = job_ids(&app, &order).await;
    assert!(jobs.iter().all(|j| j.starts_with("job_")), "{jobs:?}");

    restorer.fail(false);
    let r = retry(&app, &jobs[0], Some(TOKEN)).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["order_id"], order.as_str());
    assert_eq!(body["retry_round"], 1);
    let partial = wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;
    assert_eq!(partial["progress"]["completed"], 1);
    assert_eq!(partial["progress"]["failed"], 1);

    // The same job again is refused; the other failed one is retried.
    let again = retry(&app, &jobs[0], Some(TOKEN)).await;
    assert_eq!(again.status(), 409);
    let r = retry(&app, &jobs[1], Some(TOKEN)).await;
    assert_eq!(r.status(), 202);
    common::eventually(Duration::from_secs(30), "both photos restored", || async {
        let (_, o) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        o["status"] == "completed" && o["progress"]["completed"] == 2
    })
    .await;
    let (_, done) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert!(
        done["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["error"].is_null()),
        "{done}"
    );

    // One outcome email per round: failed, then partly restored, then complete.
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT idempotency_key, kind FROM email_queue WHERE idempotency_key LIKE '%outcome%' ORDER BY created_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let kinds: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "restoration_failed",
            "restoration_complete",
            "restoration_complete"
        ]
    );
    assert!(
        keys[1].0.ends_with(":outcome:retry1") && keys[2].0.ends_with(":outcome:retry2"),
        "{keys:?}"
    );
    let retried_events = app
        .count("SELECT count(*) FROM order_events WHERE detail->>'by' = 'operator'")
        .await;
    assert_eq!(retried_events, 4, "an image and an order entry per retry");
    let attempts: Vec<(i32, i32)> = sqlx::query_as("SELECT attempts, max_attempts FROM restoration_jobs")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(attempts.iter().all(|(a, m)| *a == 2 && *m == 4), "{attempts:?}");
}

#[tokio::test]
async fn a_retry_is_refused_for_live_refunded_or_unknown_work() {
    use common::restorers::{Script, spawn_scripted};
    let (app, restorer) = spawn_scripted(
        Script {
            failing: true,
            held: true,
            ..Default::default()
        },
        scripted_admin,
    )
    .await;
    let (order, token) = app.paid_order(1).await;
    let jobs = job_ids(&app, &order).await;
    let live = retry(&app, &jobs[0], Some(TOKEN)).await;
    assert_eq!(live.status(), 409, "a job still at work is not failed");
    let body: Value = live.json().await.unwrap();
    assert_eq!(body["error"]["code"], "order_in_progress");

    restorer.open();
    wait_for_order(&app, &order, &token, &["failed"], Duration::from_secs(30)).await;
    assert_eq!(retry(&app, &jobs[0], None).await.status(), 401);
    assert_eq!(retry(&app, &jobs[0], Some("wrong")).await.status(), 401);
    assert_eq!(
        retry(&app, "job_00000000000000000000000000000000", Some(TOKEN))
            .await
            .status(),
        404
    );
    assert_eq!(retry(&app, "not-a-job", Some(TOKEN)).await.status(), 404);

    // The whole payment went back by itself (every photo failed): an
    // operator has nothing left to refund.
    let r = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/orders/{order}/refund"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "already_refunded");
}

#[tokio::test]
async fn a_retry_is_refused_once_the_customer_was_refunded() {
    let fake = common::fake_replicate::FakeReplicate::start().await;
    let bad = common::photos::photo(4);
    fake.always_fail(&bad);
    let app = spawn_app_with(Options {
        replicate: Some(fake),
        ..with_admin(false)
    })
    .await;
    let upload: Value = app
        .upload(
            vec![("good.jpg", common::photos::photo(0)), ("bad.jpg", bad)],
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let session = upload["session_id"].as_str().unwrap();
    let checkout: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = checkout["checkout_session_id"].as_str().unwrap();
    app.post_event(&common::completed_event(cs, session, 1000)).await;
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    let (order, token) = (
        state["order_id"].as_str().unwrap().to_owned(),
        state["order_token"].as_str().unwrap().to_owned(),
    );
    wait_for_order(&app, &order, &token, &["completed"], Duration::from_secs(30)).await;
    let jobs = job_ids(&app, &order).await;
    // The rest of the payment, refunded by an operator: the order is closed.
    let r = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/orders/{order}/refund"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), 202);
    common::eventually(Duration::from_secs(10), "the order refunded", || async {
        app.count("SELECT count(*) FROM orders WHERE status = 'refunded'")
            .await
            == 1
    })
    .await;
    let refunded = retry(&app, &jobs[1], Some(TOKEN)).await;
    assert_eq!(refunded.status(), 409);
    let body: Value = refunded.json().await.unwrap();
    assert_eq!(body["error"]["code"], "order_refunded");
    assert_eq!(
        app.count("SELECT count(*) FROM restoration_jobs WHERE status = 'failed'")
            .await,
        1,
        "nothing was reopened"
    );
}
