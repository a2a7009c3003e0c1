//! Stripe webhook events, parsed leniently.
//!
//! Payloads grow fields with every API version, so only what the shop needs
//! is read and everything else is ignored; an event type the shop does not
//! handle still parses (and is answered 200).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// The envelope every event shares.
#[derive(Debug, Clone, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// The parts of a Checkout Session the shop reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckoutSessionObject {
    pub id: String,
    /// `open`, `complete` or `expired` (Stripe's session status).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub livemode: Option<bool>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_metadata")]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<Value>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub customer_details: Option<CustomerDetails>,
    #[serde(default)]
    pub customer_email: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CustomerDetails {
    #[serde(default)]
    pub email: Option<String>,
}

/// The parts of a Charge the shop reads (`charge.refunded`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChargeObject {
    #[serde(default)]
    pub payment_intent: Option<Value>,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub amount_refunded: Option<i64>,
    #[serde(default)]
    pub refunded: Option<bool>,
}

impl CheckoutSessionObject {
    /// The upload session this checkout pays for, as the shop wrote it.
    pub fn upload_session_ref(&self) -> Option<&str> {
        self.client_reference_id
            .as_deref()
            .or_else(|| self.metadata.get("upload_session_id").map(String::as_str))
    }

    pub fn is_paid(&self) -> bool {
        matches!(
            self.payment_status.as_deref(),
            Some("paid" | "no_payment_required")
        )
    }

    /// Completed, with the money still on its way (a delayed payment method).
    pub fn is_awaiting_payment(&self) -> bool {
        self.status.as_deref() == Some("complete") && !self.is_paid()
    }

    /// Closed for good without a payment.
    pub fn is_expired(&self) -> bool {
        self.status.as_deref() == Some("expired")
    }

    /// The customer's email: what they typed at checkout, else what was prefilled.
    pub fn email(&self) -> Option<&str> {
        self.customer_details
            .as_ref()
            .and_then(|d| d.email.as_deref())
            .or(self.customer_email.as_deref())
            .filter(|e| !e.trim().is_empty())
    }

    pub fn payment_intent_id(&self) -> Option<String> {
        self.payment_intent.as_ref().and_then(expandable_id)
    }
}

impl ChargeObject {
    pub fn payment_intent_id(&self) -> Option<String> {
        self.payment_intent.as_ref().and_then(expandable_id)
    }
}

/// Stripe sends a related object either as its id or, when expanded, whole.
fn expandable_id(value: &Value) -> Option<String> {
    match value {
        Value::String(id) => Some(id.clone()),
        Value::Object(map) => map.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn lenient_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    let raw = Option::<HashMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            Value::Null => None,
            other => Some((k, other.to_string())),
        })
        .collect())
}

impl StripeEvent {
    pub fn checkout_session(&self) -> Result<CheckoutSessionObject, serde_json::Error> {
        CheckoutSessionObject::deserialize(&self.data.object)
    }

    pub fn charge(&self) -> Result<ChargeObject, serde_json::Error> {
        ChargeObject::deserialize(&self.data.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_unknown_fields_and_newer_versions() {
        let raw = r#"{"id":"evt_1","object":"event","type":"checkout.session.completed",
            "api_version":"2099-01-01.future","created":1,"livemode":false,"brand_new":{"x":1},
            "data":{"object":{"id":"cs_1","object":"checkout.session","client_reference_id":"ups_1",
            "metadata":{"upload_session_id":"ups_1","n":3},"payment_status":"paid",
            "payment_intent":{"id":"pi_1","object":"payment_intent"},"amount_total":1500,
            "currency":"usd","customer_details":{"email":"a@example.com","phone":null},
            "shiny_new_field":[1,2,3]}}}"#;
        let event: StripeEvent = serde_json::from_str(raw).unwrap();
        let cs = event.checkout_session().unwrap();
        assert_eq!(cs.upload_session_ref(), Some("ups_1"));
        assert!(cs.is_paid());
        assert_eq!(cs.payment_intent_id().as_deref(), Some("pi_1"));
        assert_eq!(cs.email(), Some("a@example.com"));
        assert_eq!(cs.metadata.get("n").map(String::as_str), Some("3"));
    }

    #[test]
    fn unhandled_types_still_parse() {
        let raw = r#"{"id":"evt_2","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
        let event: StripeEvent = serde_json::from_str(raw).unwrap();
        assert_eq!(event.event_type, "customer.created");
    }
}
