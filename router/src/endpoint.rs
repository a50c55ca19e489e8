//! Where a tenant's agent answers, as the router finds it: the endpoint cache, kept fresh while the
//! agent serves, else a wake through the orchestrator. One resolver for `/chat` and for delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cache::EndpointCache;
use common::wire::Endpoint;
use common::TenantId;

use crate::metrics::{self, Metrics};
use crate::orchestrator_client::{OrchestratorClient, OrchestratorError};

/// Tenants whose last write is remembered before the oldest are forgotten (a forgotten one costs
/// one extra cache write).
const MAX_REMEMBERED: usize = 4096;

pub struct Endpoints {
    cache: Arc<dyn EndpointCache>,
    orch: Arc<OrchestratorClient>,
    metrics: Arc<Metrics>,
    /// `ENDPOINT_CACHE_TTL_S`.
    ttl: Duration,
    /// When this replica last wrote each tenant's entry: a busy tenant costs one cache write per
    /// half TTL, and its entry never expires while it is being talked to.
    written: Mutex<HashMap<TenantId, Instant>>,
}

impl Endpoints {
    pub fn new(
        cache: Arc<dyn EndpointCache>,
        orch: Arc<OrchestratorClient>,
        metrics: Arc<Metrics>,
        ttl: Duration,
    ) -> Self {
        Endpoints {
            cache,
            orch,
            metrics,
            ttl,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// The orchestrator these endpoints come from.
    pub fn orchestrator(&self) -> &Arc<OrchestratorClient> {
        &self.orch
    }

    /// The cached endpoint, counted as a hit, a miss or an error; `None`: the agent must be woken
    /// (or found running) by the orchestrator.
    pub async fn cached(&self, tenant: &TenantId) -> Option<Endpoint> {
        match self.cache.get(tenant).await {
            Ok(Some(value)) => match Endpoint::try_from(value) {
                Ok(ep) => {
                    self.metrics.cache.inc(metrics::CacheLookup::hit);
                    Some(ep)
                }
                Err(e) => {
                    self.metrics.cache.inc(metrics::CacheLookup::error);
                    tracing::warn!(tenant = %tenant, error = %e, "unreadable endpoint cache entry, waking");
                    None
                }
            },
            Ok(None) => {
                self.metrics.cache.inc(metrics::CacheLookup::miss);
                None
            }
            Err(e) => {
                self.metrics.cache.inc(metrics::CacheLookup::error);
                tracing::warn!(tenant = %tenant, error = %e, "endpoint cache unavailable, waking");
                None
            }
        }
    }

    /// The cached endpoint, else a wake (`/chat`, which retries nothing itself).
    pub async fn resolve(&self, tenant: &TenantId) -> Result<Endpoint, OrchestratorError> {
        match self.cached(tenant).await {
            Some(ep) => Ok(ep),
            None => self.wake(tenant).await,
        }
    }

    /// Asks the orchestrator to wake the agent (or confirm it runs), caches the endpoint it
    /// answers, and counts the outcome in `router_wakes_total`.
    pub async fn wake(&self, tenant: &TenantId) -> Result<Endpoint, OrchestratorError> {
        let result = self.orch.wake(tenant).await;
        let outcome = match &result {
            Ok(_) => metrics::Wake::ok,
            Err(OrchestratorError::NotFound) => metrics::Wake::not_found,
            Err(OrchestratorError::Suspended) => metrics::Wake::suspended,
            Err(e) if e.is_outage() => metrics::Wake::unavailable,
            Err(_) => metrics::Wake::failed,
        };
        self.metrics.wakes.inc(outcome);
        if let Ok(ep) = &result {
            self.write(tenant, ep).await;
        }
        result
    }

    /// A forward to `endpoint` succeeded: the agent serves there, so its entry is written again
    /// once half its TTL has passed since the last write (by this replica). Without it, a busy
    /// chat's entry expired every TTL and the next message was announced as a wake.
    pub async fn served(&self, tenant: &TenantId, endpoint: &Endpoint) {
        let due = {
            let written = self.lock();
            written
                .get(tenant)
                .is_none_or(|at| at.elapsed() >= self.ttl / 2)
        };
        if due {
            self.write(tenant, endpoint).await;
        }
    }

    /// Nothing (or another tenant's agent) answered at `endpoint`: forget it, and the agent
    /// credential too (a refused one may be ours that is stale), so the next try wakes again.
    pub async fn stale(&self, tenant: &TenantId, endpoint: &Endpoint, reason: &str) {
        tracing::warn!(tenant = %tenant, endpoint = %endpoint, error = %reason,
            "forward to pod failed, invalidating cache");
        self.orch.forget_agent_token(tenant);
        self.lock().remove(tenant);
        if let Err(e) = self.cache.remove(tenant).await {
            tracing::warn!(tenant = %tenant, error = %e, "endpoint cache remove failed");
        }
        self.metrics.retries.inc(metrics::Retry::reconnect);
    }

    /// Writes the entry (the one place an endpoint becomes the cache's `host:port` string).
    async fn write(&self, tenant: &TenantId, endpoint: &Endpoint) {
        match self
            .cache
            .set(tenant, &endpoint.to_string(), self.ttl)
            .await
        {
            Ok(()) => {
                let mut written = self.lock();
                if written.len() >= MAX_REMEMBERED {
                    let ttl = self.ttl;
                    written.retain(|_, at| at.elapsed() < ttl);
                }
                written.insert(tenant.clone(), Instant::now());
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "endpoint cache set failed")
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Instant>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::cache::MemoryCache;

    fn endpoints(cache: Arc<MemoryCache>, ttl: Duration) -> Endpoints {
        let orch = Arc::new(OrchestratorClient::new(
            "http://127.0.0.1:9",
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        Endpoints::new(cache, orch, Arc::new(Metrics::default()), ttl)
    }

    #[tokio::test]
    async fn an_agent_that_keeps_serving_keeps_its_cache_entry() {
        let ttl = Duration::from_secs(1);
        let cache = Arc::new(MemoryCache::new());
        let e = endpoints(cache.clone(), ttl);
        let t = TenantId::parse("busy").unwrap();
        let ep = Endpoint::new("127.0.0.1", 4000);
        e.write(&t, &ep).await;
        // Forwards every 200 ms for three TTLs: the entry never lapses.
        let until = Instant::now() + ttl * 3;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                e.cached(&t).await.as_ref(),
                Some(&ep),
                "the entry of an agent that serves stays cached"
            );
            e.served(&t, &ep).await;
        }
        // Once nobody talks to it, it expires as before.
        let deadline = Instant::now() + ttl * 3;
        while e.cached(&t).await.is_some() {
            assert!(Instant::now() < deadline, "the idle entry never expired");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    #[tokio::test]
    async fn a_stale_endpoint_is_forgotten_and_written_again_on_the_next_success() {
        let cache = Arc::new(MemoryCache::new());
        let e = endpoints(cache.clone(), Duration::from_secs(60));
        let t = TenantId::parse("moved").unwrap();
        e.write(&t, &Endpoint::new("127.0.0.1", 4000)).await;
        e.stale(&t, &Endpoint::new("127.0.0.1", 4000), "connection refused")
            .await;
        assert_eq!(e.cached(&t).await, None);
        e.served(&t, &Endpoint::new("127.0.0.1", 4001)).await;
        assert_eq!(e.cached(&t).await, Some(Endpoint::new("127.0.0.1", 4001)));
        assert_eq!(
            cache.get(&t).await.unwrap().as_deref(),
            Some("127.0.0.1:4001"),
            "written as host:port"
        );
    }

    #[tokio::test]
    async fn an_unreadable_cache_entry_is_no_endpoint() {
        let cache = Arc::new(MemoryCache::new());
        let e = endpoints(cache.clone(), Duration::from_secs(60));
        let t = TenantId::parse("garbled").unwrap();
        for bad in ["", "10.1.2.3:0", "no-port"] {
            cache.set(&t, bad, Duration::from_secs(60)).await.unwrap();
            assert_eq!(e.cached(&t).await, None, "{bad:?}");
        }
        assert_eq!(e.metrics.cache.get(metrics::CacheLookup::error), 3);
    }
}
