//! The tenant registry port and its adapters.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{Secret, StoreError, TenantId, TenantRecord, TenantStatus};

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Fields a `PATCH /tenants/{id}` may change; `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct SettingsUpdate {
    pub bot_token: Option<Secret>,
    pub idle_timeout_s: Option<u64>,
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
    /// Changes settings of an existing tenant; `NotFound` if absent.
    async fn update_settings(
        &self,
        id: &TenantId,
        update: &SettingsUpdate,
    ) -> Result<TenantRecord, StoreError>;
    /// Compare-and-set on the status: applies `update` only if the stored status is `from`.
    /// `NotFound` if absent, `Conflict` if the status moved on.
    async fn set_status(
        &self,
        id: &TenantId,
        from: TenantStatus,
        update: &StatusUpdate,
    ) -> Result<TenantRecord, StoreError>;
    /// Sets `last_active_at`; `NotFound` if absent.
    async fn touch(&self, id: &TenantId, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Removes the tenant; `Ok(false)` if it was not there.
    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Adapter name for the start-up line.
    fn name(&self) -> &'static str;
}

/// The idle timeout a stored value means: the Go platform wrote 0 for "the default" (five minutes).
pub fn stored_idle_timeout(value: Option<u64>) -> u64 {
    match value {
        None | Some(0) => crate::tenant::DEFAULT_IDLE_TIMEOUT_S,
        Some(v) => v,
    }
}
