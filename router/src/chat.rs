//! `POST /chat/{id}`: a plain HTTP channel to a tenant's agent, waking it when needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::cache::{EndpointCache, ENDPOINT_TTL};
use common::TenantId;
use thiserror::Error;

use crate::activity::Activity;
use crate::agent::{AgentClient, ForwardError};
use crate::metrics::Metrics;
use crate::orchestrator_client::{OrchestratorClient, OrchestratorError};

#[derive(Debug, Error)]
pub enum ChatError {
    #[error("tenant not found")]
    UnknownTenant,
    #[error("wake failed: {0}")]
    WakeFailed(String),
    #[error("{0}")]
    AgentFailed(ForwardError),
}

pub struct ChatService {
    pub cache: Arc<dyn EndpointCache>,
    pub orch: Arc<OrchestratorClient>,
    pub agent: AgentClient,
    pub activity: Arc<Activity>,
    pub metrics: Arc<Metrics>,
}

/// A fresh idempotency key: unique across replicas and restarts (a random process prefix) without a
/// `getrandom` call per message.
fn chat_key(tenant: &TenantId) -> String {
    static PROCESS: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{tenant}:chat:{}-{n}", *PROCESS)
}

impl ChatService {
    /// A copy with its own connection pool, for one actix worker: a pooled connection is driven by
    /// the worker that opened it, so a shared pool hands each forward to another thread and back.
    pub fn for_worker(&self) -> ChatService {
        ChatService {
            cache: self.cache.clone(),
            orch: self.orch.clone(),
            agent: self.agent.with_own_pool(),
            activity: self.activity.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Forwards `message` and returns the agent's reply; a stale endpoint costs one re-wake.
    pub async fn chat(&self, tenant: &TenantId, message: &str) -> Result<String, ChatError> {
        let key = chat_key(tenant);
        let mut retried = false;
        loop {
            let endpoint = self.endpoint(tenant).await?;
            let credential = match self.orch.agent_token(tenant).await {
                Ok(t) => t,
                Err(OrchestratorError::NotFound) => return Err(ChatError::UnknownTenant),
                Err(e) => return Err(ChatError::WakeFailed(e.to_string())),
            };
            let (result, took) = self
                .agent
                .forward(&endpoint, tenant, &credential, &key, message)
                .await;
            match result {
                Ok(reply) => {
                    self.metrics.forward_latency.observe(took);
                    self.activity.touch(tenant);
                    return Ok(reply);
                }
                Err(ForwardError::Unreachable(reason)) if !retried => {
                    tracing::warn!(tenant = %tenant, endpoint = %endpoint, error = %reason,
                        "forward to pod failed, invalidating cache");
                    self.orch.forget_agent_token(tenant);
                    if let Err(e) = self.cache.remove(tenant).await {
                        tracing::warn!(tenant = %tenant, error = %e, "endpoint cache remove failed");
                    }
                    self.metrics.retries.inc(&["reconnect"]);
                    retried = true;
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "chat: agent call failed");
                    return Err(ChatError::AgentFailed(e));
                }
            }
        }
    }

    async fn endpoint(&self, tenant: &TenantId) -> Result<String, ChatError> {
        match self.cache.get(tenant).await {
            Ok(Some(ep)) => {
                self.metrics.cache.inc(&["hit"]);
                return Ok(ep);
            }
            Ok(None) => self.metrics.cache.inc(&["miss"]),
            Err(e) => {
                self.metrics.cache.inc(&["error"]);
                tracing::warn!(tenant = %tenant, error = %e, "endpoint cache unavailable, waking");
            }
        }
        match self.orch.wake(tenant).await {
            Ok(ep) => {
                self.metrics.wakes.inc(&["ok"]);
                if let Err(e) = self.cache.set(tenant, &ep, ENDPOINT_TTL).await {
                    tracing::warn!(tenant = %tenant, error = %e, "endpoint cache set failed");
                }
                Ok(ep)
            }
            Err(OrchestratorError::NotFound) => {
                self.metrics.wakes.inc(&["not_found"]);
                Err(ChatError::UnknownTenant)
            }
            Err(e) => {
                self.metrics.wakes.inc(&["failed"]);
                tracing::warn!(tenant = %tenant, error = %e, "wake failed");
                Err(ChatError::WakeFailed(e.to_string()))
            }
        }
    }
}
