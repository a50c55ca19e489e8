//! Tenant lifecycle as operators and products see it: the phase, the user-facing runtime status,
//! conditions, the last failed start, and the bounded per-tenant event history.
//!
//! The phase is derived from what the registry stores (`status`, `suspended`, `last_error`), never
//! stored itself, so that it cannot disagree with the `status` the Go platform's clients read.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::tenant::{rfc3339, TenantRecord, TenantStatus};

/// How many events the registry keeps per tenant; older ones are dropped as new ones arrive.
pub const EVENTS_KEPT: u64 = 100;

/// Where a tenant is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// An agent is being started (status `provisioning`).
    Progressing,
    /// The agent runs and answers (status `running`).
    Ready,
    /// No agent; the next message wakes it (status `idle` or `terminated`).
    Sleeping,
    /// Stopped by an operator with its state saved; never woken until resumed.
    Suspended,
    /// A deletion has begun and not every object the tenant owned is gone yet.
    Deleting,
    /// No agent, and the last start failed (`last_error` says why); the next message tries again.
    Error,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Ready => "Ready",
            Phase::Sleeping => "Sleeping",
            Phase::Suspended => "Suspended",
            Phase::Deleting => "Deleting",
            Phase::Error => "Error",
        }
    }

    /// What a user-facing product shows for this phase.
    pub fn runtime_status(self) -> RuntimeStatus {
        match self {
            Phase::Progressing => RuntimeStatus::Provisioning,
            Phase::Ready => RuntimeStatus::Ready,
            Phase::Sleeping | Phase::Deleting => RuntimeStatus::Offline,
            Phase::Suspended => RuntimeStatus::Suspended,
            Phase::Error => RuntimeStatus::Failed,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runtime status a product shows its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    Ready,
    Provisioning,
    Offline,
    Failed,
    Suspended,
}

impl RuntimeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Ready => "ready",
            RuntimeStatus::Provisioning => "provisioning",
            RuntimeStatus::Offline => "offline",
            RuntimeStatus::Failed => "failed",
            RuntimeStatus::Suspended => "suspended",
        }
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons of a failed start (`LastError::reason`), CamelCase as Kubernetes reasons are.
pub mod reason {
    /// The agent process or container exited (or crash-looped) during start-up.
    pub const AGENT_CRASHED: &str = "AgentCrashed";
    /// The agent ran but did not answer its health check in time.
    pub const HEALTH_TIMEOUT: &str = "HealthTimeout";
    /// The agent's configuration could not be rendered.
    pub const CONFIG_ERROR: &str = "ConfigError";
    /// Kubernetes could not pull the agent image.
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    /// The runtime's backend (Kubernetes API, state store) failed.
    pub const RUNTIME_UNAVAILABLE: &str = "RuntimeUnavailable";
    /// Any other start failure.
    pub const START_FAILED: &str = "StartFailed";
}

/// Why the last start failed; cleared by the next start that succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// One of [`reason`].
    pub reason: String,
    /// What happened, for an operator (never a secret).
    pub message: String,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// A condition in the Kubernetes style: a named fact, true or false, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// Texts are `Cow`s: the fixed ones cost no allocation, which is most of them in a list of 10,000.
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// `True` or `False`.
    pub status: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub reason: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub message: Cow<'static, str>,
}

impl Condition {
    fn new(
        kind: &'static str,
        on: bool,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Condition {
            kind: kind.into(),
            status: if on { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl TenantRecord {
    pub fn phase(&self) -> Phase {
        if self.deleting {
            return Phase::Deleting;
        }
        if self.suspended {
            return Phase::Suspended;
        }
        match self.status {
            TenantStatus::Provisioning => Phase::Progressing,
            TenantStatus::Running => Phase::Ready,
            TenantStatus::Idle | TenantStatus::Terminated if self.last_error.is_some() => {
                Phase::Error
            }
            TenantStatus::Idle | TenantStatus::Terminated => Phase::Sleeping,
        }
    }

    /// `Ready` (the agent answers), `Suspended`, `StartFailed` (the last start failed).
    pub fn conditions(&self) -> Vec<Condition> {
        let ready = self.status == TenantStatus::Running;
        let (err_reason, err_message) = self
            .last_error
            .as_ref()
            .map(|e| (e.reason.clone(), e.message.clone()))
            .unwrap_or_default();
        vec![
            Condition::new(
                "Ready",
                ready,
                if ready { "AgentRunning" } else { "NoAgent" },
                "",
            ),
            Condition::new(
                "Suspended",
                self.suspended,
                if self.suspended {
                    "SuspendedByOperator"
                } else {
                    ""
                },
                "",
            ),
            Condition::new(
                "StartFailed",
                self.last_error.is_some(),
                err_reason,
                err_message,
            ),
        ]
    }
}

/// `Normal` or `Warning`, as Kubernetes Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }

    pub fn parse(s: &str) -> EventType {
        if s == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        }
    }
}

/// One thing the platform did to a tenant, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEvent {
    /// Increases by one per event of the tenant; `ztm tenant events --watch` follows it.
    pub seq: u64,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// CamelCase: `Created`, `ConfigChanged`, `Woke`, `Slept`, `StartFailed`, `Reset`, `Suspended`,
    /// `Resumed`, `Deleting`, `Deleted`.
    pub reason: String,
    pub message: String,
}

/// An event before the registry gave it its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub kind: EventType,
    pub reason: String,
    pub message: String,
}

impl NewEvent {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        NewEvent {
            at: Utc::now(),
            kind: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        NewEvent {
            kind: EventType::Warning,
            ..NewEvent::normal(reason, message)
        }
    }

    pub fn with_seq(&self, seq: u64) -> TenantEvent {
        TenantEvent {
            seq,
            at: self.at,
            kind: self.kind,
            reason: self.reason.clone(),
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Secret, TenantId};

    #[test]
    fn phase_follows_status_and_flags() {
        let mut r = TenantRecord::new(
            TenantId::parse("bob").unwrap(),
            Secret::new("1:t"),
            300,
            "tenants",
            Utc::now(),
        );
        assert_eq!(r.phase(), Phase::Sleeping);
        assert_eq!(r.phase().runtime_status(), RuntimeStatus::Offline);
        r.status = TenantStatus::Provisioning;
        assert_eq!(r.phase().runtime_status(), RuntimeStatus::Provisioning);
        r.status = TenantStatus::Running;
        assert_eq!(r.phase(), Phase::Ready);
        r.status = TenantStatus::Idle;
        r.last_error = Some(LastError {
            reason: reason::HEALTH_TIMEOUT.into(),
            message: "agent not ready after 5s".into(),
            at: Utc::now(),
        });
        assert_eq!(r.phase(), Phase::Error);
        assert_eq!(r.phase().runtime_status(), RuntimeStatus::Failed);
        let failed = &r.conditions()[2];
        assert_eq!(
            (&*failed.status, &*failed.reason),
            ("True", "HealthTimeout")
        );
        r.suspended = true;
        assert_eq!(r.phase(), Phase::Suspended);
        r.deleting = true;
        assert_eq!(r.phase(), Phase::Deleting);
    }
}
