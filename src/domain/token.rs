//! Bearer secrets: order access tokens and download tokens.
//!
//! Both are 256 bits, shown to the customer and stored only as SHA-256 hashes.
//! An order token is derived from the server's secret key and the order id
//! (HMAC-SHA256), so the success page and the emails can hand it out again
//! without the plain token ever being written down; a download token is drawn
//! at random and shown once.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The order token for `order_id` under `secret_key`.
pub fn order_token(secret_key: &str, order_id: Uuid) -> String {
    // HMAC takes keys of any length, so this cannot fail; fall back to a
    // token nobody can present rather than panic.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()) else {
        return random_token();
    };
    mac.update(b"restoreclick order token v1:");
    mac.update(order_id.as_bytes());
    ENGINE.encode(mac.finalize().into_bytes())
}

/// A fresh random token (download links).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    ENGINE.encode(bytes)
}

/// What the database keeps of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `token` hashes to `stored`, in constant time.
pub fn matches(token: &str, stored: &[u8]) -> bool {
    hash(token).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Order links already emailed must open their order after any
    /// upgrade: the derivation is pinned to a vector computed outside the
    /// shop (HMAC-SHA256 over the label and the id's bytes, base64url).
    #[test]
    fn an_emailed_order_token_stays_valid_across_releases() {
        let id = Uuid::parse_str("0193a5b2-7c1e-7d3a-9f00-5e6d7c8b9a01").unwrap();
        assert_eq!(
            order_token("an-operators-key-0123456789abcdef", id),
            "GtuasPQymLLqh0Akd-Jnd_fOK8dCyBeuc2pVDTotSGY"
        );
    }

    #[test]
    fn order_tokens_are_stable_per_order_and_key() {
        let id = Uuid::from_u128(42);
        let a = order_token("key-one-0123456789", id);
        assert_eq!(a, order_token("key-one-0123456789", id));
        assert_ne!(a, order_token("key-two-0123456789", id));
        assert_ne!(a, order_token("key-one-0123456789", Uuid::from_u128(43)));
        assert_eq!(a.len(), 43, "256 bits in unpadded base64url");
    }

    #[test]
    fn hashes_match_only_their_token() {
        let t = random_token();
        let stored = hash(&t);
        assert!(matches(&t, &stored));
        assert!(!matches("nope", &stored));
        assert_ne!(random_token(), t);
    }
}
