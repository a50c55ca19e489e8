//! Contract test suites: the documented behaviour of each port, run by `platform-tests` against
//! every adapter of that port (embedded and production) so that they cannot drift apart.
//! Each suite expects a fresh, empty store and panics on the first broken rule.

pub mod cache;
pub mod inbox;
pub mod lock;
pub mod registry;
pub mod state;

use std::future::Future;
use std::time::Duration;

use crate::TenantId;

/// Upper bound for a TTL-based expiry to become visible.
pub const EXPIRY_DEADLINE: Duration = Duration::from_secs(5);

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A valid tenant id from a test literal.
pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).expect("valid tenant id")
}
