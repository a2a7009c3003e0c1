//! A fake Replicate (CONTRACTS.md) on loopback: predictions that start,
//! process and end after a few polls, output files served from its own
//! "delivery host", the Files API, and faults on demand (429 with
//! `Retry-After`, 5xx, slow answers, predictions that fail).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Multipart, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A fault the next create call answers with.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After: secs`.
    Throttle(u64),
    /// A 5xx.
    ServerError(u16),
    /// Answer normally, after this long.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Prediction {
    id: String,
    status: String,
    polls: u32,
    input_sha: String,
    output: Option<Vec<u8>>,
    fail: bool,
    /// The input name the model was given (`img`, `image`, …).
    input_name: String,
    /// The model it runs (`owner/name`, or `version:…` for a pinned version).
    model: String,
}

/// One create call that made a prediction.
#[derive(Debug, Clone)]
pub struct Created {
    pub model: String,
    pub id: String,
    /// The photo it was given, decoded from its input.
    pub input: Vec<u8>,
    /// Its inputs besides the photo.
    pub extra: Value,
}

#[derive(Default)]
struct Inner {
    predictions: HashMap<String, Prediction>,
    create_faults: VecDeque<Fault>,
    /// Answers for the next output downloads (a finished prediction's file).
    delivery_faults: VecDeque<Fault>,
    /// Output downloads asked for, answered or not.
    deliveries: usize,
    /// Inputs as the fake received them, decoded (data URIs and files).
    inputs: Vec<Vec<u8>>,
    /// Inputs (SHA-256 of the photo) whose predictions always fail.
    failing: Vec<String>,
    /// Every create call that made a prediction: the input's SHA-256.
    created: Vec<String>,
    cancelled: Vec<String>,
    files: HashMap<String, Vec<u8>>,
    next: u64,
    /// What every new prediction outputs instead of its input.
    output_bytes: Option<Vec<u8>>,
    /// Every prediction made, in order, with its model and input.
    made: Vec<Created>,
    /// Models whose predictions always fail.
    failing_models: Vec<String>,
    /// Models whose predictions stay `processing` until released.
    held_models: Vec<String>,
    /// The files each prediction's output was served as.
    delivered: HashMap<String, Vec<u8>>,
}

/// Where and how the fake posts completions: (secret, shop base URL, delay).
type Webhooks = Arc<Mutex<Option<(String, String, Duration)>>>;

#[derive(Clone)]
pub struct FakeReplicate {
    inner: Arc<Mutex<Inner>>,
    /// The output URL every succeeded prediction names instead of its own
    /// file (a hostile or broken model); apart from `inner`, which is held
    /// while predictions are rendered.
    forced_output: Arc<Mutex<Option<String>>>,
    webhooks: Webhooks,
    pub base: String,
    /// GETs a prediction answers `processing` to before it ends.
    polls_to_finish: u32,
}

pub const TOKEN: &str = "r8_test_restoreclick";

impl FakeReplicate {
    pub async fn start() -> Self {
        Self::start_with(2).await
    }

    pub async fn start_with(polls_to_finish: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = Self {
            inner: Arc::default(),
            forced_output: Arc::default(),
            webhooks: Arc::default(),
            base,
            polls_to_finish,
        };
        let app = Router::new()
            .route("/v1/models/{owner}/{name}/predictions", post(create))
            .route("/v1/predictions", post(create_version))
            .route("/v1/predictions/{id}", get(show))
            .route("/v1/predictions/{id}/cancel", post(cancel))
            .route("/v1/files", post(upload))
            .route("/v1/files/{id}/content", get(file))
            .route("/delivery/{id}", get(delivery))
            .route("/redirect", get(redirect))
            .route(
                "/text",
                get(|| async { "# HELP not a photo\nrestoreclick_secret 1\n" }),
            )
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// Predictions created with a `webhook` finish by themselves after
    /// `after`, and the fake posts them, signed, to the shop at `shop`.
    pub fn send_webhooks(&self, secret: &str, shop: &str, after: Duration) {
        *self.webhooks.lock().unwrap() = Some((secret.to_owned(), shop.to_owned(), after));
    }

    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().create_faults.extend(faults);
    }

    /// The next output downloads meet these faults, one each.
    pub fn inject_delivery(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().delivery_faults.extend(faults);
    }

    /// Every succeeded prediction names `url` as its output from now on.
    pub fn output_url(&self, url: &str) {
        *self.forced_output.lock().unwrap() = Some(url.to_owned());
    }

    /// Every new prediction outputs `bytes` instead of its input.
    pub fn output_bytes(&self, bytes: Vec<u8>) {
        self.inner.lock().unwrap().output_bytes = Some(bytes);
    }

    /// `{base}/redirect?to=…`: a URL on the fake that answers 302 to `to`.
    pub fn redirect_to(&self, to: &str) -> String {
        format!(
            "{}/redirect?to={}",
            self.base,
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        )
    }

    /// `{base}/text`: a URL on the fake that answers text, not a photo.
    pub fn text_url(&self) -> String {
        format!("{}/text", self.base)
    }

    /// The photos the fake was given as inputs, as bytes.
    pub fn inputs(&self) -> Vec<Vec<u8>> {
        self.inner.lock().unwrap().inputs.clone()
    }

    /// Output downloads asked for, the failed ones included.
    pub fn deliveries(&self) -> usize {
        self.inner.lock().unwrap().deliveries
    }

    /// Predictions for this photo's bytes will always fail.
    pub fn always_fail(&self, photo: &[u8]) {
        self.inner.lock().unwrap().failing.push(sha(photo));
    }

    /// How many predictions were created in all, and for this photo.
    pub fn created(&self) -> usize {
        self.inner.lock().unwrap().created.len()
    }

    pub fn created_for(&self, photo: &[u8]) -> usize {
        let sha = sha(photo);
        self.inner
            .lock()
            .unwrap()
            .created
            .iter()
            .filter(|s| **s == sha)
            .count()
    }

    pub fn cancelled(&self) -> usize {
        self.inner.lock().unwrap().cancelled.len()
    }

    /// Every prediction made, in order.
    pub fn made(&self) -> Vec<Created> {
        self.inner.lock().unwrap().made.clone()
    }

    /// The file prediction `id`'s output was last served as.
    pub fn delivered(&self, id: &str) -> Option<Vec<u8>> {
        self.inner.lock().unwrap().delivered.get(id).cloned()
    }

    /// Predictions of `model` always fail.
    pub fn fail_model(&self, model: &str) {
        self.inner.lock().unwrap().failing_models.push(model.to_owned());
    }

    /// Predictions of `model` stay `processing` until [`Self::release`].
    pub fn hold_model(&self, model: &str) {
        self.inner.lock().unwrap().held_models.push(model.to_owned());
    }

    pub fn release(&self) {
        self.inner.lock().unwrap().held_models.clear();
    }

    /// The input names predictions were given.
    pub fn input_names(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .predictions
            .values()
            .map(|p| p.input_name.clone())
            .collect()
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        Json(json!({"title": status.canonical_reason(), "detail": detail, "status": status.as_u16()})),
    )
        .into_response()
}

impl FakeReplicate {
    fn view(&self, p: &Prediction) -> Value {
        let forced = self.forced_output.lock().unwrap().clone();
        let output = (p.status == "succeeded")
            .then(|| forced.unwrap_or_else(|| format!("{}/delivery/{}", self.base, p.id)));
        json!({
            "id": p.id, "model": "owner/model", "version": "v1", "input": {}, "status": p.status,
            "output": output, "error": if p.status == "failed" { json!("CUDA out of memory") } else { Value::Null },
            "logs": "", "metrics": {}, "created_at": "2026-01-01T00:00:00Z",
            "urls": {"get": format!("{}/v1/predictions/{}", self.base, p.id),
                     "cancel": format!("{}/v1/predictions/{}/cancel", self.base, p.id)},
            "a_future_field": {"anything": true}
        })
    }

    /// The photo the input names: a data URI, or a file uploaded before.
    fn input_bytes(&self, value: &str) -> Option<Vec<u8>> {
        if let Some(rest) = value.strip_prefix("data:") {
            let (_, data) = rest.split_once(";base64,")?;
            return base64::engine::general_purpose::STANDARD.decode(data).ok();
        }
        let id = value.rsplit('/').nth(1)?;
        self.inner.lock().unwrap().files.get(id).cloned()
    }
}

async fn create_version(state: State<FakeReplicate>, headers: HeaderMap, body: Json<Value>) -> Response {
    let Some(version) = body.0.get("version").and_then(Value::as_str) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "version is required");
    };
    let model = format!("version:{version}");
    create_prediction(state, headers, model, body).await
}

async fn create(
    state: State<FakeReplicate>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    create_prediction(state, headers, format!("{owner}/{name}"), body).await
}

async fn create_prediction(
    State(fake): State<FakeReplicate>,
    headers: HeaderMap,
    model: String,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "invalid token");
    }
    let fault = fake.inner.lock().unwrap().create_faults.pop_front();
    match fault {
        Some(Fault::Throttle(secs)) => {
            let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "throttled");
            r.headers_mut().insert("retry-after", secs.into());
            return r;
        }
        Some(Fault::ServerError(code)) => {
            return problem(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                "upstream trouble",
            );
        }
        Some(Fault::Slow(wait)) => tokio::time::sleep(wait).await,
        None => {}
    }
    let Some(input) = body.get("input").and_then(Value::as_object) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "input is required");
    };
    let Some((name, bytes)) = input.iter().find_map(|(k, v)| {
        v.as_str()
            .and_then(|s| fake.input_bytes(s))
            .map(|b| (k.clone(), b))
    }) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "no image input");
    };
    fake.inner.lock().unwrap().inputs.push(bytes.clone());
    let mut inner = fake.inner.lock().unwrap();
    inner.next += 1;
    let input_sha = sha(&bytes);
    let mut extra = input.clone();
    extra.remove(&name);
    let prediction = Prediction {
        id: format!("pred{:06}", inner.next),
        status: "starting".into(),
        polls: 0,
        fail: inner.failing.contains(&input_sha) || inner.failing_models.contains(&model),
        input_sha: input_sha.clone(),
        output: Some(inner.output_bytes.clone().unwrap_or_else(|| bytes.clone())),
        input_name: name,
        model: model.clone(),
    };
    inner.made.push(Created {
        model,
        id: prediction.id.clone(),
        input: bytes,
        extra: Value::Object(extra),
    });
    inner.created.push(input_sha);
    let view = fake.view(&prediction);
    let id = prediction.id.clone();
    inner.predictions.insert(id.clone(), prediction);
    drop(inner);
    let webhooks = fake.webhooks.lock().unwrap().clone();
    if let (Some((secret, shop, after)), Some(_)) = (webhooks, body.get("webhook")) {
        tokio::spawn(fake.clone().deliver(id, secret, shop, after));
    }
    (StatusCode::CREATED, Json(view)).into_response()
}

impl FakeReplicate {
    /// Finishes a prediction and posts it to the shop's webhook, as Replicate does.
    async fn deliver(self, id: String, secret: String, shop: String, after: Duration) {
        tokio::time::sleep(after).await;
        let body = {
            let mut inner = self.inner.lock().unwrap();
            let Some(p) = inner.predictions.get_mut(&id) else {
                return;
            };
            p.status = if p.fail {
                "failed".into()
            } else {
                "succeeded".into()
            };
            self.view(p).to_string()
        };
        let msg = format!("msg_{id}");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature =
            restoreclick::providers::restoration::signature::sign(&secret, &msg, now, body.as_bytes())
                .unwrap();
        let _ = reqwest::Client::new()
            .post(format!("{shop}/api/webhooks/replicate"))
            .header("content-type", "application/json")
            .header("webhook-id", msg)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
    }
}

async fn show(State(fake): State<FakeReplicate>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "invalid token");
    }
    let mut inner = fake.inner.lock().unwrap();
    let held = inner.held_models.clone();
    let Some(p) = inner.predictions.get_mut(&id) else {
        return problem(StatusCode::NOT_FOUND, "no such prediction");
    };
    if held.contains(&p.model) && !matches!(p.status.as_str(), "succeeded" | "failed" | "canceled") {
        p.status = "processing".into();
    } else if !matches!(p.status.as_str(), "succeeded" | "failed" | "canceled") {
        p.polls += 1;
        p.status = if p.polls < fake.polls_to_finish {
            "processing".into()
        } else if p.fail {
            "failed".into()
        } else {
            "succeeded".into()
        };
    }
    let _ = &p.input_sha;
    Json(fake.view(p)).into_response()
}

async fn cancel(State(fake): State<FakeReplicate>, Path(id): Path<String>) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    inner.cancelled.push(id.clone());
    match inner.predictions.get_mut(&id) {
        Some(p) => {
            if !matches!(p.status.as_str(), "succeeded" | "failed") {
                p.status = "canceled".into();
            }
            Json(fake.view(p)).into_response()
        }
        None => problem(StatusCode::NOT_FOUND, "no such prediction"),
    }
}

async fn upload(State(fake): State<FakeReplicate>, headers: HeaderMap, mut form: Multipart) -> Response {
    if !authorized(&headers) {
        return problem(StatusCode::UNAUTHORIZED, "invalid token");
    }
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("content") {
            let bytes = field.bytes().await.unwrap_or_default().to_vec();
            let mut inner = fake.inner.lock().unwrap();
            inner.next += 1;
            let id = format!("file{:06}", inner.next);
            inner.files.insert(id.clone(), bytes);
            let url = format!("{}/v1/files/{id}/content", fake.base);
            return (StatusCode::CREATED, Json(json!({"id": id, "urls": {"get": url}}))).into_response();
        }
    }
    problem(StatusCode::UNPROCESSABLE_ENTITY, "content is required")
}

async fn file(State(fake): State<FakeReplicate>, Path(id): Path<String>) -> Response {
    match fake.inner.lock().unwrap().files.get(&id) {
        Some(bytes) => Bytes::from(bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>) -> Response {
    let to = q.get("to").cloned().unwrap_or_default();
    (StatusCode::FOUND, [("location", to)]).into_response()
}

/// The output file: the input photo, a little changed, in PNG.
async fn delivery(State(fake): State<FakeReplicate>, Path(id): Path<String>) -> Response {
    let (input, fault) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.deliveries += 1;
        let fault = inner.delivery_faults.pop_front();
        (inner.predictions.get(&id).and_then(|p| p.output.clone()), fault)
    };
    match fault {
        Some(Fault::Throttle(secs)) => {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())]).into_response();
        }
        Some(Fault::ServerError(code)) => {
            return StatusCode::from_u16(code)
                .unwrap_or(StatusCode::BAD_GATEWAY)
                .into_response();
        }
        Some(Fault::Slow(wait)) => tokio::time::sleep(wait).await,
        None => {}
    }
    let Some(input) = input else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(image) = image::load_from_memory(&input) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let brighter = image.brighten(10);
    let mut out = std::io::Cursor::new(Vec::new());
    if brighter.write_to(&mut out, image::ImageFormat::Png).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let out = out.into_inner();
    fake.inner.lock().unwrap().delivered.insert(id, out.clone());
    ([("content-type", "image/png")], out).into_response()
}
