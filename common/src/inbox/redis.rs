//! Redis inbox under `router:inbox:`. STUB: to be implemented (issue 4).

use std::time::Duration;

use async_trait::async_trait;

use super::{Appended, Inbox, InboxEntry, InboxStats};
use crate::redis_pool::Pool;
use crate::{StoreError, TenantId};

pub struct RedisInbox {
    #[allow(dead_code)]
    pool: Pool,
}

impl RedisInbox {
    pub fn new(pool: Pool) -> Self {
        RedisInbox { pool }
    }
}

fn todo() -> StoreError {
    StoreError::Unavailable("redis inbox not implemented".into())
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn append(&self, _t: &TenantId, _u: i64, _p: &[u8]) -> Result<Appended, StoreError> {
        Err(todo())
    }
    async fn pending(&self, _t: &TenantId, _l: usize) -> Result<Vec<InboxEntry>, StoreError> {
        Err(todo())
    }
    async fn ack(&self, _t: &TenantId, _e: &str) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        Err(todo())
    }
    async fn claim(&self, _t: &TenantId, _o: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Err(todo())
    }
    async fn renew_claim(
        &self,
        _t: &TenantId,
        _o: &str,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Err(todo())
    }
    async fn release_claim(&self, _t: &TenantId, _o: &str) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn stats(&self) -> Result<InboxStats, StoreError> {
        Err(todo())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(todo())
    }
    fn name(&self) -> &'static str {
        "redis"
    }
}
