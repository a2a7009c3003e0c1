//! `POST /api/checkout`, the dev checkout page, the success page's view of a
//! checkout, and the order behind its token.

mod common;

use common::{Options, checkout_event, completed_event, spawn_app, spawn_app_with};
use serde_json::Value;

fn stripe_app() -> Options {
    Options {
        stripe: true,
        ..Options::default()
    }
}

#[tokio::test]
async fn stripe_receives_exactly_the_checkout_the_api_promises() {
    let app = spawn_app_with(stripe_app()).await;
    let upload = app.upload_photos(3).await;
    let session = upload["session_id"].as_str().unwrap();
    let response = app.checkout(session, Some("grandchild@example.com")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let cs = body["checkout_session_id"].as_str().unwrap();
    assert!(cs.starts_with("cs_test_"));
    assert_eq!(
        body["checkout_url"],
        format!("https://checkout.stripe.test/c/pay/{cs}")
    );

    let stripe = app.stripe.as_ref().unwrap();
    let requests = stripe.created_sessions().await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.headers.get("authorization").unwrap().to_str().unwrap(),
        "Bearer sk_test_restoreclick"
    );
    let key = request
        .headers
        .get("idempotency-key")
        .expect("an Idempotency-Key")
        .to_str()
        .unwrap();
    assert!(key.contains(session), "{key}");
    let form = common::fake_stripe::form(request);
    let expect = |k: &str, v: &str| assert_eq!(form.get(k).map(String::as_str), Some(v), "{k} in {form:?}");
    expect("mode", "payment");
    expect("line_items[0][price_data][currency]", "usd");
    expect("line_items[0][price_data][unit_amount]", "500");
    expect(
        "line_items[0][price_data][product_data][name]",
        "Photo restoration",
    );
    expect("line_items[0][quantity]", "3");
    expect("client_reference_id", session);
    expect("metadata[upload_session_id]", session);
    expect("payment_intent_data[metadata][upload_session_id]", session);
    expect("customer_email", "grandchild@example.com");
    expect(
        "success_url",
        "http://127.0.0.1:8080/success?session_id={CHECKOUT_SESSION_ID}",
    );
    assert!(
        form["cancel_url"].starts_with("http://127.0.0.1:8080/"),
        "{form:?}"
    );
    let expires: i64 = form["expires_at"].parse().unwrap();
    let ahead = expires - common::now();
    assert!(
        (30 * 60..=24 * 3600).contains(&ahead),
        "expires_at {ahead}s ahead"
    );

    let (status, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(status, 200);
    assert_eq!(state["status"], "pending");
    assert!(state["order_id"].is_null() && state["order_token"].is_null());
    assert_eq!(
        app.count("SELECT count(*) FROM upload_sessions WHERE status = 'checkout_started'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_new_checkout_for_an_unpaid_session_is_fresh_and_closes_the_old_one() {
    let app = spawn_app_with(stripe_app()).await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let first: Value = app.checkout(session, None).await.json().await.unwrap();
    let second: Value = app.checkout(session, None).await.json().await.unwrap();
    assert_ne!(first["checkout_session_id"], second["checkout_session_id"]);
    let stripe = app.stripe.as_ref().unwrap();
    let keys: Vec<_> = stripe
        .created_sessions()
        .await
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
    common::eventually(
        std::time::Duration::from_secs(5),
        "the old checkout expired at Stripe",
        || async { stripe.expired_sessions().await == [first["checkout_session_id"].as_str().unwrap()] },
    )
    .await;
}

#[tokio::test]
async fn checkout_refuses_empty_expired_paid_and_unknown_sessions() {
    let app = spawn_app().await;
    let (status, _) = {
        let r = app.checkout("ups_00000000000000000000000000000001", None).await;
        (r.status(), ())
    };
    assert_eq!(status, 404);

    // Empty: its only photo removed.
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let file = upload["files"][0]["id"].as_str().unwrap();
    app.client
        .delete(app.url(&format!("/api/upload/{session}/files/{file}")))
        .send()
        .await
        .unwrap();
    let r = app.checkout(session, None).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "empty_session");

    // Expired.
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    sqlx::query("UPDATE upload_sessions SET expires_at = now() - interval '1 minute'")
        .execute(&app.db)
        .await
        .unwrap();
    let r = app.checkout(session, None).await;
    assert_eq!(r.status(), 410);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "session_expired"
    );

    // Paid.
    let (order_id, _) = app.paid_order(1).await;
    let session: String = sqlx::query_scalar::<_, uuid::Uuid>("SELECT upload_session_id FROM orders")
        .fetch_one(&app.db)
        .await
        .map(|id| format!("ups_{}", id.simple()))
        .unwrap();
    let r = app.checkout(&session, None).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["details"]["order_id"], order_id.as_str());

    // Bad input.
    let r = app
        .client
        .post(app.url("/api/checkout"))
        .json(&serde_json::json!({"nope": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app.checkout(&session, Some("not an email")).await;
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn the_dev_checkout_page_pays_through_the_signed_webhook() {
    let app = spawn_app().await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    let checkout: Value = app
        .checkout(session, Some("me@example.com"))
        .await
        .json()
        .await
        .unwrap();
    let cs = checkout["checkout_session_id"].as_str().unwrap();
    let url = checkout["checkout_url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/dev/checkout/{cs}")), "{url}");

    let page = app
        .client
        .get(app.url(&format!("/dev/checkout/{cs}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("action=\"/dev/checkout/{cs}/pay\"")),
        "{html}"
    );
    assert!(
        html.contains(&format!("action=\"/dev/checkout/{cs}/cancel\"")),
        "{html}"
    );
    assert!(html.contains("10.00 USD"), "{html}");

    let paid = app
        .client
        .post(app.url(&format!("/dev/checkout/{cs}/pay")))
        .form(&[("email", "me@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let location = paid.headers()["location"].to_str().unwrap();
    assert!(
        location.ends_with(&format!("/success?session_id={cs}")),
        "{location}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE event_type = 'checkout.session.completed'")
            .await,
        1
    );

    let (status, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(status, 200);
    assert_eq!(state["status"], "paid");
    let order_id = state["order_id"].as_str().unwrap();
    let token = state["order_token"].as_str().unwrap();
    let order: Value = app
        .client
        .get(app.url(&format!("/api/orders/{order_id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["id"], order_id);
    assert!(
        matches!(order["status"].as_str(), Some("processing" | "completed")),
        "{order}"
    );
    assert_eq!(order["email"], "me@example.com");
    assert_eq!(order["amount_total"], 1000);
    assert_eq!(order["currency"], "usd");
    assert_eq!(order["progress"]["total"], 2);
    let images = order["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert!(images[0]["id"].as_str().unwrap().starts_with("img_"));
    assert_eq!(
        images[0]["original_url"],
        format!(
            "/api/orders/{order_id}/images/{}/original",
            images[0]["id"].as_str().unwrap()
        )
    );

    // The same page again only shows the outcome; paying twice sends nothing more.
    let again = app
        .client
        .post(app.url(&format!("/dev/checkout/{cs}/pay")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn an_order_is_invisible_without_its_own_token() {
    let app = spawn_app().await;
    let (order, token) = app.paid_order(1).await;
    let (other_order, other_token) = app.paid_order(1).await;
    let (ok, _) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(ok, 200);
    for path in [
        format!("/api/orders/{order}"),
        format!("/api/orders/{order}?token=wrong"),
        format!("/api/orders/{order}?token={other_token}"),
        "/api/orders/ord_00000000000000000000000000000000?token=x".to_owned(),
        format!("/api/orders/{other_order}?token={token}"),
    ] {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        assert_eq!(body["error"]["message"], "order not found", "{path}");
    }
    let photo = app
        .client
        .get(app.url(&format!("/api/orders/{order}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["images"][0]["original_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let served = app
        .client
        .get(app.url(&photo))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert!(
        served.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("image/")
    );
    let refused = app
        .client
        .get(app.url(&photo))
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}

#[tokio::test]
async fn after_an_expired_checkout_the_customer_can_pay_again() {
    let app = spawn_app_with(stripe_app()).await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    let first: Value = app.checkout(session, None).await.json().await.unwrap();
    let first = first["checkout_session_id"].as_str().unwrap();
    let expired = checkout_event("checkout.session.expired", first, session, 1000, "unpaid");
    assert_eq!(app.post_event(&expired).await.status(), 200);
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "payment_failed");
    let (_, state) = app.get_json(&format!("/api/checkout/{first}")).await;
    assert_eq!(state["status"], "expired");
    assert_eq!(app.stored_files().len(), 2, "the photos wait for the retry");

    let retry = app.checkout(session, None).await;
    assert_eq!(retry.status(), 200);
    let second: Value = retry.json().await.unwrap();
    let second = second["checkout_session_id"].as_str().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        app.post_event(&completed_event(second, session, 1000))
            .await
            .status(),
        200
    );
    let (_, state) = app.get_json(&format!("/api/checkout/{second}")).await;
    assert_eq!(state["status"], "paid");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn a_failed_async_payment_leaves_the_session_retryable() {
    let app = spawn_app().await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let cs: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = cs["checkout_session_id"].as_str().unwrap();
    let failed = checkout_event(
        "checkout.session.async_payment_failed",
        cs,
        session,
        500,
        "unpaid",
    );
    assert_eq!(app.post_event(&failed).await.status(), 200);
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "failed");
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "payment_failed");
    assert_eq!(app.checkout(session, None).await.status(), 200);
}

#[tokio::test]
async fn changing_the_photos_voids_the_open_checkout() {
    let app = spawn_app_with(stripe_app()).await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let cs: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = cs["checkout_session_id"].as_str().unwrap().to_owned();
    let more = app
        .upload(vec![("more.png", common::photos::photo(3))], Some(session))
        .await;
    assert_eq!(more.status(), 201);
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "open");
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["status"], "expired");
    let stripe = app.stripe.as_ref().unwrap();
    common::eventually(
        std::time::Duration::from_secs(5),
        "the void checkout expired at Stripe",
        || async { stripe.expired_sessions().await == [cs.clone()] },
    )
    .await;
}

#[tokio::test]
async fn photos_of_a_paid_session_cannot_change() {
    let app = spawn_app().await;
    let upload = app.upload_photos(1).await;
    let session = upload["session_id"].as_str().unwrap();
    let file = upload["files"][0]["id"].as_str().unwrap();
    let cs: Value = app.checkout(session, None).await.json().await.unwrap();
    let cs = cs["checkout_session_id"].as_str().unwrap();
    app.post_event(&completed_event(cs, session, 500)).await;
    let r = app
        .client
        .delete(app.url(&format!("/api/upload/{session}/files/{file}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = app
        .upload(vec![("late.jpg", common::photos::photo(0))], Some(session))
        .await;
    assert_eq!(r.status(), 409);
    let (_, view) = app.get_json(&format!("/api/upload/{session}")).await;
    assert_eq!(view["status"], "paid");
    assert!(view["order_id"].as_str().unwrap().starts_with("ord_"));
}

/// Posts a checkout body as it comes.
async fn checkout_with(app: &common::TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/checkout"))
        .json(&body)
        .send()
        .await
        .expect("checkout request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("checkout JSON"))
}

/// The problems a refused checkout named, as (option, photo, problem).
fn problems(body: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    body["error"]["details"]["options"]
        .as_array()
        .expect("details.options")
        .iter()
        .map(|p| (text(&p["option"]), text(&p["photo"]), text(&p["problem"])))
        .collect()
}

#[tokio::test]
async fn the_options_are_listed_with_their_prices_and_only_what_the_engine_can_run_is_sold() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/pricing").await;
    assert_eq!(status, 200);
    let options = body["options"].as_array().expect("options");
    let listed: Vec<(&str, i64, bool)> = options
        .iter()
        .map(|o| {
            assert!(!o["label"].as_str().unwrap().is_empty() && o["description"].is_string());
            (
                o["id"].as_str().unwrap(),
                o["unit_amount"].as_i64().unwrap(),
                o["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("faces", 200, false),
            ("colorize", 300, false),
            ("upscale_2x", 150, true),
            ("upscale_4x", 300, true)
        ]
    );
}

#[tokio::test]
async fn options_that_cannot_be_bought_are_refused_with_every_problem_named_and_nothing_opened() {
    let app = spawn_app_with(stripe_app()).await;
    let upload = app.upload_photos(2).await;
    let session = upload["session_id"].as_str().unwrap();
    let photo = upload["files"][0]["id"].as_str().unwrap();

    let (status, body) = checkout_with(
        &app,
        serde_json::json!({"session_id": session, "options": ["sharpen", "faces", "upscale_2x", "upscale_4x"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_options");
    let named = |list: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        list.iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
            .collect()
    };
    assert_eq!(
        problems(&body),
        named(&[
            ("sharpen", "", "unknown"),
            ("faces", "", "unavailable"),
            ("upscale_2x+upscale_4x", "", "conflicting"),
        ])
    );

    let stranger = "fil_00000000000000000000000000000000";
    let (status, body) = checkout_with(
        &app,
        serde_json::json!({"session_id": session, "photo_options": {photo: ["colorize"], "not-a-photo": []}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        problems(&body),
        named(&[
            ("colorize", photo, "unavailable"),
            ("", "not-a-photo", "unknown_photo")
        ])
    );
    let (status, body) = checkout_with(
        &app,
        serde_json::json!({"session_id": session, "photo_options": {stranger: []}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problems(&body).len(), 1);
    assert_eq!(problems(&body)[0].2, "unknown_photo");
    assert!(
        app.stripe.as_ref().unwrap().created_sessions().await.is_empty(),
        "nothing was opened"
    );
    assert_eq!(app.count("SELECT count(*) FROM checkout_sessions").await, 0);

    // The repair alone, named or not, for every photo or one: the photos' price.
    let (status, body) = checkout_with(
        &app,
        serde_json::json!({"session_id": session, "options": ["repair"], "photo_options": {photo: []}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cs = body["checkout_session_id"].as_str().unwrap();
    let (_, state) = app.get_json(&format!("/api/checkout/{cs}")).await;
    assert_eq!(state["amount_total"], 1000);
    assert_eq!(state["line_items"].as_array().map(Vec::len), Some(1));
}
