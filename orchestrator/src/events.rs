//! The tenant event history: what the platform did to a tenant and why, kept in the registry (so
//! every replica sees it and it survives restarts) and mirrored by the runtime (Kubernetes Events).
//!
//! Recording is best effort: an event that cannot be stored is logged, never fails the operation.

use std::time::Duration;

use common::lifecycle::NewEvent;
use common::TenantId;

use crate::app::App;

/// How long mirroring one event to the runtime may take.
const EMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Event reasons, CamelCase as Kubernetes Event reasons.
pub mod reason {
    pub const CREATED: &str = "Created";
    pub const CONFIG_CHANGED: &str = "ConfigChanged";
    pub const WOKE: &str = "Woke";
    pub const SLEPT: &str = "Slept";
    pub const START_FAILED: &str = "StartFailed";
    pub const RESET: &str = "Reset";
    pub const SUSPENDED: &str = "Suspended";
    pub const RESUMED: &str = "Resumed";
    pub const DELETING: &str = "Deleting";
    pub const DELETED: &str = "Deleted";
}

/// Stores the event in the tenant's history, then mirrors it to the runtime in an owned task.
pub async fn record(app: &App, id: &TenantId, event: NewEvent) {
    let seq = match app.registry.append_event(id, &event).await {
        Ok(seq) => seq,
        Err(e) => {
            tracing::warn!(tenant = %id, reason = %event.reason, error = %e, "event not stored");
            0
        }
    };
    let runtime = app.runtime.clone();
    let id = id.clone();
    let event = event.with_seq(seq);
    app.tasks.spawn(async move {
        if tokio::time::timeout(EMIT_TIMEOUT, runtime.emit_event(&id, &event))
            .await
            .is_err()
        {
            tracing::warn!(tenant = %id, reason = %event.reason, "event not mirrored to the runtime in time");
        }
    });
}

/// Why an agent was stopped, as the `Slept` event says it.
pub fn sleep_message(stop_reason: &str) -> String {
    let why = match stop_reason {
        "idle" => "idle timeout",
        "sleep" => "manual sleep",
        "shutdown" => "orchestrator shutdown",
        "suspend" => "suspended",
        "reconcile" => "reconciler",
        other => other,
    };
    format!("agent stopped, state saved ({why})")
}
