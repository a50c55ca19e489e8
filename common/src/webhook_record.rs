//! What the router last registered as a tenant's webhook: Telegram's `getWebhookInfo` never shows
//! the secret token, so this record is how `GET /admin/webhook/{id}` (and `ztm migrate check`) tell
//! a webhook registered with the current `WEBHOOK_SECRET` from one the Go platform set without any.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{StoreError, TenantId};

/// One registration: the URL given to `setWebhook` and a fingerprint of the secret token sent with
/// it ([`crate::webhook::secret_fingerprint`]; never the token itself), `None` when none was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub url: String,
    pub secret_fingerprint: Option<String>,
    /// Unix time of the registration.
    pub registered_at: i64,
}

/// Redis key of a tenant's record (shared by every router replica).
pub fn record_key(id: &TenantId) -> String {
    format!("router:webhook:{id}")
}

#[async_trait]
pub trait WebhookRecords: Send + Sync + 'static {
    async fn get(&self, id: &TenantId) -> Result<Option<WebhookRecord>, StoreError>;
    async fn put(&self, id: &TenantId, record: &WebhookRecord) -> Result<(), StoreError>;
    async fn remove(&self, id: &TenantId) -> Result<(), StoreError>;
}

/// In-process records for a single replica.
#[derive(Default)]
pub struct MemoryWebhookRecords {
    records: Mutex<HashMap<TenantId, WebhookRecord>>,
}

#[async_trait]
impl WebhookRecords for MemoryWebhookRecords {
    async fn get(&self, id: &TenantId) -> Result<Option<WebhookRecord>, StoreError> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(records.get(id).cloned())
    }

    async fn put(&self, id: &TenantId, record: &WebhookRecord) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.insert(id.clone(), record.clone());
        Ok(())
    }

    async fn remove(&self, id: &TenantId) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(id);
        Ok(())
    }
}

#[cfg(feature = "redis")]
use {crate::redis_pool, redis::AsyncTypedCommands};

/// `router:webhook:{id}` = the record as JSON, no TTL (it describes Telegram's state until changed).
#[cfg(feature = "redis")]
pub struct RedisWebhookRecords {
    pool: crate::redis_pool::Pool,
}

#[cfg(feature = "redis")]
impl RedisWebhookRecords {
    pub fn new(pool: crate::redis_pool::Pool) -> Self {
        RedisWebhookRecords { pool }
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl WebhookRecords for RedisWebhookRecords {
    async fn get(&self, id: &TenantId) -> Result<Option<WebhookRecord>, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let raw = c.get(record_key(id)).await.map_err(redis_pool::err)?;
        // An unreadable record is no record: the report then says the secret is unknown.
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    async fn put(&self, id: &TenantId, record: &WebhookRecord) -> Result<(), StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let json = serde_json::to_string(record)
            .map_err(|e| StoreError::unavailable_in("encoding the webhook record", e))?;
        c.set(record_key(id), json).await.map_err(redis_pool::err)
    }

    async fn remove(&self, id: &TenantId) -> Result<(), StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        c.del(record_key(id))
            .await
            .map(drop)
            .map_err(redis_pool::err)
    }
}
