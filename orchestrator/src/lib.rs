//! The orchestrator: tenant registry API, wake, idle controller, reconciler and runtimes.

pub mod leader;
pub mod runtime;
