//! Replicate's webhook signature (Standard Webhooks): HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the base64 secret
//! after its `whsec_` prefix, sent base64-encoded as space-separated
//! `v1,<signature>` values; timestamps older or newer than the tolerance are
//! refused. Verified over the raw bytes before any parsing.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSignatureError {
    #[error("the webhook-id, webhook-timestamp or webhook-signature header is missing")]
    Missing,
    #[error("the webhook secret is not a whsec_ base64 key")]
    BadSecret,
    #[error("the webhook timestamp is malformed or outside the tolerance")]
    Stale,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

fn key(secret: &str) -> Result<Vec<u8>, WebhookSignatureError> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(encoded).map_err(|_| WebhookSignatureError::BadSecret)
}

fn expected(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Result<Vec<u8>, WebhookSignatureError> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| WebhookSignatureError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Checks one delivery.
pub fn verify(
    secret: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), WebhookSignatureError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(WebhookSignatureError::Missing);
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookSignatureError::Stale)?;
    if (now_unix - sent).unsigned_abs() > tolerance.as_secs() {
        return Err(WebhookSignatureError::Stale);
    }
    let expected = expected(&key(secret)?, id, timestamp.trim(), body)?;
    let matched = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .fold(false, |found, sig| {
            found | bool::from(sig.as_slice().ct_eq(&expected))
        });
    if matched {
        Ok(())
    } else {
        Err(WebhookSignatureError::Mismatch)
    }
}

/// The `webhook-signature` header Replicate would send.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, WebhookSignatureError> {
    let sig = expected(&key(secret)?, id, &timestamp.to_string(), body)?;
    Ok(format!("v1,{}", B64.encode(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn accepts_its_own_signature_among_others() {
        let sig = sign(SECRET, "msg_1", 1_700_000_000, b"{}").unwrap();
        let header = format!("v1,bm9wZQ== {sig}");
        assert_eq!(
            verify(
                SECRET,
                Some("msg_1"),
                Some("1700000000"),
                Some(&header),
                b"{}",
                TOL,
                1_700_000_010
            ),
            Ok(())
        );
    }

    /// The Standard Webhooks specification's own example.
    #[test]
    fn matches_the_specification_example() {
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            expected
        );
        let ok = verify(
            SECRET,
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some(expected),
            body,
            TOL,
            1614265330,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn refuses_tampering_staleness_and_missing_headers() {
        let sig = sign(SECRET, "msg_1", 1_700_000_000, b"{}").unwrap();
        let check = |id, ts, body: &[u8], now| verify(SECRET, Some(id), Some(ts), Some(&sig), body, TOL, now);
        assert_eq!(
            check("msg_1", "1700000000", b"{\"x\":1}", 1_700_000_000),
            Err(WebhookSignatureError::Mismatch)
        );
        assert_eq!(
            check("msg_2", "1700000000", b"{}", 1_700_000_000),
            Err(WebhookSignatureError::Mismatch)
        );
        assert_eq!(
            check("msg_1", "1700000000", b"{}", 1_700_000_301),
            Err(WebhookSignatureError::Stale)
        );
        assert_eq!(
            check("msg_1", "soon", b"{}", 1_700_000_000),
            Err(WebhookSignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, None, Some("1"), Some(&sig), b"{}", TOL, 1),
            Err(WebhookSignatureError::Missing)
        );
    }
}
