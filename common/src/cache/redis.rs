//! Redis endpoint cache: `router:endpoint:{id}` with a TTL. STUB: to be implemented (issue 4).

use std::time::Duration;

use async_trait::async_trait;

use super::EndpointCache;
use crate::redis_pool::Pool;
use crate::{StoreError, TenantId};

pub struct RedisCache {
    #[allow(dead_code)]
    pool: Pool,
}

impl RedisCache {
    pub fn new(pool: Pool) -> Self {
        RedisCache { pool }
    }
}

#[async_trait]
impl EndpointCache for RedisCache {
    async fn get(&self, _id: &TenantId) -> Result<Option<String>, StoreError> {
        Err(StoreError::Unavailable(
            "redis cache not implemented".into(),
        ))
    }
    async fn set(&self, _id: &TenantId, _endpoint: &str, _ttl: Duration) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "redis cache not implemented".into(),
        ))
    }
    async fn remove(&self, _id: &TenantId) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "redis cache not implemented".into(),
        ))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "redis cache not implemented".into(),
        ))
    }
    fn name(&self) -> &'static str {
        "redis"
    }
}
