//! Payments: a Checkout session for an upload session, and refunds.
//!
//! `stripe` talks to Stripe's API (async-stripe, base URL from
//! `stripe.api_base`); `dev` is the shop's own checkout page, whose Pay button
//! sends a signed Stripe event to the shop's own webhook, so fulfilment runs
//! the same code either way.

pub mod dev;
pub mod event;
pub mod signature;
pub mod stripe;

use futures::future::BoxFuture;
use time::OffsetDateTime;
use uuid::Uuid;

/// What a checkout charges for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub upload_session_id: Uuid,
    /// The public form of the upload session id (`ups_…`).
    pub upload_session_ref: String,
    pub quantity: u32,
    pub unit_amount: i64,
    pub currency: String,
    pub product_name: String,
    pub email: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: OffsetDateTime,
    /// Same key for the same attempt: a retried call returns the same session.
    pub idempotency_key: String,
}

/// A checkout the customer can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCheckout {
    pub id: String,
    pub url: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused the request; retrying the same request will not help.
    #[error("the payment provider refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The provider could not be reached or failed; a retry may succeed.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

/// A payment provider (config `payments.provider`).
pub trait PaymentProvider: Send + Sync {
    /// `stripe` or `dev`, as stored with each checkout.
    fn name(&self) -> &'static str;

    fn create_checkout<'a>(
        &'a self,
        request: &'a CheckoutRequest,
    ) -> BoxFuture<'a, Result<CreatedCheckout, PaymentError>>;

    /// Closes an open checkout so it can no longer be paid (best effort: the
    /// customer started a new one or changed the photos).
    fn expire_checkout<'a>(&'a self, checkout_id: &'a str) -> BoxFuture<'a, Result<(), PaymentError>>;

    /// Refunds (part of) a payment; returns the provider's refund id. The
    /// order itself changes when the provider's `charge.refunded` arrives.
    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>>;
}

/// A refund an operator asked for.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub payment_intent: String,
    /// Minor units; the whole payment when `None`.
    pub amount: Option<i64>,
    /// The amount the payment was for (for events that describe the refund).
    pub amount_total: i64,
    pub order_ref: String,
    /// Same key for the same refund: a retried call refunds once.
    pub idempotency_key: String,
}
