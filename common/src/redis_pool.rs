//! Redis connection pool shared by the Redis adapters (`REDIS_ADDR` is `host:port` or a `redis://` URL).

use crate::StoreError;

pub use deadpool_redis::Pool;

/// Builds a pool; connections are made lazily, so this succeeds while Redis is down.
pub fn pool(addr: &str) -> Result<Pool, StoreError> {
    let url = if addr.starts_with("redis://") || addr.starts_with("rediss://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    };
    deadpool_redis::Config::from_url(url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .map_err(StoreError::unavailable)
}
