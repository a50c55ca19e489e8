//! The orchestrator: tenant registry API, wake, idle controller, reconciler and runtimes.

pub mod adapters;
pub mod api;
pub mod app;
pub mod compat;
pub mod config;
pub mod error;
pub mod events;
pub mod idle_clock;
pub mod leader;
#[cfg(feature = "kube")]
pub mod leader_lease;
pub mod lifecycle;
pub mod metrics;
pub mod operations;
pub mod reconciler;
pub mod runtime;
pub mod server;
pub mod state_grants;
pub mod tenant_lock;
pub mod tenants;
#[cfg(test)]
mod testing;
pub mod wake;
#[cfg(feature = "kube")]
pub mod warm_pool;
pub mod webhook;

pub use error::Error;
