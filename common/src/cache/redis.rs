//! Redis endpoint cache: `router:endpoint:{id}` = `host:port` with a TTL, shared by every replica.

use std::time::Duration;

use async_trait::async_trait;

use super::EndpointCache;
use crate::redis_pool::{self, Pool};
use crate::{endpoint_key, StoreError, TenantId};

pub struct RedisCache {
    pool: Pool,
}

impl RedisCache {
    pub fn new(pool: Pool) -> Self {
        RedisCache { pool }
    }
}

#[async_trait]
impl EndpointCache for RedisCache {
    async fn get(&self, id: &TenantId) -> Result<Option<String>, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        redis::cmd("GET")
            .arg(endpoint_key(id))
            .query_async(&mut c)
            .await
            .map_err(redis_pool::err)
    }

    async fn set(&self, id: &TenantId, endpoint: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        redis::cmd("SET")
            .arg(endpoint_key(id))
            .arg(endpoint)
            .arg("PX")
            .arg(redis_pool::px(ttl))
            .query_async::<()>(&mut c)
            .await
            .map_err(redis_pool::err)
    }

    async fn remove(&self, id: &TenantId) -> Result<(), StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        redis::cmd("DEL")
            .arg(endpoint_key(id))
            .query_async::<()>(&mut c)
            .await
            .map_err(redis_pool::err)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis_pool::ping(&self.pool).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
