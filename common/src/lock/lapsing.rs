//! A test adapter: one wake lock whose keys all lapse at once on demand (a replica cut off from
//! Redis past the TTL while another takes the lock), shared by the unit and fake-cluster races.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{MemoryLock, WakeLock};
use crate::StoreError;

/// A shared lock whose keys can all lapse at once, as when one replica is cut off from Redis for
/// longer than the TTL and another takes the lock.
#[derive(Default)]
pub struct LapsingLock(Mutex<Arc<MemoryLock>>);

impl LapsingLock {
    /// Forgets every key: each holder loses its lock at its next renewal.
    pub fn lapse(&self) {
        *self.0.lock().unwrap() = Arc::new(MemoryLock::new());
    }

    fn inner(&self) -> Arc<MemoryLock> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl WakeLock for LapsingLock {
    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner().try_acquire(key, owner, ttl).await
    }
    async fn try_acquire_fenced(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.inner()
            .try_acquire_fenced(key, owner, ttl, floor)
            .await
    }
    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner().renew(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        self.inner().release(key, owner).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "lapsing"
    }
}
