//! The wake lock port: one owner per key across every replica, with a TTL so a crashed owner frees it.

use std::time::Duration;

use async_trait::async_trait;

use crate::StoreError;

mod memory;
#[cfg(feature = "redis")]
pub mod redis;

pub use memory::MemoryLock;

#[async_trait]
pub trait WakeLock: Send + Sync + 'static {
    /// Takes `key` for `owner` unless someone else holds it; `Ok(true)` when taken.
    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Extends the TTL if `owner` still holds `key`; `Ok(false)` when the lock was lost.
    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Frees `key` only if `owner` holds it (compare-and-delete); `Ok(false)` otherwise.
    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    fn name(&self) -> &'static str;
}
