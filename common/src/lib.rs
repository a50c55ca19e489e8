//! Domain types, ports and adapters shared by the orchestrator, the router and `ztm`.
//!
//! Adapters sit behind cargo features so that a binary compiles only the SDKs it uses.

pub mod agent_config;
pub mod assignment;
#[cfg(any(feature = "dynamodb", feature = "s3"))]
pub mod aws;
pub mod cache;
pub mod call;
pub mod config;
#[cfg(feature = "contract")]
pub mod contract;
pub mod error;
#[cfg(feature = "actix")]
pub mod http_auth;
pub mod http_client;
pub mod inbox;
#[cfg(feature = "kube")]
pub mod k8s;
pub mod lifecycle;
pub mod lock;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis_pool;
pub mod registry;
pub mod resources;
pub mod secret;
#[cfg(feature = "actix")]
pub mod service;
#[cfg(feature = "sqlite")]
pub mod sqlite_db;
pub mod state;
pub mod state_file;
#[cfg(feature = "contract")]
pub mod stub;
pub mod telegram;
pub mod telemetry;
pub mod tenant;
pub mod webhook;
pub mod webhook_record;
pub mod wire;

pub use error::StoreError;
pub use secret::Secret;
pub use tenant::{TenantId, TenantIdError, TenantRecord, TenantStatus, TenantView};

/// Redis key of the endpoint cache entry of a tenant (same name as the Go platform).
pub fn endpoint_key(id: &TenantId) -> String {
    format!("router:endpoint:{id}")
}

/// Redis key of the wake lock of a tenant (same name as the Go platform).
pub fn wake_lock_key(id: &TenantId) -> String {
    format!("tenant:waking:{id}")
}

/// Version string reported by every binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
