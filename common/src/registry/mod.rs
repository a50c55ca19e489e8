//! The tenant registry port and its adapters.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::lifecycle::{LastError, NewEvent, TenantEvent};
use crate::resources::AgentResources;
use crate::{Secret, StoreError, TenantId, TenantRecord, TenantStatus};

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Where [`Registry::list_chunks`] sends the records it reads; closed when it returns.
pub type ListChunks = tokio::sync::mpsc::UnboundedSender<Vec<TenantRecord>>;

/// Fields a `PATCH /tenants/{id}` may change; `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct SettingsUpdate {
    pub bot_token: Option<Secret>,
    pub idle_timeout_s: Option<u64>,
    /// The tenant's complete new resource overrides (fields `None` go back to the defaults).
    pub resources: Option<AgentResources>,
}

/// A status change and the agent address that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub status: TenantStatus,
    pub pod_name: String,
    pub pod_ip: String,
    pub agent_port: Option<u16>,
    /// Also set `last_active_at` to this time (a wake counts as activity).
    pub touch: Option<DateTime<Utc>>,
    /// What becomes of `last_error`.
    pub last_error: ErrorChange,
    /// The writer's wake-lock generation: the write is refused (`Conflict`) when the record holds a
    /// higher one, and raises the stored one otherwise. `None`: an unfenced write (no lock held).
    pub fence: Option<u64>,
}

/// How a status change treats the stored `last_error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ErrorChange {
    #[default]
    Keep,
    Clear,
    Set(LastError),
}

impl StatusUpdate {
    /// Asleep: no agent, no address.
    pub fn idle() -> Self {
        StatusUpdate {
            status: TenantStatus::Idle,
            pod_name: String::new(),
            pod_ip: String::new(),
            agent_port: None,
            touch: None,
            last_error: ErrorChange::Keep,
            fence: None,
        }
    }

    /// Asleep after a failed start, remembering why.
    pub fn failed(error: LastError) -> Self {
        StatusUpdate {
            last_error: ErrorChange::Set(error),
            ..StatusUpdate::idle()
        }
    }

    pub fn provisioning() -> Self {
        StatusUpdate {
            status: TenantStatus::Provisioning,
            ..StatusUpdate::idle()
        }
    }

    pub fn running(pod_name: String, pod_ip: String, agent_port: Option<u16>) -> Self {
        StatusUpdate {
            status: TenantStatus::Running,
            pod_name,
            pod_ip,
            agent_port,
            touch: Some(Utc::now()),
            last_error: ErrorChange::Clear,
            fence: None,
        }
    }

    /// The same write, carrying the writer's lock generation (see [`StatusUpdate::fence`]).
    pub fn fenced(self, fence: u64) -> Self {
        StatusUpdate {
            fence: Some(fence),
            ..self
        }
    }
}

/// Where tenants live. Every write is conditional so that concurrent replicas cannot clobber each other.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Stores a new tenant; `AlreadyExists` if the id is taken.
    async fn create(&self, record: &TenantRecord) -> Result<(), StoreError>;
    async fn get(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError>;
    /// All tenants (every page), optionally of one status, ordered by id.
    async fn list(&self, status: Option<TenantStatus>) -> Result<Vec<TenantRecord>, StoreError>;
    /// `list`, handed to `chunks` in id order as it is read, so that a caller encodes one chunk
    /// while the next is read; returns once all are sent. A backend that cannot stream sends one.
    async fn list_chunks(
        &self,
        status: Option<TenantStatus>,
        chunks: ListChunks,
    ) -> Result<(), StoreError> {
        let _ = chunks.send(self.list(status).await?);
        Ok(())
    }
    /// Changes settings of an existing tenant; `NotFound` if absent.
    async fn update_settings(
        &self,
        id: &TenantId,
        update: &SettingsUpdate,
    ) -> Result<TenantRecord, StoreError>;
    /// Compare-and-set on the status: applies `update` only if the stored status is `from` and,
    /// for a fenced update, the stored fence is not above the update's (which then becomes the
    /// stored one). `NotFound` if absent, `Conflict` if the status moved on or a newer lock
    /// generation wrote since.
    async fn set_status(
        &self,
        id: &TenantId,
        from: TenantStatus,
        update: &StatusUpdate,
    ) -> Result<TenantRecord, StoreError>;
    /// Sets `last_active_at`; `NotFound` if absent.
    async fn touch(&self, id: &TenantId, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Stores `token` as the tenant's agent credential unless it already has one (conditional write:
    /// two replicas racing agree on the first). Returns the record with the credential that won;
    /// `NotFound` if absent.
    async fn set_agent_token_if_absent(
        &self,
        id: &TenantId,
        token: &Secret,
    ) -> Result<TenantRecord, StoreError>;
    /// Replaces the tenant's agent configuration (validated JSON; `None` clears it); `NotFound` if absent.
    async fn set_agent_config(
        &self,
        id: &TenantId,
        config: Option<&str>,
    ) -> Result<TenantRecord, StoreError>;
    /// Removes the tenant; `Ok(false)` if it was not there.
    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// Sets or clears `suspended`; `NotFound` if absent.
    async fn set_suspended(
        &self,
        id: &TenantId,
        suspended: bool,
    ) -> Result<TenantRecord, StoreError>;
    /// Marks a deletion as begun (`deleting`); `NotFound` if absent.
    async fn set_deleting(&self, id: &TenantId) -> Result<TenantRecord, StoreError>;
    /// Appends an event to the tenant's history (kept: the last `EVENTS_KEPT`) and returns its
    /// sequence number. The tenant need not exist (its `Deleted` event outlives it).
    async fn append_event(&self, id: &TenantId, event: &NewEvent) -> Result<u64, StoreError>;
    /// The newest `limit` events with a sequence number above `after`, oldest first.
    async fn events(
        &self,
        id: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TenantEvent>, StoreError>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Adapter name for the start-up line.
    fn name(&self) -> &'static str;
}

/// Why a status compare-and-set refused `update`, given the record as it is stored.
pub fn status_conflict(
    id: &TenantId,
    from: TenantStatus,
    update: &StatusUpdate,
    stored: &TenantRecord,
) -> StoreError {
    match update.fence {
        Some(f) if stored.fence > f => StoreError::Conflict(format!(
            "tenant {id}: lock generation {f} superseded by {}",
            stored.fence
        )),
        _ => StoreError::Conflict(format!("tenant {id} is {}, not {from}", stored.status)),
    }
}

/// The idle timeout a stored value means: the Go platform wrote 0 for "the default" (five minutes).
pub fn stored_idle_timeout(value: Option<u64>) -> u64 {
    match value {
        None | Some(0) => crate::tenant::DEFAULT_IDLE_TIMEOUT_S,
        Some(v) => v,
    }
}
