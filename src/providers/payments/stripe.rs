//! Stripe Checkout through async-stripe.
//!
//! The request is built by async-stripe's typed builder; the answer is read
//! into a small struct of the three fields the shop needs, so a response that
//! grows (or a faithful fake that sends only the documented fields) never
//! breaks checkout.

use std::collections::HashMap;

use futures::future::BoxFuture;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, ExpireCheckoutSession, ProductData, RetrieveCheckoutSession,
};
use time::OffsetDateTime;

use stripe_client_core::{RequestBuilder, StripeMethod};

use super::{
    CheckoutRequest, CreatedCheckout, PaymentError, PaymentProvider, RefundRequest,
    event::CheckoutSessionObject,
};
use crate::config::StripeSettings;

pub struct StripePayments {
    client: stripe::Client,
    timeout: std::time::Duration,
    /// What the secret key says about the mode, for answers that do not.
    live_key: bool,
}

/// The fields of a Checkout Session the shop keeps.
#[derive(miniserde::Deserialize)]
struct SessionCreated {
    id: String,
    url: Option<String>,
    expires_at: Option<i64>,
    livemode: Option<bool>,
}

impl StripePayments {
    pub fn new(settings: &StripeSettings) -> Result<Self, PaymentError> {
        let mut base = settings.api_base.trim().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = stripe::ClientBuilder::new(settings.secret_key.expose())
            .url(base)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| PaymentError::Unavailable(e.to_string()))?;
        let key = settings.secret_key.expose();
        Ok(Self {
            client,
            timeout: settings.timeout,
            live_key: key.starts_with("sk_live_") || key.starts_with("rk_live_"),
        })
    }

    fn session_params(request: &CheckoutRequest) -> Result<CreateCheckoutSession, PaymentError> {
        let currency =
            request
                .currency
                .parse::<stripe_types::Currency>()
                .map_err(|_| PaymentError::Rejected {
                    status: 400,
                    message: format!("unknown currency {:?}", request.currency),
                })?;
        let items: Vec<CreateCheckoutSessionLineItems> = request
            .line_items
            .iter()
            .map(|line| {
                let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency.clone());
                price.unit_amount = Some(line.unit_amount);
                price.product_data = Some(ProductData::new(line.name.clone()));
                let mut item = CreateCheckoutSessionLineItems::new();
                item.price_data = Some(price);
                item.quantity = Some(u64::from(line.quantity));
                item
            })
            .collect();

        let metadata = HashMap::from([
            ("upload_session_id".to_owned(), request.upload_session_ref.clone()),
            ("photo_count".to_owned(), request.quantity.to_string()),
        ]);
        let mut intent = CreateCheckoutSessionPaymentIntentData::new();
        intent.metadata = Some(HashMap::from([(
            "upload_session_id".to_owned(),
            request.upload_session_ref.clone(),
        )]));

        let mut params = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Payment)
            .line_items(items)
            .success_url(request.success_url.clone())
            .cancel_url(request.cancel_url.clone())
            .client_reference_id(request.upload_session_ref.clone())
            .metadata(metadata)
            .payment_intent_data(intent)
            .expires_at(request.expires_at.unix_timestamp());
        if let Some(email) = &request.email {
            params = params.customer_email(email.clone());
        }
        Ok(params)
    }
}

fn classify(err: StripeError) -> PaymentError {
    match err {
        StripeError::Stripe(api, status)
            if (400..500).contains(&status) && status != 429 && status != 409 =>
        {
            PaymentError::Rejected {
                status,
                message: api.message.clone().unwrap_or_else(|| format!("{api:?}")),
            }
        }
        other => PaymentError::Unavailable(other.to_string()),
    }
}

impl PaymentProvider for StripePayments {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn create_checkout<'a>(
        &'a self,
        request: &'a CheckoutRequest,
    ) -> BoxFuture<'a, Result<CreatedCheckout, PaymentError>> {
        Box::pin(async move {
            let key = IdempotencyKey::new(&request.idempotency_key).map_err(|e| PaymentError::Rejected {
                status: 400,
                message: e.to_string(),
            })?;
            let created: SessionCreated = Self::session_params(request)?
                .build()
                .customize::<SessionCreated>()
                .request_strategy(RequestStrategy::Idempotent(key))
                .timeout(self.timeout)
                .send(&self.client)
                .await
                .map_err(classify)?;
            let url = created.url.ok_or_else(|| {
                PaymentError::Unavailable("Stripe answered a checkout session without a url".into())
            })?;
            let expires_at = created
                .expires_at
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .unwrap_or(request.expires_at);
            Ok(CreatedCheckout {
                id: created.id,
                url,
                expires_at,
                livemode: created.livemode.unwrap_or(self.live_key),
            })
        })
    }

    fn refund<'a>(&'a self, request: &'a RefundRequest) -> BoxFuture<'a, Result<String, PaymentError>> {
        Box::pin(async move {
            let key = IdempotencyKey::new(&request.idempotency_key).map_err(|e| PaymentError::Rejected {
                status: 400,
                message: e.to_string(),
            })?;
            let reference = if request.reference.starts_with("ord_") {
                "order_id"
            } else {
                "checkout_session_id"
            };
            let params = RefundParams {
                payment_intent: &request.payment_intent,
                amount: request.amount,
                metadata: HashMap::from([
                    (reference, request.reference.as_str()),
                    ("reason", request.reason.as_str()),
                ]),
            };
            let created: RefundCreated = RequestBuilder::new(StripeMethod::Post, "/refunds")
                .form(&params)
                .customize::<RefundCreated>()
                .request_strategy(RequestStrategy::Idempotent(key))
                .timeout(self.timeout)
                .send(&self.client)
                .await
                .map_err(classify)?;
            Ok(created.id)
        })
    }

    fn retrieve_checkout<'a>(
        &'a self,
        checkout_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CheckoutSessionObject>, PaymentError>> {
        Box::pin(async move {
            // Read as plain JSON, then leniently, as webhook events are.
            let raw: miniserde::json::Value = RetrieveCheckoutSession::new(checkout_id)
                .build()
                .customize::<miniserde::json::Value>()
                .timeout(self.timeout)
                .send(&self.client)
                .await
                .map_err(classify)?;
            serde_json::from_str(&miniserde::json::to_string(&raw))
                .map(Some)
                .map_err(|e| PaymentError::Unavailable(format!("Stripe answered an unreadable session: {e}")))
        })
    }

    fn expire_checkout<'a>(&'a self, checkout_id: &'a str) -> BoxFuture<'a, Result<(), PaymentError>> {
        Box::pin(async move {
            ExpireCheckoutSession::new(checkout_id)
                .build()
                .customize::<Ignored>()
                .timeout(self.timeout)
                .send(&self.client)
                .await
                .map(drop)
                .map_err(classify)
        })
    }
}

/// `POST /v1/refunds` parameters.
#[derive(serde::Serialize)]
struct RefundParams<'a> {
    payment_intent: &'a str,
    amount: i64,
    metadata: HashMap<&'a str, &'a str>,
}

/// The part of a Refund the shop keeps.
#[derive(miniserde::Deserialize)]
struct RefundCreated {
    id: String,
}

/// An answer whose content the shop does not need.
#[derive(miniserde::Deserialize)]
struct Ignored {}
