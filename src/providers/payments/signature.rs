//! Stripe's webhook signature (`Stripe-Signature: t=…,v1=…[,v1=…]`).
//!
//! Verified over the raw body before any parsing: HMAC-SHA256 keyed with the
//! webhook secret as written (including `whsec_`), over `"{t}.{body}"`, any
//! `v1` may match (several appear while a secret rotates), compared in
//! constant time, and `t` must be within the tolerance of now.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signature timestamp is {age_secs} s away from now, outside the tolerance")]
    Stale { age_secs: i64 },
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks `header` against `body`; returns the signed timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    tolerance: Duration,
    now_unix: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => candidates.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = mac(secret, timestamp, body).finalize().into_bytes();
    let matched = candidates.iter().fold(false, |found, candidate| {
        let ok = hex::decode(candidate)
            .map(|sig| bool::from(sig.as_slice().ct_eq(expected.as_slice())))
            .unwrap_or(false);
        found | ok
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let age = now_unix - timestamp;
    if age.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale { age_secs: age });
    }
    Ok(timestamp)
}

/// The header Stripe would send for `body` at `timestamp`.
pub fn sign(body: &[u8], secret: &str, timestamp: i64) -> String {
    let signature = hex::encode(mac(secret, timestamp, body).finalize().into_bytes());
    format!("t={timestamp},v1={signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn accepts_its_own_signature() {
        let header = sign(b"{}", SECRET, 1_700_000_000);
        assert_eq!(
            verify(Some(&header), b"{}", SECRET, TOL, 1_700_000_100),
            Ok(1_700_000_000)
        );
    }

    #[test]
    fn accepts_any_matching_v1_while_secrets_rotate() {
        let good = sign(b"{}", SECRET, 1_700_000_000);
        let sig = good.split("v1=").nth(1).unwrap();
        let header = format!("t=1700000000,v1={},v1={sig},v0=abc", "00".repeat(32));
        assert!(verify(Some(&header), b"{}", SECRET, TOL, 1_700_000_000).is_ok());
    }

    #[test]
    fn refuses_wrong_secret_tampered_body_stale_time_and_garbage() {
        let header = sign(b"{\"a\":1}", SECRET, 1_700_000_000);
        let now = 1_700_000_000;
        assert_eq!(
            verify(Some(&header), b"{\"a\":1}", "whsec_other", TOL, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), b"{\"a\":2}", SECRET, TOL, now),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(Some(&header), b"{\"a\":1}", SECRET, TOL, now + 301),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(verify(None, b"", SECRET, TOL, now), Err(SignatureError::Missing));
        assert_eq!(
            verify(Some("nonsense"), b"", SECRET, TOL, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("t=1700000000,v1=zz"), b"", SECRET, TOL, now),
            Err(SignatureError::Mismatch)
        );
    }
}
