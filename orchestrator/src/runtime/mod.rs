//! The runtime port: where tenant agents run (Kubernetes pods, or local child processes).

use std::time::Duration;

use async_trait::async_trait;
use common::agent_config::{AgentConfig, PlatformDefaults};
use common::error::BoxError;
use common::lifecycle::{reason, LastError, TenantEvent};
use common::wire::Endpoint;
use common::{TenantId, TenantRecord};
use thiserror::Error;

#[cfg(feature = "kube")]
pub mod kubernetes;
pub mod local;
pub mod local_logs;

/// What a runtime fails with. The text names the cause (never a secret); the error behind it
/// (an `io::Error`, a `kube::Error` that is not the API server's answer) is the `source`.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The agent could not be started or did not become healthy; the text says why (never a secret).
    #[error("agent start failed: {reason}")]
    StartFailed {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The agent did not answer its health check before the deadline.
    #[error("agent not ready after {0:?}")]
    Timeout(Duration),
    /// The runtime's backend (Kubernetes API, state store) failed.
    #[error("runtime backend unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The runtime cannot do what was asked (e.g. logs `since` without timestamps).
    #[error("{0}")]
    Unsupported(String),
}

impl RuntimeError {
    /// `StartFailed` for a reason with no underlying error (a pod phase, a missing credential).
    pub fn start_failed(reason: impl Into<String>) -> Self {
        RuntimeError::StartFailed {
            reason: reason.into(),
            source: None,
        }
    }

    /// `StartFailed` caused by `e` while doing `what`: `agent start failed: {what}: {e}`.
    pub fn start_failed_by(what: impl std::fmt::Display, e: impl Into<BoxError>) -> Self {
        let source = e.into();
        RuntimeError::StartFailed {
            reason: format!("{what}: {source}"),
            source: Some(source),
        }
    }

    /// `Unavailable` caused by `e` while doing `what`: `runtime backend unavailable: {what}: {e}`.
    pub fn unavailable(what: impl std::fmt::Display, e: impl Into<BoxError>) -> Self {
        let source = e.into();
        RuntimeError::Unavailable {
            message: format!("{what}: {source}"),
            source: Some(source),
        }
    }

    /// `Unavailable` with no underlying error (an object that did not go away in time).
    pub fn unavailable_msg(message: impl Into<String>) -> Self {
        RuntimeError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// What `last_error` records for a start that failed this way. The start-up failure texts
    /// of both runtimes name the cause (exit status, `ErrImagePull`, configuration).
    pub fn last_error(&self) -> LastError {
        let reason = match self {
            RuntimeError::Timeout(_) => reason::HEALTH_TIMEOUT,
            RuntimeError::Unavailable { .. } | RuntimeError::Unsupported(_) => {
                reason::RUNTIME_UNAVAILABLE
            }
            RuntimeError::StartFailed { reason: why, .. } => {
                let why = why.to_ascii_lowercase();
                if why.contains("imagepull")
                    || why.contains("errimage")
                    || why.contains("image pull")
                {
                    reason::IMAGE_PULL_FAILED
                } else if why.contains("config") {
                    reason::CONFIG_ERROR
                } else if why.contains("exited")
                    || why.contains("crashloop")
                    || why.contains("exit status")
                {
                    reason::AGENT_CRASHED
                } else {
                    reason::START_FAILED
                }
            }
        };
        LastError {
            reason: reason.into(),
            message: self.to_string(),
            at: chrono::Utc::now(),
        }
    }
}

/// What a runtime without state grants answers a renewal (a 400 naming what would issue them).
pub fn no_state_grants() -> RuntimeError {
    RuntimeError::Unsupported(
        "this platform issues no state grants (only WARM_POOL_MODE=agent with STATE_STORE=s3 does)"
            .into(),
    )
}

/// Which part of an agent's log to read (`GET /tenants/{id}/logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last this many lines.
    pub tail: Option<usize>,
    /// Only lines written in the last this many seconds (when the runtime can tell).
    pub since_s: Option<u64>,
    /// The previous agent's (container's) log instead of the current one.
    pub previous: bool,
}

/// The tenant's `tenant.json`: its stored configuration (validated when it was stored) with the
/// platform defaults applied. Never holds a secret (the LLM key and the credential are env vars).
pub fn rendered_config(
    record: &TenantRecord,
    defaults: &PlatformDefaults,
) -> Result<String, RuntimeError> {
    let bad =
        |e: BoxError| RuntimeError::start_failed_by("stored agent configuration is unusable", e);
    let config: AgentConfig = match &record.agent_config {
        Some(json) => serde_json::from_str(json).map_err(|e| bad(e.into()))?,
        None => AgentConfig::default(),
    };
    let rendered = config
        .render(record.tenant_id.as_str(), defaults)
        .map_err(|e| bad(e.into()))?;
    serde_json::to_string_pretty(&rendered).map_err(|e| bad(e.into()))
}

/// Where a started agent answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAddress {
    pub pod_name: String,
    /// Host without port.
    pub pod_ip: String,
    /// Set when the port is not the runtime's fixed `AGENT_PORT`.
    pub agent_port: Option<u16>,
    /// Whether the start claimed a warm-pool pod (`None`: no warm pool, or an adopted agent).
    pub warm: Option<bool>,
}

impl AgentAddress {
    pub fn endpoint(&self, default_port: u16) -> Endpoint {
        Endpoint::new(self.pod_ip.clone(), self.agent_port.unwrap_or(default_port))
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
    /// The object the listing saw (pod name and UID), so that a stop acting on this listing
    /// deletes that one and never a newer agent of the same name; `None` where runtimes keep none.
    pub instance: Option<Instance>,
}

/// One runtime object as observed: its name and the UID that tells it from a later one of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub uid: String,
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
    /// Stops only the tenant's agents a listing saw (`listed`, from [`Runtime::list`]): one that
    /// replaced them since is left running. Runtimes without instances stop the tenant's agent.
    async fn stop_listed(
        &self,
        tenant: &TenantId,
        _listed: &[AgentInfo],
    ) -> Result<(), RuntimeError> {
        self.stop(tenant).await
    }
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
    /// Mirrors a tenant event where the runtime's own tools show it (Kubernetes Events on the pod).
    async fn emit_event(&self, _tenant: &TenantId, _event: &TenantEvent) {}
    /// The agent's recent output; `None` when this runtime keeps no logs.
    async fn logs(
        &self,
        _tenant: &TenantId,
        _query: &LogQuery,
    ) -> Result<Option<String>, RuntimeError> {
        Ok(None)
    }
    /// Fresh state grants for the tenant's objects, issued as its agent's assignment's were
    /// (`POST /tenants/{id}/state_grants`); runtimes that hand agents no grants refuse.
    async fn state_grants(
        &self,
        _tenant: &TenantId,
    ) -> Result<common::assignment::StateGrants, RuntimeError> {
        Err(no_state_grants())
    }
    /// Warm pool hits and misses, for runtimes that keep a warm pool.
    fn warm_pool_claims(&self) -> Option<WarmPoolClaims> {
        None
    }
    /// Port agents listen on when `AgentAddress::agent_port` is `None`.
    fn agent_port(&self) -> u16;
    fn name(&self) -> &'static str;
}
