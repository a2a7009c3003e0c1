//! Test harness: the real shop on port 0 with a fresh database, real Redis,
//! a temporary storage directory, and fakes for the third parties.
#![allow(dead_code)]

pub mod fake_replicate;
pub mod fake_sendgrid;
pub mod fake_stripe;
pub mod photos;
pub mod private_postgres;
pub mod private_redis;
pub mod restorers;
pub mod shop;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use restoreclick::{
    config::{PaymentsProvider, Secret, Settings},
    providers::payments::signature,
    startup::Application,
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const WEBHOOK_SECRET: &str = "whsec_test_restoreclick";

/// The admin URL tests create their databases through.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Creates an empty database `rc_test_…` and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let name = format!("rc_test_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to the admin database");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create the test database");
    let mut url = url::Url::parse(&admin).expect("admin URL");
    url.set_path(&name);
    url.to_string()
}

/// Settings for a test instance: fresh database, temp storage, port 0.
pub async fn test_settings(storage_dir: &std::path::Path) -> Settings {
    let env = vec![("APP_ENV".to_owned(), "test".to_owned())];
    let mut s = Settings::load_with_env(&config_dir(), &env).expect("test settings load");
    s.database.url = Secret::new(fresh_database().await);
    s.database.max_connections = 10;
    s.redis.url = Secret::new(redis_url());
    s.redis.key_prefix = format!("rc-test-{}:", Uuid::new_v4().simple());
    s.storage.url = storage_dir.display().to_string();
    s.http.addr = "127.0.0.1:0".parse().expect("addr");
    s.ops.addr = "127.0.0.1:0".parse().expect("addr");
    s.stripe.webhook_secret = Secret::new(WEBHOOK_SECRET);
    s.mail.admin_to = "ops@restoreclick.test".to_owned();
    s
}

pub struct TestApp {
    pub address: String,
    pub ops_address: String,
    pub db: PgPool,
    pub settings: Arc<Settings>,
    pub client: reqwest::Client,
    pub storage_dir: tempfile::TempDir,
    /// Where the outbox mail sender writes `.eml` files.
    pub outbox_dir: tempfile::TempDir,
    pub stripe: Option<fake_stripe::FakeStripe>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Changes a test makes to its shop's settings before start-up.
pub type Tweak = Box<dyn FnOnce(&mut Settings) + Send>;

/// How a test wants its shop.
#[derive(Default)]
pub struct Options {
    /// Use Stripe (against the fake) instead of the dev checkout.
    pub stripe: bool,
    /// Restore through Replicate's API, served by this fake.
    pub replicate: Option<fake_replicate::FakeReplicate>,
    /// Restore with this provider instead of the configured one.
    pub restorer: Option<Arc<dyn restoreclick::providers::restoration::Restorer>>,
    /// Change any setting before the shop starts.
    pub tweak: Option<Tweak>,
}

/// Settings that make retries and polls fast enough for tests.
pub fn fast_retries(s: &mut Settings) {
    s.restoration.backoff_base = Duration::from_millis(50);
    s.restoration.max_backoff = Duration::from_millis(200);
    s.replicate.poll_interval = Duration::from_millis(20);
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    restoreclick::telemetry::init(restoreclick::config::AppEnv::Test, "warn");
    let storage_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(storage_dir.path()).await;
    let outbox_dir = tempfile::tempdir().expect("temp dir");
    settings.outbox.dir = outbox_dir.path().display().to_string();
    let stripe = if options.stripe {
        let fake = fake_stripe::FakeStripe::start().await;
        settings.payments.provider = Some(PaymentsProvider::Stripe);
        settings.stripe.secret_key = Secret::new("sk_test_restoreclick");
        settings.stripe.api_base = fake.uri();
        Some(fake)
    } else {
        settings.payments.provider = Some(PaymentsProvider::Dev);
        None
    };
    fast_retries(&mut settings);
    if let Some(fake) = &options.replicate {
        settings.restoration.provider = Some(restoreclick::config::RestorationProvider::Replicate);
        settings.replicate.api_token = Secret::new(fake_replicate::TOKEN);
        settings.replicate.api_base = fake.base.clone();
    }
    if let Some(tweak) = options.tweak {
        tweak(&mut settings);
    }
    settings.validate().expect("test settings are valid");
    let app = Application::build_with(settings.clone(), options.restorer)
        .await
        .expect("the shop builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let ops_address = format!("http://127.0.0.1:{}", app.ops_port());
    let db = app.state().db.clone();
    let settings = app.state().settings.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        ops_address,
        db,
        settings,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        storage_dir,
        outbox_dir,
        stripe,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Stops the shop as SIGTERM would, and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// `POST /api/upload` with `(file name, bytes)` parts named `files`.
    pub async fn upload(&self, files: Vec<(&str, Vec<u8>)>, session_id: Option<&str>) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
            );
        }
        if let Some(id) = session_id {
            form = form.text("session_id", id.to_owned());
        }
        self.client
            .post(self.url("/api/upload"))
            .multipart(form)
            .send()
            .await
            .expect("upload request")
    }

    /// Uploads `n` good photos; returns the upload session's JSON.
    pub async fn upload_photos(&self, n: usize) -> Value {
        let files = (0..n)
            .map(|i| {
                (
                    if i % 2 == 0 { "photo.jpg" } else { "photo.png" },
                    photos::photo(i),
                )
            })
            .collect();
        let response = self.upload(files, None).await;
        assert_eq!(response.status(), 201, "upload should succeed");
        response.json().await.expect("upload JSON")
    }

    pub async fn checkout(&self, session_id: &str, email: Option<&str>) -> reqwest::Response {
        let mut body = json!({"session_id": session_id});
        if let Some(email) = email {
            body["email"] = json!(email);
        }
        self.client
            .post(self.url("/api/checkout"))
            .json(&body)
            .send()
            .await
            .expect("checkout request")
    }

    /// Posts `body` to the Stripe webhook with the given signature header.
    pub async fn post_webhook_raw(&self, body: &str, signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/api/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(sig) = signature {
            request = request.header("stripe-signature", sig);
        }
        request.send().await.expect("webhook request")
    }

    /// Posts `event`, correctly signed now.
    pub async fn post_event(&self, event: &Value) -> reqwest::Response {
        let body = event.to_string();
        let header = signature::sign(body.as_bytes(), WEBHOOK_SECRET, now());
        self.post_webhook_raw(&body, Some(&header)).await
    }

    /// The ops listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.ops_address))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series (`name{label="…"}` exactly as exported), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db)
            .await
            .expect("count query")
    }

    /// Files under the storage root, relative paths.
    pub fn stored_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.storage_dir.path();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(root).unwrap_or(&path).display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// The `.eml` files in the outbox, as strings.
    pub fn outbox(&self) -> Vec<String> {
        let mut mails: Vec<String> = std::fs::read_dir(self.outbox_dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        mails.sort();
        mails
    }

    /// Pays for these photos (`(file name, bytes)`) by the dev checkout's
    /// signed event: (checkout id, order id, order token).
    pub async fn order_of(&self, files: Vec<(&str, Vec<u8>)>) -> (String, String, String) {
        let n = files.len() as i64;
        let upload: Value = self.upload(files, None).await.json().await.expect("upload JSON");
        let session = upload["session_id"].as_str().expect("session id").to_owned();
        let checkout: Value = self
            .checkout(&session, Some("family@example.com"))
            .await
            .json()
            .await
            .expect("checkout JSON");
        let cs = checkout["checkout_session_id"]
            .as_str()
            .expect("checkout id")
            .to_owned();
        assert_eq!(
            self.post_event(&completed_event(&cs, &session, n * 500))
                .await
                .status(),
            200
        );
        let (_, state) = self.get_json(&format!("/api/checkout/{cs}")).await;
        (
            cs,
            state["order_id"].as_str().expect("order id").to_owned(),
            state["order_token"].as_str().expect("order token").to_owned(),
        )
    }

    /// Uploads `files`, opens a checkout with `choice` (its `options` and
    /// `photo_options`, a photo's key being its index among `files`) and pays
    /// it with a signed event for the checkout's total: (checkout view, order
    /// id, order token, the photos' ids).
    pub async fn buy_with(
        &self,
        files: Vec<(&str, Vec<u8>)>,
        choice: Value,
    ) -> (Value, String, String, Vec<String>) {
        let upload: Value = self.upload(files, None).await.json().await.expect("upload JSON");
        let session = upload["session_id"].as_str().expect("session id").to_owned();
        let ids: Vec<String> = upload["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["id"].as_str().expect("file id").to_owned())
            .collect();
        let mut body = json!({"session_id": session, "email": "options@example.com"});
        if let Some(every) = choice.get("options") {
            body["options"] = every.clone();
        }
        if let Some(per) = choice.get("photo_options").and_then(Value::as_object) {
            let per: serde_json::Map<String, Value> = per
                .iter()
                .map(|(k, v)| (ids[k.parse::<usize>().expect("a photo index")].clone(), v.clone()))
                .collect();
            body["photo_options"] = Value::Object(per);
        }
        let response = self
            .client
            .post(self.url("/api/checkout"))
            .json(&body)
            .send()
            .await
            .expect("checkout request");
        assert_eq!(response.status(), 200);
        let checkout: Value = response.json().await.expect("checkout JSON");
        let cs = checkout["checkout_session_id"]
            .as_str()
            .expect("checkout id")
            .to_owned();
        let (_, state) = self.get_json(&format!("/api/checkout/{cs}")).await;
        let amount = state["amount_total"].as_i64().expect("amount_total");
        assert_eq!(
            self.post_event(&completed_event(&cs, &session, amount))
                .await
                .status(),
            200
        );
        let (_, state) = self.get_json(&format!("/api/checkout/{cs}")).await;
        let order = state["order_id"].as_str().expect("order id").to_owned();
        let token = state["order_token"].as_str().expect("order token").to_owned();
        (state, order, token, ids)
    }

    /// `POST /api/orders/{order}/download-links` with the order's token.
    pub async fn download_link(&self, order: &str, token: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/orders/{order}/download-links")))
            .bearer_auth(token)
            .send()
            .await
            .expect("download-links request")
    }

    /// Uploads photos, opens a checkout and pays it with a signed
    /// `checkout.session.completed`; returns (order_id, order_token).
    pub async fn paid_order(&self, photos: usize) -> (String, String) {
        let upload = self.upload_photos(photos).await;
        let session_id = upload["session_id"].as_str().expect("session id").to_owned();
        let checkout: Value = self
            .checkout(&session_id, Some("buyer@example.com"))
            .await
            .json()
            .await
            .expect("json");
        let cs = checkout["checkout_session_id"]
            .as_str()
            .expect("checkout id")
            .to_owned();
        let event = completed_event(&cs, &session_id, (photos as i64) * 500);
        assert_eq!(self.post_event(&event).await.status(), 200);
        let (status, body) = self.get_json(&format!("/api/checkout/{cs}")).await;
        assert_eq!(status, 200);
        (
            body["order_id"].as_str().expect("order id").to_owned(),
            body["order_token"].as_str().expect("order token").to_owned(),
        )
    }
}

/// Waits until the order is in one of `statuses`; returns its JSON.
pub async fn wait_for_order(
    app: &TestApp,
    order: &str,
    token: &str,
    statuses: &[&str],
    timeout: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, body) = app.get_json(&format!("/api/orders/{order}?token={token}")).await;
        if body["status"].as_str().is_some_and(|s| statuses.contains(&s)) {
            return body;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("order {order} did not reach {statuses:?}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `series` in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A `checkout.session.completed` event as Stripe sends it (with fields the
/// shop does not read, to prove it tolerates them).
pub fn completed_event(checkout_id: &str, upload_session_id: &str, amount: i64) -> Value {
    checkout_event(
        "checkout.session.completed",
        checkout_id,
        upload_session_id,
        amount,
        "paid",
    )
}

pub fn checkout_event(
    event_type: &str,
    checkout_id: &str,
    upload_session_id: &str,
    amount: i64,
    payment_status: &str,
) -> Value {
    json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "api_version": "2099-12-31.future",
        "created": now(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
        "data": {"object": {
            "id": checkout_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "complete",
            "payment_status": payment_status,
            "payment_intent": format!("pi_{}", checkout_id.trim_start_matches("cs_")),
            "client_reference_id": upload_session_id,
            "metadata": {"upload_session_id": upload_session_id},
            "amount_total": amount,
            "amount_subtotal": amount,
            "currency": "usd",
            "customer_email": null,
            "customer_details": {"email": "Buyer@Example.com", "name": "A Buyer", "tax_exempt": "none"},
            "a_field_from_the_future": {"nested": [1, 2, 3]}
        }}
    })
}

/// A `charge.refunded` event for the payment of `checkout_id`.
pub fn refund_event(checkout_id: &str, amount: i64, amount_refunded: i64) -> Value {
    json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "type": "charge.refunded",
        "created": now(),
        "livemode": false,
        "data": {"object": {
            "id": format!("ch_{}", Uuid::new_v4().simple()),
            "object": "charge",
            "amount": amount,
            "amount_refunded": amount_refunded,
            "refunded": amount_refunded >= amount,
            "payment_intent": format!("pi_{}", checkout_id.trim_start_matches("cs_")),
        }}
    })
}

/// Polls `check` until it returns true, or panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
