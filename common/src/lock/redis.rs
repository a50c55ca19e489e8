//! Redis wake lock: `SET key owner NX PX ttl`, renewal and release by Lua compare-and-set.
//! STUB: to be implemented (issue 4).

use std::time::Duration;

use async_trait::async_trait;

use super::WakeLock;
use crate::redis_pool::Pool;
use crate::StoreError;

pub struct RedisLock {
    #[allow(dead_code)]
    pool: Pool,
}

impl RedisLock {
    pub fn new(pool: Pool) -> Self {
        RedisLock { pool }
    }
}

#[async_trait]
impl WakeLock for RedisLock {
    async fn try_acquire(
        &self,
        _key: &str,
        _owner: &str,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("redis lock not implemented".into()))
    }
    async fn renew(&self, _key: &str, _owner: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("redis lock not implemented".into()))
    }
    async fn release(&self, _key: &str, _owner: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("redis lock not implemented".into()))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("redis lock not implemented".into()))
    }
    fn name(&self) -> &'static str {
        "redis"
    }
}
