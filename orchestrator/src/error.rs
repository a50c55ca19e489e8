//! The orchestrator's one error type; `api.rs` maps it to HTTP statuses.

use common::{StoreError, TenantId, TenantIdError};
use thiserror::Error;

use crate::runtime::RuntimeError;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    InvalidTenantId(#[from] TenantIdError),
    /// Invalid input; the text says what to fix.
    #[error("{0}")]
    BadRequest(String),
    #[error("tenant {0:?} not found")]
    NotFound(TenantId),
    #[error("tenant {0:?} already exists")]
    AlreadyExists(TenantId),
    /// Telegram refused or could not be reached while (un)registering the webhook.
    #[error("telegram {method} failed: {reason}")]
    Telegram {
        method: &'static str,
        reason: String,
    },
    /// The agent itself could not be started (image, configuration, crash, not healthy in
    /// time): definitive, unlike a runtime backend's outage (`Runtime`). Never holds a secret.
    #[error(transparent)]
    WakeFailed(RuntimeError),
    /// Another replica's wake, or a stop in progress, did not finish before the caller's deadline.
    #[error("tenant {0:?} did not become ready in time")]
    WakeTimeout(TenantId),
    /// A wake or stop of the tenant held its lock past the caller's deadline.
    #[error("tenant {0:?} is busy (a wake or stop is in progress); try again")]
    Busy(TenantId),
    /// Suspended by an operator: never woken until resumed.
    #[error("tenant {0:?} is suspended")]
    Suspended(TenantId),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A backend does not answer (`/readyz`).
    #[error("{0}")]
    NotReady(String),
    /// The service is stopping and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("internal error: {0}")]
    Internal(String),
    /// An agent-authenticated route without the tenant's own agent credential (or for an
    /// unknown tenant: the same answer, nothing to probe).
    #[error("missing or invalid agent credential")]
    AgentUnauthorized,
    /// A pod that is no longer the tenant's agent asked for what only the current one may have.
    #[error("{0}")]
    StaleAgent(String),
}

impl Error {
    /// A backend error with the operation that failed, e.g. `registry get`.
    pub fn store(what: &'static str) -> impl FnOnce(StoreError) -> Error {
        move |source| Error::Store { what, source }
    }
}
