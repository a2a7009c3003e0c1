//! A fake Stripe API (CONTRACTS.md): Checkout Sessions with idempotency keys.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{header_exists, method, path, path_regex},
};

pub struct FakeStripe {
    pub server: MockServer,
}

/// Answers like Stripe: a new session per idempotency key, the same one again for a repeat.
struct CreateSession {
    by_key: Arc<Mutex<HashMap<String, Value>>>,
}

impl Respond for CreateSession {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form(request);
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut known = self.by_key.lock().expect("lock");
        if let Some(previous) = key.as_ref().and_then(|k| known.get(k)) {
            return ResponseTemplate::new(200).set_body_json(previous.clone());
        }
        let id = format!("cs_test_{}", Uuid::new_v4().simple());
        let quantity: i64 = form
            .get("line_items[0][quantity]")
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        let unit: i64 = form
            .get("line_items[0][price_data][unit_amount]")
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
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
            "mode": "payment",
            "expires_at": expires_at,
            "created": super::now(),
            "livemode": false,
            "amount_total": unit * quantity,
            "currency": form.get("line_items[0][price_data][currency]"),
            "client_reference_id": form.get("client_reference_id"),
            "metadata": {"upload_session_id": form.get("metadata[upload_session_id]")},
        });
        if let Some(k) = key {
            known.insert(k, body.clone());
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// The form-encoded body of a request, decoded.
pub fn form(request: &Request) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

impl FakeStripe {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/checkout/sessions"))
            .and(header_exists("authorization"))
            .respond_with(CreateSession {
                by_key: Arc::default(),
            })
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/v1/checkout/sessions/[^/]+/expire$"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"object": "checkout.session", "status": "expired"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/refunds"))
            .and(header_exists("idempotency-key"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "re_test_1", "object": "refund", "status": "succeeded", "amount": 0, "currency": "usd"
            })))
            .mount(&server)
            .await;
        Self { server }
    }

    /// Every refund Stripe was asked for.
    pub async fn refunds(&self) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/v1/refunds")
            .collect()
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Every create call Stripe received, in order.
    pub async fn created_sessions(&self) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/v1/checkout/sessions")
            .collect()
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
