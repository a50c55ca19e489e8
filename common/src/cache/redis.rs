//! Redis endpoint cache: `router:endpoint:{id}` = `host:port` with a TTL, shared by every replica.

use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncTypedCommands, SetExpiry, SetOptions};

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
        c.get(endpoint_key(id)).await.map_err(redis_pool::err)
    }

    async fn set(&self, id: &TenantId, endpoint: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let expiry = SetOptions::default().with_expiration(SetExpiry::PX(redis_pool::px(ttl)));
        c.set_options(endpoint_key(id), endpoint, expiry)
            .await
            .map(drop)
            .map_err(redis_pool::err)
    }

    async fn remove(&self, id: &TenantId) -> Result<(), StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        c.del(endpoint_key(id))
            .await
            .map(drop)
            .map_err(redis_pool::err)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis_pool::ping(&self.pool).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
