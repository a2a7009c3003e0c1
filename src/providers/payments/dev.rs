//! The embedded payment provider: a checkout page served by the shop itself.
//!
//! Creating a checkout needs no network; paying on the page makes the shop
//! send itself the event Stripe would send, signed with the webhook secret,
//! through its own public webhook endpoint. Refused in production.

use futures::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use super::{
    CheckoutRequest, CreatedCheckout, PaymentError, PaymentProvider, RefundRequest,
    event::CheckoutSessionObject,
};

pub struct DevPayments {
    public_url: String,
    /// This process's own listener, where the dev events go.
    self_url: String,
    webhook_secret: String,
    http: reqwest::Client,
}

impl DevPayments {
    pub fn new(public_url: &str, self_url: &str, webhook_secret: &str, http: reqwest::Client) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            self_url: self_url.trim_end_matches('/').to_owned(),
            webhook_secret: webhook_secret.to_owned(),
            http,
        }
    }
}

impl PaymentProvider for DevPayments {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn create_checkout<'a>(
        &'a self,
        request: &'a CheckoutRequest,
    ) -> BoxFuture<'a, Result<CreatedCheckout, PaymentError>> {
        Box::pin(async move {
            let id = format!("cs_dev_{}", Uuid::now_v7().simple());
            Ok(CreatedCheckout {
                url: format!("{}/dev/checkout/{id}", self.public_url),
                id,
                expires_at: request.expires_at,
                livemode: false,
            })
        })
    }

    /// A dev refund is instant: the shop is sent the `charge.refunded`
    /// Stripe would send.
    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>> {
        Box::pin(async move {
            let refund_id = format!("re_dev_{}", Uuid::now_v7().simple());
            // Stripe's charge says what was refunded of it in all.
            let refunded = request.previously_refunded + request.amount;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let event = json!({
                "id": format!("evt_dev_{}", Uuid::now_v7().simple()),
                "object": "event",
                "type": "charge.refunded",
                "created": now,
                "livemode": false,
                "data": {"object": {
                    "id": format!("ch_dev_{}", Uuid::now_v7().simple()),
                    "object": "charge",
                    "amount": request.amount_total,
                    "amount_refunded": refunded,
                    "refunded": refunded >= request.amount_total,
                    "payment_intent": request.payment_intent,
                }}
            });
            deliver(&self.http, &self.self_url, &self.webhook_secret, &event).await?;
            Ok(refund_id)
        })
    }

    fn expire_checkout<'a>(&'a self, _checkout_id: &'a str) -> BoxFuture<'a, Result<(), PaymentError>> {
        // The shop's own table is the only record of a dev checkout, and its
        // page pays only a checkout that table says is open.
        Box::pin(async { Ok(()) })
    }

    fn retrieve_checkout<'a>(
        &'a self,
        _checkout_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckoutSessionObject>, PaymentError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The facts of a dev checkout the page turns into an event.
#[derive(Debug, Clone)]
pub struct DevCheckout {
    pub id: String,
    pub upload_session_ref: String,
    pub amount_total: i64,
    pub currency: String,
    pub email: Option<String>,
}

/// The event the dev page sends: `checkout.session.completed` (paid) or
/// `checkout.session.expired` (cancelled), shaped as Stripe shapes them.
pub fn checkout_event(checkout: &DevCheckout, paid: bool, now_unix: i64) -> serde_json::Value {
    let event_type = if paid {
        "checkout.session.completed"
    } else {
        "checkout.session.expired"
    };
    let payment_intent = paid.then(|| format!("pi_dev_{}", Uuid::now_v7().simple()));
    json!({
        "id": format!("evt_dev_{}", Uuid::now_v7().simple()),
        "object": "event",
        "api_version": "2025-06-30.basil",
        "created": now_unix,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
        "data": {"object": {
            "id": checkout.id,
            "object": "checkout.session",
            "mode": "payment",
            "status": if paid { "complete" } else { "expired" },
            "payment_status": if paid { "paid" } else { "unpaid" },
            "payment_intent": payment_intent,
            "client_reference_id": checkout.upload_session_ref,
            "metadata": {"upload_session_id": checkout.upload_session_ref},
            "amount_total": checkout.amount_total,
            "currency": checkout.currency,
            "customer_email": checkout.email,
            "customer_details": {"email": checkout.email},
        }}
    })
}

/// Sends `event` to the shop's own Stripe webhook at `self_url`, signed with
/// `secret` as Stripe would sign it.
pub async fn deliver(
    http: &reqwest::Client,
    self_url: &str,
    secret: &str,
    event: &serde_json::Value,
) -> Result<(), PaymentError> {
    let body = event.to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = super::signature::sign(body.as_bytes(), secret, now);
    let response = http
        .post(format!("{self_url}/api/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .map_err(|e| PaymentError::Unavailable(format!("the shop's webhook is unreachable: {e}")))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(PaymentError::Unavailable(format!(
            "the shop's webhook answered {}",
            response.status()
        )))
    }
}
