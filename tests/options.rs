//! Restoration options as customers buy them: priced per photo, one line
//! item per kind, and run as a chain of checkpointed steps (repair → faces →
//! colorize → upscale), each on the previous step's stored output, through
//! the fake Replicate and the local engine.

mod common;

use std::time::Duration;

use common::{
    Options,
    fake_replicate::{Created, FakeReplicate},
    photos,
    shop::{Shop, ShopConfig},
    spawn_app, spawn_app_with, wait_for_order,
};
use serde_json::{Value, json};
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(30);

const REPAIR: &str = "tencentarc/gfpgan";
const FACES: &str = "tencentarc/gfpgan";
const COLORIZE: &str = "piddnad/ddcolor";
const UPSCALE: &str = "nightmareai/real-esrgan";

fn pixels(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).expect("a photo").to_rgb8()
}

/// The predictions one photo's chain made, in order: the first one given
/// `original`, then each one given the output the one before it delivered.
fn chain_of(fake: &FakeReplicate, original: &[u8]) -> Vec<Created> {
    let made = fake.made();
    let Some(first) = made.iter().find(|c| c.input == original) else {
        return Vec::new();
    };
    let mut chain = vec![first.clone()];
    while let Some(delivered) = fake.delivered(&chain[chain.len() - 1].id) {
        let expected = pixels(&delivered);
        match made
            .iter()
            .find(|c| !chain.iter().any(|d| d.id == c.id) && pixels(&c.input) == expected)
        {
            Some(next) => chain.push(next.clone()),
            None => break,
        }
    }
    chain
}

fn models(chain: &[Created]) -> Vec<&str> {
    chain.iter().map(|c| c.model.as_str()).collect()
}

/// (name, status, attempts) of each step of image `i` in the order view.
fn steps(view: &Value, i: usize) -> Vec<(String, String, i64)> {
    view["images"][i]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
                s["attempts"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn done(names: &[&str]) -> Vec<(String, String, i64)> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), "completed".to_owned(), 1))
        .collect()
}

#[tokio::test]
async fn mixed_options_are_priced_per_kind_and_every_photo_runs_its_own_chain_in_order() {
    let fake = FakeReplicate::start().await;
    let app = spawn_app_with(Options {
        stripe: true,
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let (_, pricing) = app.get_json("/api/pricing").await;
    assert!(
        pricing["options"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["available"] == true),
        "Replicate runs every option that names a model: {pricing}"
    );
    let originals = [photos::photo(0), photos::photo(1), photos::photo(2)];
    let (checkout, order, token, _) = app.buy_with(
        vec![
            ("a.jpg", originals[0].clone()),
            ("b.png", originals[1].clone()),
            ("c.jpg", originals[2].clone()),
        ],
        json!({"options": ["faces"], "photo_options": {"1": ["upscale_4x", "colorize", "faces"], "2": []}}),
    )
    .await;

    // One line per kind, each × the photos that have it; the total is their sum.
    let lines: Vec<(i64, i64)> = checkout["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["unit_amount"].as_i64().unwrap(),
                l["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [(500, 3), (200, 2), (300, 1), (300, 1)], "{checkout}");
    assert_eq!(checkout["amount_total"], 500 * 3 + 200 * 2 + 300 + 300);
    let sold: Vec<(i64, Value)> = checkout["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["unit_amount"].as_i64().unwrap(), f["options"].clone()))
        .collect();
    assert_eq!(
        sold,
        [
            (700, json!(["faces"])),
            (1300, json!(["faces", "colorize", "upscale_4x"])),
            (500, json!([]))
        ]
    );
    let stripe = app.stripe.as_ref().unwrap().created_sessions().await;
    let form = common::fake_stripe::form(&stripe[0]);
    assert_eq!(form.get("line_items[1][quantity]").map(String::as_str), Some("2"));

    let view = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    // The right models, in chain order, each on the previous step's output.
    assert_eq!(models(&chain_of(&fake, &originals[0])), [REPAIR, FACES]);
    let second = chain_of(&fake, &originals[1]);
    assert_eq!(models(&second), [REPAIR, FACES, COLORIZE, UPSCALE]);
    assert_eq!(
        second[3].extra["scale"], 4,
        "the 4× upscale: {:?}",
        second[3].extra
    );
    assert_eq!(second[1].extra["scale"], 1, "the faces model's own inputs");
    assert_eq!(models(&chain_of(&fake, &originals[2])), [REPAIR]);
    assert_eq!(fake.created(), 2 + 4 + 1, "no step ran twice");

    assert_eq!(
        view["images"][1]["options"],
        json!(["faces", "colorize", "upscale_4x"])
    );
    assert_eq!(steps(&view, 0), done(&["repair", "faces"]));
    assert_eq!(
        steps(&view, 1),
        done(&["repair", "faces", "colorize", "upscale_4x"])
    );
    assert_eq!(steps(&view, 2), done(&["repair"]));
    // The restored photo is the last step's output; the others are kept under steps/.
    let last = fake.delivered(&second[3].id).unwrap();
    let restored = app
        .client
        .get(app.url(&format!(
            "/api/orders/{order}/images/{}/restored?token={token}",
            view["images"][1]["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200);
    assert_eq!(pixels(&restored.bytes().await.unwrap()), pixels(&last));
    let stored = app.stored_files();
    let step_files = stored.iter().filter(|f| f.contains("/steps/")).count();
    assert_eq!(step_files, 1 + 3, "each step but a photo's last: {stored:?}");
}

#[tokio::test]
async fn a_colorize_step_that_fails_for_good_fails_its_photo_and_refunds_what_it_cost() {
    let fake = FakeReplicate::start().await;
    fake.fail_model(COLORIZE);
    let app = spawn_app_with(Options {
        stripe: true,
        replicate: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    let (checkout, order, token, _) = app
        .buy_with(
            vec![("old.jpg", photos::photo(0)), ("new.png", photos::photo(1))],
            json!({"photo_options": {"0": ["colorize", "upscale_2x"]}}),
        )
        .await;
    assert_eq!(checkout["amount_total"], 500 + 300 + 150 + 500);
    wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    let pi = format!(
        "pi_{}",
        checkout["checkout_session_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("cs_")
    );
    common::eventually(LONG, "the failed photo refunded at Stripe", || async {
        app.stripe.as_ref().unwrap().refunded(&pi) == 950
    })
    .await;
    common::eventually(LONG, "the refund recorded on the order", || async {
        let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        view["amount_refunded"] == 950
    })
    .await;
    let (_, view) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
    assert_eq!(view["images"][0]["status"], "failed");
    assert_eq!(view["images"][0]["refunded"], true);
    assert_eq!(view["images"][1]["status"], "completed");
    let attempts = app.settings.restoration.max_attempts as i64;
    let failed = steps(&view, 0);
    assert_eq!(failed[0], ("repair".into(), "completed".into(), 1));
    assert_eq!(failed[1], ("colorize".into(), "failed".into(), attempts));
    assert_eq!(failed[2], ("upscale_2x".into(), "skipped".into(), 0));
    assert!(view["images"][0]["steps"][1]["error"].is_string(), "{view}");
    // The repair ran once; colorize as often as a step may; upscale never.
    let chain: Vec<String> = fake.made().into_iter().map(|c| c.model).collect();
    assert_eq!(chain.iter().filter(|m| *m == COLORIZE).count() as i64, attempts);
    assert!(!chain.iter().any(|m| m == UPSCALE), "{chain:?}");
}

#[tokio::test]
async fn the_local_engine_upscales_2x_after_its_repair() {
    let app = spawn_app().await;
    let original = photos::encode(120, 90, image::ImageFormat::Jpeg, 7);
    let (checkout, order, token, _) = app
        .buy_with(vec![("small.jpg", original)], json!({"options": ["upscale_2x"]}))
        .await;
    assert_eq!(checkout["amount_total"], 500 + 150);
    let view = wait_for_order(&app, &order, &token, &["completed"], LONG).await;
    assert_eq!(steps(&view, 0), done(&["repair", "upscale_2x"]));
    let restored = app
        .client
        .get(app.url(&format!(
            "/api/orders/{order}/images/{}/restored?token={token}",
            view["images"][0]["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200);
    let restored = image::load_from_memory(&restored.bytes().await.unwrap()).unwrap();
    assert_eq!((restored.width(), restored.height()), (240, 180));
    // What it cannot run is not sold.
    let upload = app.upload_photos(1).await;
    let response = app
        .client
        .post(app.url("/api/checkout"))
        .json(&json!({"session_id": upload["session_id"], "options": ["faces"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

async fn scalar(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.expect("query")
}

/// Killed while a later step's prediction runs, the shop starts again at
/// that step: the finished repair is not recomputed, the running prediction
/// is polled again rather than made a second time, and the rest follows.
#[tokio::test]
async fn killed_mid_chain_the_shop_resumes_at_the_unfinished_step_and_recomputes_nothing() {
    let fake = FakeReplicate::start().await;
    let database_url = common::fresh_database().await;
    let storage = tempfile::tempdir().unwrap();
    let config = || ShopConfig::serve(&database_url, storage.path()).replicate(&fake.base);
    let mut shop = Shop::start(config()).await;
    let db = PgPool::connect(&database_url).await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    fake.hold_model(COLORIZE);

    let form = reqwest::multipart::Form::new().part(
        "files",
        reqwest::multipart::Part::bytes(photos::photo(0)).file_name("old.jpg"),
    );
    let upload: Value = client
        .post(format!("{}/api/upload", shop.base))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checkout: Value = client
        .post(format!("{}/api/checkout", shop.base))
        .json(
            &json!({"session_id": upload["session_id"], "email": "kill@example.com",
                      "options": ["faces", "colorize", "upscale_2x"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cs = checkout["checkout_session_id"].as_str().unwrap();
    let paid = client
        .post(format!("{}/dev/checkout/{cs}/pay", shop.base))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_redirection() || paid.status().is_success());

    common::eventually(LONG, "the colorize prediction recorded", || async {
        scalar(
            &db,
            "SELECT count(*) FROM restoration_jobs WHERE step = 2 AND status = 'processing' AND external_id IS NOT NULL",
        )
        .await
            == 1
    })
    .await;
    shop.kill();
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM image_steps WHERE status = 'completed'").await,
        2,
        "the repair and faces steps were stored before the kill"
    );
    fake.release();
    let _restarted = Shop::start(config()).await;
    common::eventually(LONG, "the photo restored", || async {
        scalar(&db, "SELECT count(*) FROM images WHERE status = 'completed'").await == 1
    })
    .await;
    let made: Vec<String> = fake.made().into_iter().map(|c| c.model).collect();
    assert_eq!(made, [REPAIR, FACES, COLORIZE, UPSCALE], "each step made once");
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM image_steps WHERE status = 'completed'").await,
        4
    );
    assert_eq!(
        scalar(&db, "SELECT max(attempts)::int8 FROM image_steps").await,
        1,
        "no step spent a second attempt"
    );
}
