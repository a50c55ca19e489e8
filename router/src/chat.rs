//! `POST /chat/{id}`: a plain HTTP channel to a tenant's agent, waking it when needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::wire::Endpoint;
use common::TenantId;
use thiserror::Error;

use crate::activity::Activity;
use crate::agent::{AgentClient, ForwardError};
use crate::endpoint::Endpoints;
use crate::metrics::Metrics;
use crate::orchestrator_client::OrchestratorError;

#[derive(Debug, Error)]
pub enum ChatError {
    #[error("tenant not found")]
    UnknownTenant,
    #[error("wake failed: {0}")]
    WakeFailed(#[source] OrchestratorError),
    #[error(transparent)]
    AgentFailed(ForwardError),
}

pub struct ChatService {
    /// The endpoint cache and wakes, shared by every worker's copy.
    pub endpoints: Arc<Endpoints>,
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
            endpoints: self.endpoints.clone(),
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
            // One after the other, not joined: joined, a storm of 1,000 first messages held twice
            // the connections to the orchestrator (RSS after `make bench` row 4: router 89 MB,
            // orchestrator 84 MB, against 65 and 67 MB) to save 1 ms of a 200 ms wake.
            let endpoint = self.endpoint(tenant).await?;
            let credential = self.credential(tenant).await?;
            let (result, took) = self
                .agent
                .forward(&endpoint, tenant, Some(&credential), &key, message)
                .await;
            match result {
                Ok(reply) => {
                    self.metrics.forward_latency.observe(took);
                    self.activity.touch(tenant);
                    self.endpoints.served(tenant, &endpoint).await;
                    return Ok(reply);
                }
                Err(ForwardError::Unreachable { reason, .. }) if !retried => {
                    self.endpoints.stale(tenant, &endpoint, &reason).await;
                    retried = true;
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "chat: agent call failed");
                    return Err(ChatError::AgentFailed(e));
                }
            }
        }
    }

    async fn credential(&self, tenant: &TenantId) -> Result<common::Secret, ChatError> {
        match self.endpoints.orchestrator().agent_token(tenant).await {
            Ok(t) => Ok(t),
            Err(OrchestratorError::NotFound) => Err(ChatError::UnknownTenant),
            Err(e) => Err(ChatError::WakeFailed(e)),
        }
    }

    async fn endpoint(&self, tenant: &TenantId) -> Result<Endpoint, ChatError> {
        match self.endpoints.resolve(tenant).await {
            Ok(ep) => Ok(ep),
            Err(OrchestratorError::NotFound) => Err(ChatError::UnknownTenant),
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "wake failed");
                Err(ChatError::WakeFailed(e))
            }
        }
    }
}
