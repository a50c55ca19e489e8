//! The endpoint cache port: tenant → `host:port` of its running agent, with a TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{StoreError, TenantId};

#[cfg(feature = "redis")]
pub mod redis;

/// How long an endpoint stays cached (Go platform: 5 minutes).
pub const ENDPOINT_TTL: Duration = Duration::from_secs(300);

#[async_trait]
pub trait EndpointCache: Send + Sync + 'static {
    async fn get(&self, id: &TenantId) -> Result<Option<String>, StoreError>;
    async fn set(&self, id: &TenantId, endpoint: &str, ttl: Duration) -> Result<(), StoreError>;
    async fn remove(&self, id: &TenantId) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    fn name(&self) -> &'static str;
}

/// In-process cache for a single replica.
#[derive(Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<TenantId, (String, Instant)>>,
}

impl MemoryCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EndpointCache for MemoryCache {
    async fn get(&self, id: &TenantId) -> Result<Option<String>, StoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(id) {
            Some((ep, expires)) if *expires > Instant::now() => Ok(Some(ep.clone())),
            Some(_) => {
                entries.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, id: &TenantId, endpoint: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(id.clone(), (endpoint.to_owned(), Instant::now() + ttl));
        Ok(())
    }

    async fn remove(&self, id: &TenantId) -> Result<(), StoreError> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
