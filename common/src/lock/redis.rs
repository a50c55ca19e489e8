//! Redis wake lock: `SET key owner NX PX ttl`, renewal and release by Lua compare-and-set, so a
//! replica never extends or frees a lock that expired and was taken by another.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncTypedCommands, ExistenceCheck, Script, SetExpiry, SetOptions};

use super::WakeLock;
use crate::redis_pool::{self, Pool};
use crate::StoreError;

/// `SET KEYS[1] ARGV[1] NX PX ARGV[2]`; when taken, bumps the counter `KEYS[2]` past the floor
/// `ARGV[3]` and returns it (the fencing token), else 0. Atomic: tokens follow acquisition order.
static ACQUIRE_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end \
         local g = redis.call('incr', KEYS[2]) \
         local floor = tonumber(ARGV[3]) \
         if g <= floor then g = floor + 1; redis.call('set', KEYS[2], g) end \
         return g",
    )
});

/// Extends `KEYS[1]` by `ARGV[2]` ms if it still holds the owner token `ARGV[1]`.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then \
           return redis.call('pexpire', KEYS[1], ARGV[2]) \
         else return 0 end",
    )
});

/// Deletes `KEYS[1]` if it still holds the owner token `ARGV[1]`.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then \
           return redis.call('del', KEYS[1]) \
         else return 0 end",
    )
});

pub struct RedisLock {
    pool: Pool,
}

impl RedisLock {
    pub fn new(pool: Pool) -> Self {
        RedisLock { pool }
    }
}

#[async_trait]
impl WakeLock for RedisLock {
    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(redis_pool::px(ttl)));
        let set = c
            .set_options(key, owner, options)
            .await
            .map_err(redis_pool::err)?;
        Ok(set.is_some())
    }

    async fn try_acquire_fenced(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let g: u64 = ACQUIRE_FENCED
            .key(key)
            .key(super::generation_key(key))
            .arg(owner)
            .arg(redis_pool::px(ttl))
            .arg(floor)
            .invoke_async(&mut c)
            .await
            .map_err(redis_pool::err)?;
        Ok((g > 0).then_some(g))
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let n: i64 = RENEW
            .key(key)
            .arg(owner)
            .arg(redis_pool::px(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(redis_pool::err)?;
        Ok(n == 1)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let n: i64 = RELEASE
            .key(key)
            .arg(owner)
            .invoke_async(&mut c)
            .await
            .map_err(redis_pool::err)?;
        Ok(n == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis_pool::ping(&self.pool).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
