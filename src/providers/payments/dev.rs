//! The embedded payment provider: a checkout page served by the shop itself.
//!
//! Creating a checkout needs no network; paying on the page makes the shop
//! send itself the event Stripe would send, signed with the webhook secret,
//! through its own public webhook endpoint. Refused in production.

use futures::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use super::{CheckoutRequest, CreatedCheckout, PaymentError, PaymentProvider};

pub struct DevPayments {
    public_url: String,
}

impl DevPayments {
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
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
            })
        })
    }

    fn expire_checkout<'a>(&'a self, _checkout_id: &'a str) -> BoxFuture<'a, Result<(), PaymentError>> {
        // The shop's own table is the only record of a dev checkout.
        Box::pin(async { Ok(()) })
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
