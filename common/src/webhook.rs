//! Per-tenant webhook secret tokens: HMAC-SHA256(tenant id) under `WEBHOOK_SECRET`, hex.
//!
//! Hex keeps to the characters Telegram allows in `secret_token` (`A-Z a-z 0-9 _ -`, ≤ 256).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::TenantId;

pub fn secret_token(webhook_secret: &str, tenant: &TenantId) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(webhook_secret.as_bytes()).expect("hmac takes any key");
    mac.update(tenant.as_str().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a received token in constant time.
pub fn verify(webhook_secret: &str, tenant: &TenantId, received: &str) -> bool {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(webhook_secret.as_bytes()).expect("hmac takes any key");
    mac.update(tenant.as_str().as_bytes());
    match hex::decode(received) {
        Ok(bytes) => mac.verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Constant-time equality for bearer tokens.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    }
}
