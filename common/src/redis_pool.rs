//! Redis connection pool shared by the Redis adapters (`REDIS_ADDR` is `host:port` or a `redis://` URL).

use std::time::Duration;

use deadpool_redis::redis::AsyncConnectionConfig;

use crate::StoreError;

pub use deadpool_redis::{Connection, Pool};

/// Bound on connecting, on one command and on waiting for a pooled connection, so that calls fail
/// fast (`Unavailable`) while Redis is down instead of hanging a request.
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 32;

/// Builds a pool; connections are made lazily, so this succeeds while Redis is down.
pub fn pool(addr: &str) -> Result<Pool, StoreError> {
    let url = if addr.starts_with("redis://") || addr.starts_with("rediss://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    };
    let conn_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let manager = deadpool_redis::Manager::new_with_config(url.as_str(), conn_config)
        .map_err(|e| StoreError::Unavailable(format!("redis address {addr:?}: {e}")))?;
    Pool::builder(manager)
        .max_size(MAX_CONNECTIONS)
        .wait_timeout(Some(TIMEOUT))
        .create_timeout(Some(TIMEOUT))
        .recycle_timeout(Some(TIMEOUT))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(StoreError::unavailable)
}

/// A pooled connection, or `Unavailable` when Redis cannot be reached.
pub async fn conn(pool: &Pool) -> Result<Connection, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
}

/// Maps a command error; Redis errors carry no request arguments, so no secret leaks.
pub fn err(e: deadpool_redis::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// `PING` round trip for `/readyz`.
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    let mut c = conn(pool).await?;
    deadpool_redis::redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .map(drop)
        .map_err(err)
}

/// A TTL as the whole milliseconds `PX` takes (at least 1: Redis rejects 0).
pub fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}
