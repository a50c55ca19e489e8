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

/// Reads and writes endpoint values the way the Go platform did too, so Go and new routers can share
/// one Redis during a cut-over: the Go router cached the bare pod IP (`10.1.2.3`) and always forwarded
/// to port 3000.
///
/// A bare IP is read as `ip:agent_port`; an `ip:agent_port` value is written as the bare IP (what a Go
/// router reading it expects), any other port as `host:port`.
pub struct GoEndpointFormat {
    inner: std::sync::Arc<dyn EndpointCache>,
    agent_port: u16,
}

impl GoEndpointFormat {
    pub fn wrap(inner: std::sync::Arc<dyn EndpointCache>, agent_port: u16) -> Self {
        GoEndpointFormat { inner, agent_port }
    }
}

/// `ip:default_port` for a bare IP (IPv6 in brackets), the value itself otherwise.
pub fn endpoint_from_cached(value: &str, default_port: u16) -> String {
    match value.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => format!("{ip}:{default_port}"),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{default_port}"),
        Err(_) => value.to_owned(),
    }
}

/// The bare IP for an `ipv4:default_port` endpoint (the Go router's format), the endpoint otherwise.
pub fn endpoint_to_cached(endpoint: &str, default_port: u16) -> &str {
    match endpoint.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) if a.port() == default_port => {
            endpoint.rsplit_once(':').map_or(endpoint, |(ip, _)| ip)
        }
        _ => endpoint,
    }
}

#[async_trait]
impl EndpointCache for GoEndpointFormat {
    async fn get(&self, id: &TenantId) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .get(id)
            .await?
            .map(|v| endpoint_from_cached(&v, self.agent_port)))
    }

    async fn set(&self, id: &TenantId, endpoint: &str, ttl: Duration) -> Result<(), StoreError> {
        self.inner
            .set(id, endpoint_to_cached(endpoint, self.agent_port), ttl)
            .await
    }

    async fn remove(&self, id: &TenantId) -> Result<(), StoreError> {
        self.inner.remove(id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod go_format_tests {
    use super::*;

    #[test]
    fn a_bare_ip_reads_as_ip_and_agent_port() {
        assert_eq!(endpoint_from_cached("10.1.2.3", 3000), "10.1.2.3:3000");
        assert_eq!(endpoint_from_cached("fd00::5", 3000), "[fd00::5]:3000");
        assert_eq!(endpoint_from_cached("10.1.2.3:4001", 3000), "10.1.2.3:4001");
        assert_eq!(
            endpoint_from_cached("agent.local:3000", 3000),
            "agent.local:3000"
        );
    }

    #[test]
    fn the_agent_port_is_written_the_go_way_other_ports_in_full() {
        assert_eq!(endpoint_to_cached("10.1.2.3:3000", 3000), "10.1.2.3");
        assert_eq!(
            endpoint_to_cached("127.0.0.1:40123", 3000),
            "127.0.0.1:40123"
        );
        assert_eq!(endpoint_to_cached("[fd00::5]:3000", 3000), "[fd00::5]:3000");
        assert_eq!(
            endpoint_to_cached("agent.local:3000", 3000),
            "agent.local:3000"
        );
    }

    #[tokio::test]
    async fn values_round_trip_through_the_wrapper() {
        let inner = std::sync::Arc::new(MemoryCache::new());
        let c = GoEndpointFormat::wrap(inner.clone(), 3000);
        let id = TenantId::parse("alice").unwrap();
        c.set(&id, "10.1.2.3:3000", ENDPOINT_TTL).await.unwrap();
        assert_eq!(inner.get(&id).await.unwrap().as_deref(), Some("10.1.2.3"));
        assert_eq!(c.get(&id).await.unwrap().as_deref(), Some("10.1.2.3:3000"));
    }
}
