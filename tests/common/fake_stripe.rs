//! A fake Stripe API (CONTRACTS.md) that keeps state like Stripe does:
//! Checkout Sessions (created once per idempotency key, retrieved, expired
//! only while open, paid by the test), and refunds (once per idempotency
//! key, never more than was paid).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

#[derive(Default)]
struct State {
    sessions: HashMap<String, Value>,
    /// Create answers by idempotency key.
    created: HashMap<String, Value>,
    /// Refund answers by idempotency key.
    refunds: HashMap<String, Value>,
    /// Refunded so far, by payment intent.
    refunded: HashMap<String, i64>,
    /// Answer every call with 503 while set.
    down: bool,
    /// Answer expire calls with 503 while set.
    expire_down: bool,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

struct Router {
    state: Arc<Mutex<State>>,
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"type": "invalid_request_error", "code": code, "message": message}
    }))
}

/// The form-encoded body of a request, decoded.
pub fn form(request: &Request) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn idempotency_key(request: &Request) -> Option<String> {
    request
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Respond for Router {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().expect("lock");
        if state.down {
            return error(503, "api_error", "Stripe is down (fake)");
        }
        if request.headers.get("authorization").is_none() {
            return error(401, "api_key_missing", "no key");
        }
        let path = request.url.path().to_owned();
        let method = request.method.as_str();
        match (method, path.strip_prefix("/v1/")) {
            ("POST", Some("checkout/sessions")) => create_session(&mut state, request),
            ("POST", Some("refunds")) => refund(&mut state, request),
            (_, Some(rest)) if rest.starts_with("checkout/sessions/") => {
                let rest = &rest["checkout/sessions/".len()..];
                match (method, rest.split_once('/')) {
                    ("GET", None) => match state.sessions.get(rest) {
                        Some(session) => ResponseTemplate::new(200).set_body_json(session.clone()),
                        None => error(404, "resource_missing", "No such checkout.session"),
                    },
                    ("POST", Some((id, "expire"))) => {
                        if state.expire_down {
                            return error(503, "api_error", "try again (fake)");
                        }
                        match state.sessions.get_mut(id) {
                            Some(session) if session["status"] == "open" => {
                                session["status"] = json!("expired");
                                ResponseTemplate::new(200).set_body_json(session.clone())
                            }
                            Some(_) => error(
                                400,
                                "checkout_session_not_expirable",
                                "Only Checkout Sessions with a status of `open` can be expired.",
                            ),
                            None => error(404, "resource_missing", "No such checkout.session"),
                        }
                    }
                    _ => error(404, "resource_missing", "unknown path"),
                }
            }
            _ => error(404, "resource_missing", "unknown path"),
        }
    }
}

fn create_session(state: &mut State, request: &Request) -> ResponseTemplate {
    let key = idempotency_key(request);
    if let Some(previous) = key.as_ref().and_then(|k| state.created.get(k)) {
        return ResponseTemplate::new(200).set_body_json(previous.clone());
    }
    let form = form(request);
    let id = format!("cs_test_{}", Uuid::new_v4().simple());
    let mut amount_total = 0;
    let mut currency = None;
    for i in 0.. {
        let Some(quantity) = form
            .get(&format!("line_items[{i}][quantity]"))
            .and_then(|q| q.parse::<i64>().ok())
        else {
            break;
        };
        let unit: i64 = form
            .get(&format!("line_items[{i}][price_data][unit_amount]"))
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        currency = form
            .get(&format!("line_items[{i}][price_data][currency]"))
            .cloned();
        amount_total += unit * quantity;
    }
    let expires_at: i64 = form
        .get("expires_at")
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| super::now() + 86_400);
    let body = json!({
        "id": id,
        "object": "checkout.session",
        "url": format!("https://checkout.stripe.test/c/pay/{id}"),
        "status": "open",
        "payment_status": "unpaid",
        "payment_intent": null,
        "mode": "payment",
        "expires_at": expires_at,
        "created": super::now(),
        "livemode": false,
        "amount_total": amount_total,
        "currency": currency,
        "client_reference_id": form.get("client_reference_id"),
        "customer_email": form.get("customer_email"),
        "metadata": {"upload_session_id": form.get("metadata[upload_session_id]")},
    });
    if let Some(k) = key {
        state.created.insert(k, body.clone());
    }
    state.sessions.insert(id, body.clone());
    ResponseTemplate::new(200).set_body_json(body)
}

fn refund(state: &mut State, request: &Request) -> ResponseTemplate {
    let Some(key) = idempotency_key(request) else {
        return error(
            400,
            "parameter_missing",
            "an Idempotency-Key is required here (fake)",
        );
    };
    if let Some(previous) = state.refunds.get(&key) {
        return ResponseTemplate::new(200).set_body_json(previous.clone());
    }
    let form = form(request);
    let Some(intent) = form.get("payment_intent").cloned() else {
        return error(400, "parameter_missing", "payment_intent");
    };
    let paid = state
        .sessions
        .values()
        .find(|s| s["payment_intent"] == intent.as_str())
        .and_then(|s| s["amount_total"].as_i64());
    let already = state.refunded.get(&intent).copied().unwrap_or(0);
    let amount: i64 = form
        .get("amount")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| paid.unwrap_or(0) - already);
    if let Some(paid) = paid
        && already + amount > paid
    {
        return error(
            400,
            "charge_already_refunded",
            "the refund is more than what is left of the charge",
        );
    }
    let body = json!({
        "id": format!("re_test_{}", Uuid::new_v4().simple()),
        "object": "refund", "status": "succeeded", "amount": amount, "currency": "usd",
        "payment_intent": intent,
    });
    state.refunded.insert(intent, already + amount);
    state.refunds.insert(key, body.clone());
    ResponseTemplate::new(200).set_body_json(body)
}

impl FakeStripe {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Router { state: state.clone() })
            .mount(&server)
            .await;
        Self {
            server: Arc::new(server),
            state,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The customer pays checkout `id` (by card: paid at once). Returns the
    /// session as Stripe now shows it.
    pub fn pay(&self, id: &str) -> Value {
        self.complete(id, "paid")
    }

    /// The customer completes checkout `id` with a delayed method: unpaid yet.
    pub fn pay_later(&self, id: &str) -> Value {
        self.complete(id, "unpaid")
    }

    /// The delayed payment of checkout `id` succeeds.
    pub fn settle(&self, id: &str) -> Value {
        self.complete(id, "paid")
    }

    fn complete(&self, id: &str, payment_status: &str) -> Value {
        let mut state = self.state.lock().expect("lock");
        let session = state.sessions.get_mut(id).expect("a session the fake created");
        session["status"] = json!("complete");
        session["payment_status"] = json!(payment_status);
        session["payment_intent"] = json!(format!("pi_{}", id.trim_start_matches("cs_")));
        session["customer_details"] = json!({"email": "buyer@example.com"});
        session.clone()
    }

    /// The session as Stripe shows it now.
    pub fn session(&self, id: &str) -> Option<Value> {
        self.state.lock().expect("lock").sessions.get(id).cloned()
    }

    /// While `down`, every call answers 503.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("lock").down = down;
    }

    /// While set, expire calls answer 503.
    pub fn set_expire_down(&self, down: bool) {
        self.state.lock().expect("lock").expire_down = down;
    }

    /// Every refund call Stripe received (retries included).
    pub async fn refunds(&self) -> Vec<Request> {
        self.requests("/v1/refunds").await
    }

    /// The distinct refunds Stripe made (one per idempotency key).
    pub fn refunds_made(&self) -> Vec<Value> {
        self.state
            .lock()
            .expect("lock")
            .refunds
            .values()
            .cloned()
            .collect()
    }

    /// What Stripe has refunded of a payment.
    pub fn refunded(&self, payment_intent: &str) -> i64 {
        self.state
            .lock()
            .expect("lock")
            .refunded
            .get(payment_intent)
            .copied()
            .unwrap_or(0)
    }

    async fn requests(&self, path: &str) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .collect()
    }

    /// Every create call Stripe received, in order.
    pub async fn created_sessions(&self) -> Vec<Request> {
        self.requests("/v1/checkout/sessions").await
    }

    /// How many times the shop asked Stripe for a session.
    pub async fn retrievals(&self, id: &str) -> usize {
        self.requests(&format!("/v1/checkout/sessions/{id}"))
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "GET")
            .count()
    }

    /// Checkout ids the shop asked Stripe to expire.
    pub async fn expired_sessions(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let p = r.url.path().to_owned();
                p.strip_prefix("/v1/checkout/sessions/")
                    .and_then(|rest| rest.strip_suffix("/expire"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// A Stripe event of `event_type` whose object is `session` (as the fake
/// shows it).
pub fn session_event(event_type: &str, session: &Value) -> Value {
    json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "api_version": "2099-12-31.future",
        "created": super::now(),
        "livemode": false,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": session},
    })
}
