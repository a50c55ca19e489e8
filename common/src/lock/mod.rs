//! The wake lock port: one owner per key across every replica, with a TTL so a crashed owner frees it.

use std::time::Duration;

use async_trait::async_trait;

use crate::StoreError;

#[cfg(feature = "contract")]
mod lapsing;
mod memory;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "contract")]
pub use lapsing::LapsingLock;
pub use memory::MemoryLock;

/// Where a lock key's acquisition counter lives (no TTL: it must outlive every holder).
pub fn generation_key(key: &str) -> String {
    format!("{key}:generation")
}

#[async_trait]
pub trait WakeLock: Send + Sync + 'static {
    /// Takes `key` for `owner` unless someone else holds it; `Ok(true)` when taken.
    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// `try_acquire` that also hands out the acquisition's fencing token: above every token this
    /// key gave before and above `floor` (the highest one the caller saw stored, so that a lock
    /// backend that lost its counter still moves forward). `Ok(None)` when someone else holds it.
    async fn try_acquire_fenced(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<Option<u64>, StoreError>;
    /// Extends the TTL if `owner` still holds `key`; `Ok(false)` when the lock was lost.
    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Frees `key` only if `owner` holds it (compare-and-delete); `Ok(false)` otherwise.
    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    fn name(&self) -> &'static str;
}
