//! Per-tenant webhook secret tokens: HMAC-SHA256(tenant id) under `WEBHOOK_SECRET`, hex.
//!
//! Hex keeps to the characters Telegram allows in `secret_token` (`A-Z a-z 0-9 _ -`, ≤ 256).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::TenantId;

pub fn secret_token(webhook_secret: &str, tenant: &TenantId) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(webhook_secret.as_bytes()).expect("hmac takes any key");
    mac.update(tenant.as_str().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A short, one-way fingerprint of the tenant's secret token, kept in the router's registration
/// record so that a changed `WEBHOOK_SECRET` shows as a stale registration without storing the token.
pub fn secret_fingerprint(webhook_secret: &str, tenant: &TenantId) -> String {
    let digest = Sha256::digest(format!(
        "fingerprint:{}",
        secret_token(webhook_secret, tenant)
    ));
    hex::encode(&digest[..8])
}

/// Checks a received token in constant time (no early return on a wrong length or bad hex).
pub fn verify(webhook_secret: &str, tenant: &TenantId, received: &str) -> bool {
    constant_time_eq(
        secret_token(webhook_secret, tenant).as_bytes(),
        received.as_bytes(),
    )
}

/// Constant-time equality for bearer tokens and secret tokens that leaks neither content nor length:
/// both sides are hashed to 32 bytes first, and the digests compared with `subtle`.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_hex_and_verifies() {
        let id = TenantId::parse("bob").unwrap();
        let t = secret_token("s3cret", &id);
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(verify("s3cret", &id, &t));
        assert!(!verify("other", &id, &t));
        assert!(!verify("s3cret", &TenantId::parse("alice").unwrap(), &t));
        assert!(!verify("s3cret", &id, "zz"));
        assert!(!verify("s3cret", &id, ""));
        assert!(!verify("s3cret", &id, &t.to_uppercase()));
    }

    #[test]
    fn constant_time_eq_compares_content_of_any_length() {
        assert!(constant_time_eq(b"tok", b"tok"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"tok", b"tok2"));
        assert!(!constant_time_eq(b"tok", b""));
        assert!(!constant_time_eq(b"tok", b"tak"));
    }
}
