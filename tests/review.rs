//! The review window as a customer uses it: once per restored photo, a
//! redo (the chain runs again) or that photo's refund through Stripe, with
//! the order token; refused once used, while the order runs, and after the
//! window.

mod common;

use std::time::Duration;

use common::{
    Options, TestApp, eventually, fake_replicate::FakeReplicate, photos, spawn_app_with, wait_for_order,
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

async fn shop(fake: &FakeReplicate) -> TestApp {
    spawn_app_with(Options {
        stripe: true,
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await
}

/// `POST …/images/{image}/{action}` with the order token, a body and an
/// optional `Idempotency-Key`: (status, body).
async fn review(
    app: &TestApp,
    order: &str,
    token: &str,
    image: &str,
    action: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/orders/{order}/images/{image}/{action}")))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("review request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn image_id(view: &Value, i: usize) -> String {
    view["images"][i]["id"].as_str().expect("image id").to_owned()
}

#[tokio::test]
async fn each_photo_is_redone_or_refunded_once_and_a_second_try_is_refused() {
    let fake = FakeReplicate::start().await;
    let app = shop(&fake).await;
    let (first, second) = (photos::photo(0), photos::photo(1));
    let (checkout, order, token, _) = app
        .buy_with(
            vec![("gran.jpg", first.clone()), ("grandad.png", second.clone())],
            json!({"photo_options": {"1": ["faces"]}}),
        )
        .await;
    let view = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert!(view["review_until"].is_string(), "the window is open: {view}");
    let (a, b) = (image_id(&view, 0), image_id(&view, 1));
    assert_eq!(fake.created_for(&first), 1);

    // A redo, with a note: accepted, and the same request again answered alike.
    let note = r#"{"note": "her face looks too smooth"}"#;
    let (status, body) = review(&app, &order, &token, &a, "redo", Some(note), Some("redo-1")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["action"], "redo");
    let (status, _) = review(&app, &order, &token, &a, "redo", Some(note), Some("redo-1")).await;
    assert_eq!(status, 202, "the same request is idempotent");
    let (status, body) = review(&app, &order, &token, &a, "redo", None, None).await;
    assert_eq!((status, code(&body)), (409, "review_used"), "{body}");
    let (status, body) = review(&app, &order, &token, &a, "refund", None, Some("redo-1")).await;
    assert_eq!(
        (status, code(&body)),
        (409, "review_used"),
        "one review per photo, redo or refund"
    );

    let view = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    eventually(LONG, "the redo restored", || async {
        let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        view["status"] == "completed"
            && view["images"][0]["status"] == "completed"
            && fake.created_for(&first) == 2
    })
    .await;
    assert_eq!(fake.created_for(&second), 1, "the other photo is left alone");
    assert_eq!(view["images"][0]["review"], "redo");
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["images"][0]["steps"][0]["status"], "completed");

    // The other photo's refund: its price, faces included, through Stripe, once.
    let (status, body) = review(&app, &order, &token, &b, "refund", None, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["refund_amount"], 700);
    let (status, body) = review(&app, &order, &token, &b, "refund", None, None).await;
    assert_eq!((status, code(&body)), (409, "review_used"));
    let pi = format!(
        "pi_{}",
        checkout["checkout_session_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("cs_")
    );
    eventually(LONG, "the refund made at Stripe", || async {
        app.stripe.as_ref().unwrap().refunded(&pi) == 700
    })
    .await;
    eventually(LONG, "the refund on the order", || async {
        let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        view["amount_refunded"] == 700
    })
    .await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(
        view["status"], "completed",
        "a photo's refund does not end the order"
    );
    assert_eq!(view["images"][1]["refunded"], true);
    assert_eq!(view["images"][1]["review"], "refund");
    assert_eq!(view["refunds"][0]["reason"], "customer");
    assert_eq!(app.stripe.as_ref().unwrap().refunds_made().len(), 1);

    // Both were journaled and emailed.
    let reviews = app
        .count("SELECT count(*) FROM order_events WHERE detail ? 'review' AND image_id IS NOT NULL")
        .await;
    assert_eq!(reviews, 2);
    eventually(LONG, "both review emails", || async {
        let mails = app.outbox();
        mails
            .iter()
            .any(|m| m.contains("We are restoring your photo again") && m.contains("too smooth"))
            && mails
                .iter()
                .any(|m| m.contains("Your refund for a photo is on its way") && m.contains("7.00 USD"))
    })
    .await;
}

#[tokio::test]
async fn reviews_are_refused_while_the_order_runs_after_the_window_and_for_what_was_not_restored() {
    let fake = FakeReplicate::start().await;
    let bad = photos::photo(4);
    fake.always_fail(&bad);
    fake.hold_model("tencentarc/gfpgan");
    let app = shop(&fake).await;
    let (_, order, token, _) = app
        .buy_with(vec![("good.jpg", photos::photo(0)), ("bad.jpg", bad)], json!({}))
        .await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    let (good, bad) = (image_id(&view, 0), image_id(&view, 1));
    let (status, body) = review(&app, &order, &token, &good, "redo", None, None).await;
    assert_eq!((status, code(&body)), (409, "order_in_progress"), "{body}");
    fake.release();
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;

    // A failed photo was refunded by itself: nothing to redo or refund.
    let (status, body) = review(&app, &order, &token, &bad, "refund", None, None).await;
    assert_eq!((status, code(&body)), (409, "photo_not_restored"), "{body}");
    // Bad input, a stranger's token and an unknown photo.
    let (status, body) = review(&app, &order, &token, &good, "redo", Some("{not json"), None).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    let long = json!({"note": "x".repeat(1001)}).to_string();
    let (status, body) = review(&app, &order, &token, &good, "redo", Some(&long), None).await;
    assert_eq!((status, code(&body)), (422, "invalid_note"));
    let (status, body) = review(&app, &order, &token, &good, "redo", Some(r#"{"note": 5}"#), None).await;
    assert_eq!((status, code(&body)), (422, "invalid_note"));
    let (status, _) = review(&app, &order, "not-the-token", &good, "refund", None, None).await;
    assert_eq!(status, 404);
    let stranger = "img_00000000000000000000000000000000";
    let (status, _) = review(&app, &order, &token, stranger, "refund", None, None).await;
    assert_eq!(status, 404);

    // Eight days later the window has closed for both kinds of review.
    sqlx::query("UPDATE order_events SET created_at = created_at - interval '8 days'")
        .execute(&app.db)
        .await
        .unwrap();
    for action in ["redo", "refund"] {
        let (status, body) = review(&app, &order, &token, &good, action, None, None).await;
        assert_eq!(
            (status, code(&body)),
            (410, "review_window_closed"),
            "{action}: {body}"
        );
    }
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert!(view["images"][0]["review"].is_null(), "nothing was used: {view}");
    assert_eq!(app.count("SELECT count(*) FROM image_reviews").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM refunds WHERE reason = 'customer'")
            .await,
        0
    );
}
