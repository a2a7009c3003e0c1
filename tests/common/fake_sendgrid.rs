//! A fake SendGrid v3 `POST /v3/mail/send` (CONTRACTS.md) on loopback: the
//! Bearer key checked (401), the body checked as SendGrid does (400, 413),
//! 202 with `X-Message-Id` on success, and faults on demand: every answer
//! slowed, requests held until released, 429s with `X-RateLimit-Reset`.
//!
//! SendGrid has no idempotency key, so what the fake records is what a
//! family would receive: every accepted body, and the identity of each (the
//! queue row's id the shop puts in `custom_args.email_id`), so a test can
//! prove no email went out twice.
//!
//! A request is accepted when it is answered, after any hold or delay. If the
//! client has gone by then (the shop was killed), hyper drops the handler and
//! the request is counted but not accepted: the delay stands for a slow
//! network in front of SendGrid, not for mail SendGrid already queued.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use restoreclick::config::{MailProvider, Secret, Settings};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The API key the fake accepts (shaped like SendGrid's `SG.<id>.<secret>`).
pub const KEY: &str = "SG.restoreclick_test.fake_sendgrid_key";

/// SendGrid's limit on a whole message, attachments included after base64.
const MAX_MESSAGE_BYTES: usize = 30 * 1024 * 1024;

#[derive(Default)]
struct Inner {
    /// Every request to `/v3/mail/send`, refused and held ones included.
    requests: usize,
    /// Requests waiting for `release()` now.
    held: usize,
    delay: Duration,
    /// How many of the next requests get a 429, and the reset they are told.
    throttle_left: usize,
    throttle_reset_secs: u64,
    /// Accepted bodies, in order, with their identity.
    accepted: Vec<Accepted>,
}

struct Accepted {
    identity: String,
    body: Value,
}

#[derive(Clone)]
pub struct FakeSendGrid {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    /// Whether requests are held now; `release()` wakes every waiter at once.
    hold: Arc<watch::Sender<Hold>>,
}

impl FakeSendGrid {
    pub const KEY: &'static str = KEY;

    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake SendGrid");
        let base = format!(
            "http://{}",
            listener.local_addr().expect("the fake SendGrid's address")
        );
        let (hold, _) = watch::channel(Hold::default());
        let fake = Self {
            base,
            inner: Arc::default(),
            hold: Arc::new(hold),
        };
        let app = Router::new()
            .route("/v3/mail/send", post(send))
            // Past axum's 2 MB default: the fake answers 413 itself, at SendGrid's limit.
            .layer(DefaultBodyLimit::max(2 * MAX_MESSAGE_BYTES))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// Settings that send the shop's mail here (a child process's environment).
    /// `SENDGRID_API_KEY` is the conventional variable and wins over
    /// `RESTORECLICK__SENDGRID__API_KEY`; both are set, so an inherited value
    /// of either cannot point the shop at another key.
    pub fn shop_env(&self) -> Vec<(String, String)> {
        [
            ("RESTORECLICK__MAIL__PROVIDER", "sendgrid"),
            ("RESTORECLICK__SENDGRID__API_KEY", KEY),
            ("SENDGRID_API_KEY", KEY),
            ("RESTORECLICK__SENDGRID__API_BASE", self.base.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The same as `shop_env`, on settings (for `Options::tweak`).
    pub fn tweak(&self, s: &mut Settings) {
        s.mail.provider = Some(MailProvider::Sendgrid);
        s.sendgrid.api_key = Secret::new(KEY);
        s.sendgrid.api_base = self.base.clone();
    }

    /// Every accepted body, in the order accepted.
    pub fn accepted(&self) -> Vec<Value> {
        self.lock().accepted.iter().map(|a| a.body.clone()).collect()
    }

    pub fn accepted_count(&self) -> usize {
        self.lock().accepted.len()
    }

    /// The identity of every accepted body, in the order accepted.
    pub fn identities(&self) -> Vec<String> {
        self.lock().accepted.iter().map(|a| a.identity.clone()).collect()
    }

    /// Every request received, refused, throttled and held ones included.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Identities accepted more than once (each listed once): emails a
    /// family would have received twice.
    pub fn duplicates(&self) -> Vec<String> {
        let ids = self.identities();
        let mut twice: Vec<String> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) && !twice.contains(id) {
                twice.push(id.clone());
            }
        }
        twice
    }

    /// From now on requests wait, unanswered, until `release()`; they count
    /// as received (`requests()`) and as `held()` meanwhile.
    pub fn hold(&self) {
        self.hold.send_modify(|h| h.holding = true);
    }

    /// Lets every held request go on, and stops holding new ones.
    pub fn release(&self) {
        self.hold.send_modify(|h| h.holding = false);
    }

    /// Stops holding, and answers every held request 503 without accepting
    /// it: the connection was cut before SendGrid took the message. A test
    /// kills the shop while a send is held, then discards it, so that what
    /// the dead process sent is known exactly.
    pub fn discard_held(&self) {
        self.hold.send_modify(|h| {
            h.holding = false;
            h.discarded += 1;
        });
    }

    /// Requests waiting for `release()` now.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Every answer (refusals too) waits `d` first.
    pub fn delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// The next `n` requests get 429 with `X-RateLimit-Reset` `reset_in_secs`
    /// from when each is answered, and are not accepted.
    pub fn throttle_next(&self, n: usize, reset_in_secs: u64) {
        let mut inner = self.lock();
        inner.throttle_left = n;
        inner.throttle_reset_secs = reset_in_secs;
    }

    /// A panicking test thread must not hide the record from the others.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Which email a request is: the queue row's id the shop sends in
/// `custom_args.email_id` (top level, or in the first personalization),
/// else `to / subject`.
pub fn identity(body: &Value) -> String {
    let row = body["custom_args"]["email_id"]
        .as_str()
        .or_else(|| body["personalizations"][0]["custom_args"]["email_id"].as_str());
    if let Some(id) = row {
        return id.to_owned();
    }
    let to: Vec<&str> = body["personalizations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["to"].as_array().into_iter().flatten())
        .filter_map(|t| t["email"].as_str())
        .collect();
    let subject = body["subject"]
        .as_str()
        .or_else(|| body["personalizations"][0]["subject"].as_str())
        .unwrap_or("");
    format!("{} / {subject}", to.join(","))
}

/// The hold switch, and how many times held requests were discarded.
#[derive(Clone, Copy, Default)]
struct Hold {
    holding: bool,
    discarded: u64,
}

/// Counts one held request for as long as it waits, even if its client
/// goes away and the handler is dropped mid-wait.
struct Held(FakeSendGrid);

impl Held {
    fn new(fake: &FakeSendGrid) -> Self {
        fake.lock().held += 1;
        Self(fake.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.held = inner.held.saturating_sub(1);
    }
}

/// SendGrid's error body.
fn errors(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    (
        status,
        Json(json!({"errors": [{"message": message, "field": field, "help": null}]})),
    )
        .into_response()
}

fn now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

async fn send(State(fake): State<FakeSendGrid>, headers: HeaderMap, body: Bytes) -> Response {
    fake.lock().requests += 1;

    let mut hold = fake.hold.subscribe();
    let at_arrival = *hold.borrow_and_update();
    if at_arrival.holding {
        let _held = Held::new(&fake);
        // Err only if the sender is gone, which cannot happen while `fake` lives.
        let discarded = hold
            .wait_for(|h| !h.holding)
            .await
            .map(|h| h.discarded != at_arrival.discarded)
            .unwrap_or(false);
        if discarded {
            return errors(StatusCode::SERVICE_UNAVAILABLE, "connection lost", None);
        }
    }
    let delay = fake.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(KEY) {
        return errors(
            StatusCode::UNAUTHORIZED,
            "The provided authorization grant is invalid, expired, or revoked",
            None,
        );
    }

    let throttled = {
        let mut inner = fake.lock();
        if inner.throttle_left > 0 {
            inner.throttle_left -= 1;
            Some(inner.throttle_reset_secs)
        } else {
            None
        }
    };
    if let Some(reset_in) = throttled {
        let mut r = errors(StatusCode::TOO_MANY_REQUESTS, "too many requests", None);
        let h = r.headers_mut();
        h.insert("x-ratelimit-limit", 600u32.into());
        h.insert("x-ratelimit-remaining", 0u32.into());
        h.insert("x-ratelimit-reset", (now() + reset_in).into());
        return r;
    }

    if body.len() > MAX_MESSAGE_BYTES {
        return errors(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The message must be smaller than 30 MB, attachments included",
            None,
        );
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_type {
        return errors(
            StatusCode::BAD_REQUEST,
            "Content-Type should be application/json",
            None,
        );
    }
    let message: Value = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return errors(
                StatusCode::BAD_REQUEST,
                "Bad Request: the body is not a JSON object",
                None,
            );
        }
    };
    if let Err((field, problem)) = check(&message) {
        return errors(StatusCode::BAD_REQUEST, &problem, Some(field));
    }

    let message_id = format!("fake{}", uuid::Uuid::new_v4().simple());
    fake.lock().accepted.push(Accepted {
        identity: identity(&message),
        body: message,
    });
    (StatusCode::ACCEPTED, [("x-message-id", message_id)]).into_response()
}

/// What SendGrid refuses with a 400: the failing field and why.
fn check(m: &Value) -> Result<(), (&'static str, String)> {
    let bad = |field: &'static str, why: &str| Err((field, why.to_owned()));
    let is_address = |v: &Value| v["email"].as_str().is_some_and(|e| e.contains('@'));
    let template = m["template_id"].as_str().is_some_and(|t| !t.is_empty());

    let Some(personalizations) = m["personalizations"].as_array() else {
        return bad("personalizations", "The personalizations field is required");
    };
    if personalizations.is_empty() || personalizations.len() > 1000 {
        return bad(
            "personalizations",
            "Between 1 and 1000 personalizations are allowed",
        );
    }
    for p in personalizations {
        let to = p["to"].as_array().map(Vec::as_slice).unwrap_or_default();
        if to.is_empty() || !to.iter().all(is_address) {
            return bad(
                "personalizations.to",
                "Every personalization needs at least one valid `to` address",
            );
        }
        if let Some(args) = p.get("custom_args")
            && !string_values(args)
        {
            return bad(
                "personalizations.custom_args",
                "custom_args values must be strings",
            );
        }
    }
    if !is_address(&m["from"]) {
        return bad("from.email", "The from email must be a valid address");
    }

    let subject_everywhere = m["subject"].as_str().is_some_and(|s| !s.is_empty())
        || personalizations
            .iter()
            .all(|p| p["subject"].as_str().is_some_and(|s| !s.is_empty()));
    if !template && !subject_everywhere {
        return bad("subject", "The subject is required without a template_id");
    }

    match m.get("content") {
        None if template => {}
        None => return bad("content", "The content is required without a template_id"),
        Some(content) => {
            let Some(parts) = content.as_array().filter(|parts| !parts.is_empty()) else {
                return bad("content", "The content must be a non-empty array");
            };
            let mut types = Vec::new();
            for part in parts {
                let (Some(kind), Some(value)) = (part["type"].as_str(), part["value"].as_str()) else {
                    return bad("content", "Every content part needs a type and a value");
                };
                if value.is_empty() {
                    return bad("content.value", "A content value must not be empty");
                }
                types.push(kind);
            }
            let plain = types.iter().position(|t| *t == "text/plain");
            let html = types.iter().position(|t| *t == "text/html");
            if let (Some(plain), Some(html)) = (plain, html)
                && plain > html
            {
                return bad("content", "text/plain must come before text/html");
            }
        }
    }

    if let Some(attachments) = m.get("attachments") {
        let Some(attachments) = attachments.as_array() else {
            return bad("attachments", "The attachments must be an array");
        };
        for a in attachments {
            let Some(content) = a["content"].as_str() else {
                return bad("attachments.content", "Every attachment needs its content");
            };
            if base64::engine::general_purpose::STANDARD.decode(content).is_err() {
                return bad("attachments.content", "The attachment content must be base64");
            }
            if a["filename"].as_str().is_none_or(str::is_empty) {
                return bad("attachments.filename", "Every attachment needs a filename");
            }
            if let Some(d) = a.get("disposition")
                && !matches!(d.as_str(), Some("attachment" | "inline"))
            {
                return bad("attachments.disposition", "disposition is attachment or inline");
            }
        }
    }
    if let Some(args) = m.get("custom_args")
        && !string_values(args)
    {
        return bad("custom_args", "custom_args values must be strings");
    }
    Ok(())
}

/// A JSON object whose values are all strings (what SendGrid requires of `custom_args`).
fn string_values(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.values().all(Value::is_string))
}
