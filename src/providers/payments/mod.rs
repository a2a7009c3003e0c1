//! Payments: a Checkout session for an upload session, what became of it,
//! and refunds.
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

use crate::domain::payments::LineItem;
use event::CheckoutSessionObject;

/// What a checkout charges for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub upload_session_id: Uuid,
    /// The public form of the upload session id (`ups_…`).
    pub upload_session_ref: String,
    /// How many photos it sells (metadata for people reading the dashboard).
    pub quantity: u32,
    /// One line per kind of work, as the quote says.
    pub line_items: Vec<LineItem>,
    pub currency: String,
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
    /// Whether the provider runs it in live mode (real money).
    pub livemode: bool,
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

    /// Closes an open checkout so it can no longer be paid. An error that
    /// is `Rejected` means the provider would not: the checkout may be
    /// paid already (ask [`PaymentProvider::retrieve_checkout`]).
    fn expire_checkout<'a>(&'a self, checkout_id: &'a str) -> BoxFuture<'a, Result<(), PaymentError>>;

    /// The checkout as the provider sees it now, for when its webhook is
    /// late or lost; `None` when the provider keeps no record of its own
    /// (the dev checkout: the shop's table is the only one).
    fn retrieve_checkout<'a>(
        &'a self,
        checkout_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckoutSessionObject>, PaymentError>>;

    /// Refunds part of a payment; returns the provider's refund id. The
    /// same idempotency key refunds once, however often it is called.
    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>>;
}

/// A refund the shop decided on (a `refunds` row).
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub payment_intent: String,
    /// Minor units to give back.
    pub amount: i64,
    /// The amount the payment was for, and what was refunded of it before
    /// this refund (for the events that describe it).
    pub amount_total: i64,
    pub previously_refunded: i64,
    /// The order (`ord_…`) or checkout (`cs_…`) the payment was for.
    pub reference: String,
    /// Why, as the `refunds.reason` column says it.
    pub reason: String,
    /// Same key for the same refund: a retried call refunds once.
    pub idempotency_key: String,
}
