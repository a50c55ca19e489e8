//! The runtime port: where tenant agents run (Kubernetes pods, or local child processes).

use std::time::Duration;

use async_trait::async_trait;
use common::{TenantId, TenantRecord};
use thiserror::Error;

#[cfg(feature = "kube")]
pub mod kubernetes;
pub mod local;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RuntimeError {
    /// The agent could not be started or did not become healthy; the text says why (never a secret).
    #[error("agent start failed: {0}")]
    StartFailed(String),
    /// The agent did not answer its health check before the deadline.
    #[error("agent not ready after {0:?}")]
    Timeout(Duration),
    /// The runtime's backend (Kubernetes API, state store) failed.
    #[error("runtime backend unavailable: {0}")]
    Unavailable(String),
}

/// Where a started agent answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAddress {
    pub pod_name: String,
    /// Host without port.
    pub pod_ip: String,
    /// Set when the port is not the runtime's fixed `AGENT_PORT`.
    pub agent_port: Option<u16>,
}

impl AgentAddress {
    pub fn endpoint(&self, default_port: u16) -> String {
        format!(
            "{}:{}",
            self.pod_ip,
            self.agent_port.unwrap_or(default_port)
        )
    }
}

/// How many agent starts claimed a warm pod and how many started cold, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmPoolClaims {
    pub hits: u64,
    pub misses: u64,
}

/// One agent the runtime knows about, as seen in a single listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub tenant: TenantId,
    pub address: Option<AgentAddress>,
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Starts the tenant's agent, or adopts one that already runs, restoring its state first, and
    /// returns once it answers `GET /health` or fails within `deadline`.
    async fn start(
        &self,
        record: &TenantRecord,
        deadline: Duration,
    ) -> Result<AgentAddress, RuntimeError>;
    /// Stops the agent (SIGTERM / pod delete with grace), so that it saves its state; idempotent.
    async fn stop(&self, tenant: &TenantId) -> Result<(), RuntimeError>;
    /// Waits until a stopped agent is gone, so its last save has landed (a purge deletes the state
    /// only after it). Runtimes whose `stop` waits for the exit need nothing more.
    async fn wait_stopped(
        &self,
        _tenant: &TenantId,
        _timeout: Duration,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Every agent this runtime currently runs, in one listing (the reconciler's view).
    async fn list(&self) -> Result<Vec<AgentInfo>, RuntimeError>;
    /// Removes what the tenant owns besides the agent (PV, PVC, Secret); after `stop`; idempotent.
    async fn remove(&self, tenant: &TenantId) -> Result<(), RuntimeError>;
    /// Reachability of the runtime's backend, for `/readyz`.
    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Warm pool hits and misses, for runtimes that keep a warm pool.
    fn warm_pool_claims(&self) -> Option<WarmPoolClaims> {
        None
    }
    /// Port agents listen on when `AgentAddress::agent_port` is `None`.
    fn agent_port(&self) -> u16;
    fn name(&self) -> &'static str;
}
