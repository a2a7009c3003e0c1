//! Every payment buys exactly what was paid for: checkouts freeze what they
//! sell, paid events are honoured only when they match it, refunds win
//! whatever the order of events, failed photos are refunded by themselves,
//! and a paid checkout is fulfilled even when its webhook never comes.
//! Driven against the real server with the fake Stripe (and, where it
//! matters, the fake Replicate).

mod common;

use std::time::Duration;

use common::{
    Options, TestApp, checkout_event, completed_event, eventually,
    fake_replicate::FakeReplicate,
    fake_stripe::{FakeStripe, session_event},
    photos, refund_event, spawn_app_with, wait_for_order,
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

fn stripe() -> Options {
    Options {
        stripe: true,
        ..Default::default()
    }
}

fn stripe_with(tweak: impl FnOnce(&mut restoreclick::config::Settings) + Send + 'static) -> Options {
    Options {
        stripe: true,
        tweak: Some(Box::new(tweak)),
        ..Default::default()
    }
}

fn fake(app: &TestApp) -> &FakeStripe {
    app.stripe.as_ref().expect("a Stripe app")
}

/// Uploads `n` photos and opens a checkout: (session id, checkout id).
async fn open_checkout(app: &TestApp, n: usize) -> (String, String) {
    let upload = app.upload_photos(n).await;
    let session = upload["session_id"].as_str().unwrap().to_owned();
    let response = app.checkout(&session, Some("buyer@example.com")).await;
    assert_eq!(response.status(), 200);
    let checkout: Value = response.json().await.unwrap();
    (
        session,
        checkout["checkout_session_id"].as_str().unwrap().to_owned(),
    )
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.count(sql).await
}

async fn order_of_checkout(app: &TestApp, cs: &str) -> (String, String) {
    let (status, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(status, 200);
    assert_eq!(state["status"], "paid", "{state}");
    (
        state["order_id"].as_str().unwrap().to_owned(),
        state["order_token"].as_str().unwrap().to_owned(),
    )
}

fn pi(cs: &str) -> String {
    format!("pi_{}", cs.trim_start_matches("cs_"))
}

#[tokio::test]
async fn a_checkout_sells_the_photos_it_froze_not_those_added_later() {
    let app = spawn_app_with(stripe()).await;
    let (session, first) = open_checkout(&app, 1).await;
    let (_, frozen) = app.get_json(&format!("/api/checkout/{first}")).await;
    assert_eq!(frozen["amount_total"], 500);
    assert_eq!(frozen["currency"], "usd");
    assert_eq!(frozen["files"].as_array().unwrap().len(), 1);
    assert_eq!(frozen["line_items"][0]["quantity"], 1);

    // Two more photos: the open checkout is voided at Stripe first.
    let more = app
        .upload(
            vec![("b.jpg", photos::photo(5)), ("c.png", photos::photo(6))],
            Some(&session),
        )
        .await;
    assert_eq!(more.status(), 201);
    assert_eq!(fake(&app).expired_sessions().await, std::slice::from_ref(&first));
    assert_eq!(fake(&app).session(&first).unwrap()["status"], "expired");

    // Stripe delivers the first checkout's payment anyway (a race): it buys
    // what it sold, one photo, never the three the session holds now.
    let response = app.post_event(&completed_event(&first, &session, 500)).await;
    assert_eq!(response.status(), 200);
    let (order, token) = order_of_checkout(&app, &first).await;
    let view = wait_for_order(&app, &order, &token, &["processing", "completed"], LONG).await;
    assert_eq!(view["images"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["amount_total"], 500);
    assert_eq!(count(&app, "SELECT count(*) FROM images").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 0);
}

#[tokio::test]
async fn a_session_with_a_checkout_that_cannot_be_closed_keeps_its_photos() {
    let app = spawn_app_with(stripe()).await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    let file = upload["files"][0]["id"].as_str().unwrap();
    let response = app.checkout(session, None).await;
    assert_eq!(response.status(), 200);
    let stored = app.stored_files().len();
    fake(&app).set_expire_down(true);

    let more = app.upload(vec![("b.jpg", photos::photo(5))], Some(session)).await;
    assert_eq!(more.status(), 409);
    let body: Value = more.json().await.unwrap();
    assert_eq!(body["error"]["code"], "checkout_open");
    let removed = app
        .client
        .delete(app.url(&format!("/api/upload/{session}/files/{file}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 409);
    let body: Value = removed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "checkout_open");
    assert_eq!(
        app.stored_files().len(),
        stored,
        "nothing stored, nothing deleted"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM file_uploads").await, 2);

    // Once Stripe answers again, the change goes through.
    fake(&app).set_expire_down(false);
    let more = app.upload(vec![("b.jpg", photos::photo(5))], Some(session)).await;
    assert_eq!(more.status(), 201);
}

#[tokio::test]
async fn a_change_after_the_customer_paid_is_refused_and_the_payment_becomes_the_order() {
    let app = spawn_app_with(stripe()).await;
    let (session, cs) = open_checkout(&app, 1).await;
    fake(&app).pay(&cs); // paid at Stripe; its webhook has not arrived
    let more = app
        .upload(vec![("late.jpg", photos::photo(5))], Some(&session))
        .await;
    assert_eq!(more.status(), 409);
    let body: Value = more.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_paid");
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM images").await, 1);
    let (order, token) = order_of_checkout(&app, &cs).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
}

#[tokio::test]
async fn a_paid_event_for_a_checkout_the_shop_never_opened_makes_nothing() {
    let app = spawn_app_with(stripe()).await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let mut forged = completed_event("cs_test_never_opened", session, 1);
    forged["data"]["object"]["currency"] = json!("jpy");
    let response = app.post_event(&forged).await;
    assert_eq!(response.status(), 200, "answered 2xx so Stripe stops retrying");
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 0);
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "open", "the upload session is left unpaid");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM payment_audit WHERE reason = 'unknown_checkout'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM email_queue WHERE kind = 'admin_alert' AND payload->>'reason' = 'unknown_checkout'").await,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM refunds").await,
        0,
        "not the shop's money to give back"
    );
    assert!(fake(&app).refunds().await.is_empty());
}

#[tokio::test]
async fn a_payment_that_is_not_what_was_sold_is_refunded_and_makes_no_order() {
    let app = spawn_app_with(stripe()).await;
    type Change = fn(&mut Value);
    let cases: [(&str, Change); 3] = [
        ("amount_mismatch", |e| {
            e["data"]["object"]["amount_total"] = json!(1)
        }),
        ("currency_mismatch", |e| {
            e["data"]["object"]["currency"] = json!("jpy")
        }),
        ("livemode_mismatch", |e| e["livemode"] = json!(true)),
    ];
    for (reason, change) in cases {
        let (session, cs) = open_checkout(&app, 2).await;
        let mut event = completed_event(&cs, &session, 1000);
        change(&mut event);
        let paid = event["data"]["object"]["amount_total"].as_i64().unwrap();
        assert_eq!(app.post_event(&event).await.status(), 200, "{reason}");
        // The same event again refunds nothing more.
        assert_eq!(app.post_event(&event).await.status(), 200, "{reason}");
        let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
        assert_eq!(state["status"], "refunded", "{reason}: {state}");
        assert!(state["order_id"].is_null(), "{reason}");
        let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
        assert_ne!(view["status"], "paid", "{reason}");
        eventually(LONG, "the refund at Stripe", || async {
            fake(&app).refunded(&pi(&cs)) == paid
        })
        .await;
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM payment_audit WHERE reason = '{reason}' AND checkout_session_id = '{cs}'"
            ))
            .await,
            1
        );
    }
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 0);
    let calls = fake(&app).refunds().await;
    assert_eq!(calls.len(), 3, "one refund per refused payment");
    let keys: std::collections::HashSet<_> = calls
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.contains("payment_mismatch")), "{keys:?}");
    assert_eq!(
        count(&app, "SELECT count(*) FROM email_queue WHERE kind = 'admin_alert' AND payload->>'reason' LIKE '%_mismatch'").await,
        3
    );
}

#[tokio::test]
async fn a_second_payment_for_paid_photos_is_refunded() {
    let app = spawn_app_with(stripe()).await;
    let (session, first) = open_checkout(&app, 1).await;
    let second: Value = app.checkout(&session, None).await.json().await.unwrap();
    let second = second["checkout_session_id"].as_str().unwrap().to_owned();
    app.post_event(&completed_event(&first, &session, 500)).await;
    app.post_event(&completed_event(&second, &session, 500)).await;
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 1);
    eventually(LONG, "the second payment refunded", || async {
        fake(&app).refunded(&pi(&second)) == 500
    })
    .await;
    assert_eq!(fake(&app).refunded(&pi(&first)), 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM refunds WHERE reason = 'duplicate_payment'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_refund_that_arrives_before_its_payment_makes_a_refunded_order_that_does_no_work() {
    let replicate = FakeReplicate::start().await;
    let app = spawn_app_with(Options {
        stripe: true,
        replicate: Some(replicate.clone()),
        ..Default::default()
    })
    .await;
    let (session, cs) = open_checkout(&app, 2).await;
    // Stripe does not order its events.
    assert_eq!(app.post_event(&refund_event(&cs, 1000, 1000)).await.status(), 200);
    assert_eq!(
        app.post_event(&completed_event(&cs, &session, 1000))
            .await
            .status(),
        200
    );
    let (order, token) = order_of_checkout(&app, &cs).await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["status"], "refunded", "{view}");
    assert_eq!(view["amount_refunded"], 1000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(replicate.created(), 0, "no prediction was ever made");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation'"
        )
        .await,
        0
    );
    let link = app.download_link(&order, &token).await;
    assert_eq!(link.status(), 410);
    let body: Value = link.json().await.unwrap();
    assert_eq!(body["error"]["code"], "order_refunded");
}

/// The shop on the fake Stripe, with predictions that never end.
async fn shop_with_endless_predictions() -> (TestApp, FakeReplicate) {
    let replicate = FakeReplicate::start_with(1_000_000).await;
    let app = spawn_app_with(Options {
        stripe: true,
        replicate: Some(replicate.clone()),
        ..Default::default()
    })
    .await;
    (app, replicate)
}

/// The order-status check inside the statement that begins an attempt is
/// what stops an instance that has not heard of the refund yet: a job it
/// still sees as due does not start.
#[tokio::test]
async fn no_attempt_begins_on_a_refunded_order_whatever_its_jobs_say() {
    let (app, replicate) = shop_with_endless_predictions().await;
    let (session, cs) = open_checkout(&app, 1).await;
    app.post_event(&completed_event(&cs, &session, 500)).await;
    eventually(LONG, "the prediction to start", || async {
        replicate.created() == 1
    })
    .await;
    assert_eq!(app.post_event(&refund_event(&cs, 500, 500)).await.status(), 200);
    let (order, _) = order_of_checkout(&app, &cs).await;
    let order_id = uuid::Uuid::parse_str(order.trim_start_matches("ord_")).unwrap();
    // Another instance's view: it still holds the order and its job is due
    // again, as if no refund had landed. Only the order's status says no.
    let owner: String = sqlx::query_scalar(
        "UPDATE orders SET owner_id = coalesce(owner_id, 'another-instance') WHERE id = $1 RETURNING owner_id",
    )
    .bind(order_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE images SET status = 'processing' WHERE order_id = $1")
        .bind(order_id)
        .execute(&app.db)
        .await
        .unwrap();
    let (job, image): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "UPDATE restoration_jobs SET status = 'queued', next_attempt_at = NULL
         WHERE order_id = $1 RETURNING id, image_id",
    )
    .bind(order_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let begun = restoreclick::db::jobs::begin_attempt(&app.db, job, image, "replicate", &owner)
        .await
        .unwrap();
    assert!(matches!(begun, restoreclick::db::jobs::Begun::Moved), "{begun:?}");
    assert_eq!(
        count(&app, "SELECT sum(attempts)::bigint FROM restoration_jobs").await,
        1,
        "no attempt was started"
    );
}

#[tokio::test]
async fn a_refund_cancels_the_predictions_in_flight_and_starts_no_new_attempt() {
    let (app, replicate) = shop_with_endless_predictions().await;
    let (session, cs) = open_checkout(&app, 2).await;
    app.post_event(&completed_event(&cs, &session, 1000)).await;
    eventually(LONG, "both predictions to start", || async {
        replicate.created() == 2
    })
    .await;
    eventually(LONG, "their ids recorded", || async {
        app.count("SELECT count(*) FROM restoration_jobs WHERE external_id IS NOT NULL")
            .await
            == 2
    })
    .await;
    assert_eq!(app.post_event(&refund_event(&cs, 1000, 1000)).await.status(), 200);
    eventually(LONG, "the predictions cancelled at Replicate", || async {
        replicate.cancelled() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replicate.created(), 2, "no new attempt after the refund");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM restoration_jobs WHERE status IN ('pending', 'queued', 'processing')"
        )
        .await,
        0
    );
    let (order, token) = order_of_checkout(&app, &cs).await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["status"], "refunded");
}

#[tokio::test]
async fn a_refunded_order_refuses_new_links_and_its_old_links() {
    let app = spawn_app_with(stripe()).await;
    let (session, cs) = open_checkout(&app, 1).await;
    app.post_event(&completed_event(&cs, &session, 500)).await;
    let (order, token) = order_of_checkout(&app, &cs).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    let link: Value = app.download_link(&order, &token).await.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(app.client.get(app.url(&url)).send().await.unwrap().status(), 200);

    app.post_event(&refund_event(&cs, 500, 500)).await;
    let old = app.client.get(app.url(&url)).send().await.unwrap();
    assert_eq!(old.status(), 410);
    let body: Value = old.json().await.unwrap();
    assert_eq!(body["error"]["code"], "order_refunded");
    let new = app.download_link(&order, &token).await;
    assert_eq!(new.status(), 410);
    assert_eq!(
        count(&app, "SELECT uses::bigint FROM download_links").await,
        1,
        "a refused download spends no use"
    );
}

/// A shop restoring through the fake Replicate, where `bad` always fails.
async fn shop_failing(bad: &[u8], stripe: bool) -> (TestApp, FakeReplicate) {
    let replicate = FakeReplicate::start().await;
    replicate.always_fail(bad);
    let app = spawn_app_with(Options {
        stripe,
        replicate: Some(replicate.clone()),
        ..Default::default()
    })
    .await;
    (app, replicate)
}

#[tokio::test]
async fn a_photo_that_fails_for_good_is_refunded_once_and_the_email_says_how_much() {
    let bad = photos::photo(4);
    let (app, _) = shop_failing(&bad, true).await;
    let (cs, order, token) = app
        .order_of(vec![("good.jpg", photos::photo(0)), ("bad.jpg", bad)])
        .await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    eventually(LONG, "the failed photo refunded at Stripe", || async {
        fake(&app).refunded(&pi(&cs)) == 500
    })
    .await;
    eventually(LONG, "the refund recorded on the order", || async {
        let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        view["amount_refunded"] == 500
    })
    .await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["status"], "completed");
    let refunds = view["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{view}");
    assert_eq!(refunds[0]["amount"], 500);
    assert_eq!(refunds[0]["reason"], "failed_photos");
    assert_eq!(refunds[0]["status"], "succeeded");
    assert!(refunds[0]["id"].as_str().unwrap().starts_with("rfd_"));
    assert!(refunds[0]["created_at"].is_string());
    assert_eq!(view["images"][1]["refunded"], true);
    assert_eq!(view["images"][0]["refunded"], false);
    let made = fake(&app).refunds_made();
    assert_eq!(made.len(), 1);
    let calls = fake(&app).refunds().await;
    let form = common::fake_stripe::form(&calls[0]);
    assert_eq!(form.get("amount").map(String::as_str), Some("500"));
    assert_eq!(
        form.get("metadata[order_id]").map(String::as_str),
        Some(order.as_str())
    );

    // The outcome email names the amount (it goes out after the refund is queued).
    eventually(LONG, "the outcome email", || async {
        app.outbox()
            .iter()
            .any(|m| m.contains("Your restored photos are ready"))
    })
    .await;
    let mail = app
        .outbox()
        .into_iter()
        .find(|m| m.contains("Your restored photos are ready"))
        .unwrap();
    assert!(mail.contains("5.00 USD"), "{mail}");
    assert!(!mail.contains("will not be charged"), "{mail}");
    // The order still delivers the photo that was restored.
    let link = app.download_link(&order, &token).await;
    assert_eq!(link.status(), 201);
}

#[tokio::test]
async fn an_order_whose_photos_all_fail_is_refunded_in_full_by_the_dev_checkout_itself() {
    let bad = photos::photo(4);
    let (app, _) = shop_failing(&bad, false).await;
    let (_, order, token) = app.order_of(vec![("bad.jpg", bad)]).await;
    wait_for_order(&app, &order, &token, &["failed"], LONG).await;
    eventually(LONG, "the whole payment back", || async {
        let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        view["amount_refunded"] == 500 && view["refunds"][0]["status"] == "succeeded"
    })
    .await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(
        view["status"], "failed",
        "a failed order stays failed with its money back"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 1);
}

#[tokio::test]
async fn with_partial_refunds_off_only_a_total_failure_is_refunded() {
    let bad = photos::photo(4);
    let replicate = FakeReplicate::start().await;
    replicate.always_fail(&bad);
    let app = spawn_app_with(Options {
        stripe: true,
        replicate: Some(replicate.clone()),
        tweak: Some(Box::new(|s| s.refunds.partial = false)),
        ..Default::default()
    })
    .await;
    let (_, order, token) = app
        .order_of(vec![("good.jpg", photos::photo(0)), ("bad.jpg", bad)])
        .await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 0);

    // Every photo failed: the whole payment goes back all the same.
    let other = photos::photo(7);
    replicate.always_fail(&other);
    let (cs, order, token) = app
        .order_of(vec![("bad.jpg", photos::photo(4)), ("other.jpg", other)])
        .await;
    wait_for_order(&app, &order, &token, &["failed"], LONG).await;
    eventually(LONG, "the whole payment refunded at Stripe", || async {
        fake(&app).refunded(&pi(&cs)) == 1000
    })
    .await;
    assert_eq!(count(&app, "SELECT count(*) FROM refunds").await, 1);
}

#[tokio::test]
async fn an_order_whose_photos_all_fail_through_stripe_is_refunded_in_full_and_the_email_says_so() {
    let bad = photos::photo(4);
    let other = photos::photo(7);
    let (app, replicate) = shop_failing(&bad, true).await;
    replicate.always_fail(&other);
    let (cs, order, token) = app.order_of(vec![("a.jpg", bad), ("b.jpg", other)]).await;
    wait_for_order(&app, &order, &token, &["failed"], LONG).await;
    eventually(LONG, "the whole payment refunded at Stripe", || async {
        fake(&app).refunded(&pi(&cs)) == 1000
    })
    .await;
    eventually(LONG, "the refund recorded on the order", || async {
        let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        view["amount_refunded"] == 1000 && view["refunds"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(
        fake(&app).refunds_made().len(),
        1,
        "one refund for the whole order"
    );
    eventually(LONG, "the outcome email", || async {
        app.outbox().iter().any(|m| m.contains("10.00 USD"))
    })
    .await;
}

#[tokio::test]
async fn a_paid_checkout_whose_webhook_never_comes_is_fulfilled_when_the_success_page_asks() {
    let app = spawn_app_with(stripe_with(|s| s.payments.sync_interval = Duration::from_secs(1))).await;
    let (_, cs) = open_checkout(&app, 2).await;
    // Unpaid yet: the page polls fast, Stripe is asked once per interval.
    for _ in 0..10 {
        let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
        assert_eq!(state["status"], "pending");
    }
    assert_eq!(fake(&app).retrievals(&cs).await, 1, "rate-limited per checkout");

    fake(&app).pay(&cs);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (order, token) = order_of_checkout(&app, &cs).await;
    let view = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(view["images"].as_array().unwrap().len(), 2);
    assert_eq!(view["email"], "buyer@example.com");
    // The webhook arriving late changes nothing.
    let late = session_event("checkout.session.completed", &fake(&app).session(&cs).unwrap());
    assert_eq!(app.post_event(&late).await.status(), 200);
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_webhook_racing_fifty_polls_and_deliveries_makes_one_order() {
    let app = spawn_app_with(stripe_with(|s| s.payments.sync_interval = Duration::from_secs(1))).await;
    let (session, cs) = open_checkout(&app, 3).await;
    let paid = fake(&app).pay(&cs);
    let event = session_event("checkout.session.completed", &paid);
    let succeeded = checkout_event(
        "checkout.session.async_payment_succeeded",
        &cs,
        &session,
        1500,
        "paid",
    );
    let attempts = (0..50).map(|i| {
        let (app, event, succeeded, cs) = (&app, event.clone(), succeeded.clone(), cs.clone());
        async move {
            match i % 5 {
                0 | 1 => app.get_json(&format!("/api/checkout/{cs}")).await.0,
                2 => app.post_event(&succeeded).await.status().as_u16(),
                _ => {
                    // Distinct deliveries, as Stripe's retries and resends are.
                    let mut fresh = event.clone();
                    fresh["id"] = json!(format!("evt_{}", uuid::Uuid::new_v4().simple()));
                    app.post_event(&fresh).await.status().as_u16()
                }
            }
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM images").await, 3);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM email_queue WHERE kind = 'order_confirmation'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM refunds").await,
        0,
        "one payment, nothing refunded"
    );
    // Whether a poll reached Stripe before a delivery made the order depends
    // on the scheduling: at most one per interval may ask.
    assert!(
        fake(&app).retrievals(&cs).await <= 1,
        "polls rate-limited while racing"
    );
    let (order, token) = order_of_checkout(&app, &cs).await;
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
}

/// The refund lands while the paid transaction is writing the order (held
/// there by a failpoint): the order it makes is refunded, not left running.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_refund_that_lands_while_its_payment_becomes_an_order_refunds_that_order() {
    let (app, replicate) = shop_with_endless_predictions().await;
    let (session, cs) = open_checkout(&app, 2).await;
    fail::cfg("fulfilment::paid_locked", "1*return(1500)").unwrap();
    let payment = completed_event(&cs, &session, 1000);
    let paid = app.post_event(&payment);
    let refunded = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.post_event(&refund_event(&cs, 1000, 1000)).await
    };
    let (paid, refunded) = tokio::join!(paid, refunded);
    assert_eq!((paid.status().as_u16(), refunded.status().as_u16()), (200, 200));
    let (order, token) = order_of_checkout(&app, &cs).await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["status"], "refunded", "{view}");
    assert_eq!(view["amount_refunded"], 1000);
    eventually(LONG, "no job left running", || async {
        app.count("SELECT count(*) FROM restoration_jobs WHERE status IN ('pending', 'queued', 'processing')")
            .await
            == 0
    })
    .await;
    eventually(LONG, "every prediction made cancelled", || async {
        replicate.cancelled() == replicate.created()
    })
    .await;
    assert_eq!(app.download_link(&order, &token).await.status(), 410);
}

#[tokio::test]
async fn removing_a_photo_expires_the_open_checkout_first() {
    let app = spawn_app_with(stripe()).await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    let file = upload["files"][0]["id"].as_str().unwrap();
    let cs: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = cs["checkout_session_id"].as_str().unwrap().to_owned();
    let removed = app
        .client
        .delete(app.url(&format!("/api/upload/{session}/files/{file}")))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    assert_eq!(fake(&app).expired_sessions().await, std::slice::from_ref(&cs));
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "expired");
    assert_eq!(count(&app, "SELECT count(*) FROM file_uploads").await, 1);
    // The next checkout sells what is left.
    let next: Value = app.checkout(session, None).await.json().await.unwrap();
    let next = next["checkout_session_id"].as_str().unwrap();
    let (_, frozen) = app.get_json(&format!("/api/checkout/{next}")).await;
    assert_eq!(frozen["amount_total"], 500);
    assert_eq!(frozen["files"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_delayed_payment_that_fails_frees_its_session_for_another_try() {
    let app = spawn_app_with(stripe()).await;
    let (session, cs) = open_checkout(&app, 1).await;
    let pending = fake(&app).pay_later(&cs);
    app.post_event(&session_event("checkout.session.completed", &pending))
        .await;
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "awaiting_payment");
    let failed = checkout_event(
        "checkout.session.async_payment_failed",
        &cs,
        &session,
        500,
        "unpaid",
    );
    assert_eq!(app.post_event(&failed).await.status(), 200);
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "failed");
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "payment_failed");
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        count(&app, "SELECT count(*) FROM file_uploads").await,
        1,
        "the photos kept"
    );
    assert_eq!(app.checkout(&session, None).await.status(), 200);
}

fn sweeping(options: Options) -> Options {
    let tweak = options.tweak;
    Options {
        tweak: Some(Box::new(move |s| {
            s.cleanup.interval = Duration::from_millis(200);
            if let Some(tweak) = tweak {
                tweak(s);
            }
        })),
        ..options
    }
}

#[tokio::test]
async fn a_checkout_left_open_past_its_expiry_is_settled_by_the_cleanup_sweep() {
    let app = spawn_app_with(sweeping(stripe())).await;
    let (_, cs) = open_checkout(&app, 1).await;
    fake(&app).pay(&cs);
    sqlx::query("UPDATE checkout_sessions SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "the sweep to make the order", || async {
        app.count("SELECT count(*) FROM orders").await == 1
    })
    .await;
    let order: String = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM orders")
        .fetch_one(&app.db)
        .await
        .map(|id| format!("ord_{}", id.simple()))
        .unwrap();
    let (state_order, token) = order_of_checkout(&app, &cs).await;
    assert_eq!(state_order, order);
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
}

#[tokio::test]
async fn a_delayed_payment_keeps_its_photos_across_a_cleanup_sweep_and_then_becomes_the_order() {
    let app = spawn_app_with(sweeping(stripe())).await;
    let (session, cs) = open_checkout(&app, 2).await;
    let pending = fake(&app).pay_later(&cs);
    let completed = session_event("checkout.session.completed", &pending);
    assert_eq!(app.post_event(&completed).await.status(), 200);
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "awaiting_payment");
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "pending");
    assert_eq!(state["payment_status"], "awaiting_payment");
    // The photos may not change, nor a second checkout open, while the money travels.
    let more = app
        .upload(vec![("late.jpg", photos::photo(5))], Some(&session))
        .await;
    assert_eq!(more.status(), 409);
    assert_eq!(
        more.json::<Value>().await.unwrap()["error"]["code"],
        "payment_pending"
    );
    let again = app.checkout(&session, None).await;
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"]["code"],
        "payment_pending"
    );

    // Long past the session's own expiry, sweeps run: the photos stay.
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '2 days'")
        .execute(&app.db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(count(&app, "SELECT count(*) FROM file_uploads").await, 2);
    assert_eq!(app.stored_files().len(), 2);

    let settled = fake(&app).settle(&cs);
    let succeeded = session_event("checkout.session.async_payment_succeeded", &settled);
    assert_eq!(app.post_event(&succeeded).await.status(), 200);
    let (order, token) = order_of_checkout(&app, &cs).await;
    let view = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(view["images"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_delayed_payment_that_never_comes_is_given_up_after_its_window() {
    let app = spawn_app_with(sweeping(stripe_with(|s| {
        s.payments.async_payment_window = Duration::from_secs(1)
    })))
    .await;
    let (session, cs) = open_checkout(&app, 1).await;
    let pending = fake(&app).pay_later(&cs);
    app.post_event(&session_event("checkout.session.completed", &pending))
        .await;
    sqlx::query("UPDATE checkout_sessions SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "the checkout given up", || async {
        app.count("SELECT count(*) FROM checkout_sessions WHERE status = 'failed'")
            .await
            == 1
    })
    .await;
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "payment_failed");
}

#[tokio::test]
async fn a_payment_that_lands_after_its_photos_were_swept_is_refunded() {
    let app = spawn_app_with(sweeping(stripe())).await;
    let (session, cs) = open_checkout(&app, 1).await;
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    eventually(LONG, "the abandoned session swept", || async {
        app.count("SELECT count(*) FROM upload_sessions").await == 0
    })
    .await;
    // A delayed payment that succeeds after all.
    assert_eq!(
        app.post_event(&checkout_event(
            "checkout.session.async_payment_succeeded",
            &cs,
            &session,
            500,
            "paid"
        ))
        .await
        .status(),
        200
    );
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 0);
    eventually(LONG, "the payment refunded", || async {
        fake(&app).refunded(&pi(&cs)) == 500
    })
    .await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM email_queue WHERE kind = 'admin_alert' AND payload->>'reason' = 'photos_gone'").await,
        1
    );
}

#[cfg(feature = "failpoints")]
mod crash {
    use std::time::Duration;

    use super::{FakeStripe, common, pi};
    use common::shop::{Shop, ShopConfig};
    use sqlx::PgPool;

    fn with_stripe<'a>(config: ShopConfig<'a>, fake: &FakeStripe) -> ShopConfig<'a> {
        config
            .env("RESTORECLICK__PAYMENTS__PROVIDER", "stripe")
            .env("STRIPE_SECRET_KEY", "sk_test_restoreclick")
            .env("RESTORECLICK__STRIPE__API_BASE", fake.uri())
            .env("RESTORECLICK__INSTANCE__ID", "refund-crash")
    }

    #[tokio::test]
    async fn a_crash_between_the_refund_call_and_its_row_does_not_refund_twice() {
        let fake = FakeStripe::start().await;
        let database_url = common::fresh_database().await;
        let storage = tempfile::tempdir().unwrap();
        let mut shop = Shop::start(ShopConfig {
            failpoints: Some("refund::after_provider_call=pause"),
            ..with_stripe(ShopConfig::serve(&database_url, storage.path()), &fake)
        })
        .await;
        let db = PgPool::connect(&database_url).await.unwrap();
        let (session, cs) = shop.open_checkout(1, None).await;
        // Paid 1 cent for a 5.00 checkout: refused, refunded.
        let answer = shop.post_event(&common::completed_event(&cs, &session, 1)).await;
        assert_eq!(answer.status(), 200);
        common::eventually(Duration::from_secs(30), "Stripe refunds", || async {
            fake.refunded(&pi(&cs)) == 1
        })
        .await;
        shop.kill(); // after Stripe refunded, before the row says so
        let status: String = sqlx::query_scalar("SELECT status FROM refunds")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(status, "sending");

        let _shop = Shop::start(with_stripe(
            ShopConfig::serve(&database_url, storage.path()),
            &fake,
        ))
        .await;
        common::eventually(
            Duration::from_secs(30),
            "the refund completed after the restart",
            || async {
                sqlx::query_scalar::<_, String>("SELECT status FROM refunds")
                    .fetch_one(&db)
                    .await
                    .is_ok_and(|s| s == "succeeded")
            },
        )
        .await;
        let calls = fake.refunds().await;
        assert_eq!(calls.len(), 2, "asked again after the crash");
        assert_eq!(
            calls[0].headers["idempotency-key"], calls[1].headers["idempotency-key"],
            "with the same key"
        );
        assert_eq!(fake.refunds_made().len(), 1, "refunded once");
        assert_eq!(fake.refunded(&pi(&cs)), 1);
    }
}
