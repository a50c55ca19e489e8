use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::lifecycle::{Condition, LastError, Phase, RuntimeStatus};
use crate::resources::AgentResources;
use crate::Secret;

/// Longest tenant id: `zeroclaw-{id}` must stay a valid 63-character DNS label.
pub const MAX_TENANT_ID_LEN: usize = 53;
pub const MIN_IDLE_TIMEOUT_S: u64 = 10;
pub const MAX_IDLE_TIMEOUT_S: u64 = 2_592_000;
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 300;
pub const DEFAULT_NAMESPACE: &str = "tenants";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TenantIdError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_TENANT_ID_LEN} characters")]
    TooLong,
    #[error("tenant id must be lowercase letters, digits and '-', starting and ending with a letter or digit")]
    BadCharacters,
}

/// A validated tenant id (a DNS-1123 label of at most 53 characters); parsing is the only way to make one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, TenantIdError> {
        if s.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if s.len() > MAX_TENANT_ID_LEN {
            return Err(TenantIdError::TooLong);
        }
        let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let bytes = s.as_bytes();
        let edges_ok = ok_char(bytes[0]) && ok_char(bytes[bytes.len() - 1]);
        if !edges_ok || !bytes.iter().all(|&c| ok_char(c) || c == b'-') {
            return Err(TenantIdError::BadCharacters);
        }
        Ok(TenantId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Name of the tenant's agent pod (and local agent process label).
    pub fn pod_name(&self) -> String {
        format!("zeroclaw-{}", self.0)
    }

    /// State-store prefix, identical to the Go platform's `s3_prefix`.
    pub fn s3_prefix(&self) -> String {
        format!("tenants/{}/", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Idle,
    Provisioning,
    Running,
    Terminated,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Idle => "idle",
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Running => "running",
            TenantStatus::Terminated => "terminated",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(TenantStatus::Idle),
            "provisioning" => Ok(TenantStatus::Provisioning),
            "running" => Ok(TenantStatus::Running),
            "terminated" => Ok(TenantStatus::Terminated),
            other => Err(format!(
                "unknown status {other:?} (expected idle, provisioning, running or terminated)"
            )),
        }
    }
}

/// RFC 3339 UTC with second precision, as the Go platform wrote it; any RFC 3339 form reads back.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_time(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

/// One row of the tenant registry, with the attribute names of the DynamoDB schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub tenant_id: TenantId,
    pub status: TenantStatus,
    pub pod_name: String,
    /// Agent address without port; empty when idle.
    pub pod_ip: String,
    /// Agent port when it is not the runtime's fixed one (local runtime). Not in the Go schema: absent there.
    pub agent_port: Option<u16>,
    pub namespace: String,
    pub s3_prefix: String,
    pub bot_token: Secret,
    pub created_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    pub idle_timeout_s: u64,
    /// The credential only this tenant's agent accepts (`AGENT_TOKEN`); empty until one is
    /// generated (a record the Go platform wrote gets one at its next wake). Never in a view.
    pub agent_token: Secret,
    /// The tenant's [`crate::agent_config::AgentConfig`] as validated JSON; `None` = platform defaults.
    pub agent_config: Option<String>,
    /// Stopped by an operator and never woken until resumed. Not in the Go schema: absent = false.
    pub suspended: bool,
    /// A deletion began and has not finished; the reconciler finishes it. Absent = false.
    pub deleting: bool,
    /// Why the last start failed; `None` once a start succeeds. Absent in Go items.
    pub last_error: Option<LastError>,
    /// CPU/memory overrides of the platform defaults, applied at the next start. Absent = none.
    pub resources: AgentResources,
    /// The highest wake-lock generation (fencing token) a status write carried; a write with a
    /// lower one is refused, so a replica whose lock lapsed cannot undo its successor. Absent = 0.
    pub fence: u64,
}

/// A fresh random agent credential (256 bits, hex).
pub fn new_agent_token() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(hex::encode(bytes))
}

impl TenantRecord {
    /// A new idle tenant.
    pub fn new(
        id: TenantId,
        bot_token: Secret,
        idle_timeout_s: u64,
        namespace: &str,
        now: DateTime<Utc>,
    ) -> Self {
        TenantRecord {
            s3_prefix: id.s3_prefix(),
            tenant_id: id,
            status: TenantStatus::Idle,
            pod_name: String::new(),
            pod_ip: String::new(),
            agent_port: None,
            namespace: namespace.to_owned(),
            bot_token,
            created_at: now,
            last_active_at: now,
            idle_timeout_s,
            agent_token: Secret::new(""),
            agent_config: None,
            suspended: false,
            deleting: false,
            last_error: None,
            resources: AgentResources::default(),
            fence: 0,
        }
    }

    /// Where the agent answers when the record says it runs (`None`: no agent).
    pub fn endpoint(&self, default_port: u16) -> Option<crate::wire::Endpoint> {
        if self.status != TenantStatus::Running || self.pod_ip.is_empty() {
            return None;
        }
        Some(crate::wire::Endpoint::new(
            self.pod_ip.clone(),
            self.agent_port.unwrap_or(default_port),
        ))
    }

    pub fn view(&self) -> TenantView {
        self.clone().into_view()
    }

    /// The view, moving the record's fields (a list of 10,000 copies none).
    pub fn into_view(self) -> TenantView {
        let phase = self.phase();
        let conditions = self.conditions();
        TenantView {
            tenant_id: self.tenant_id,
            status: self.status,
            pod_name: self.pod_name,
            pod_ip: self.pod_ip,
            agent_port: self.agent_port,
            namespace: self.namespace,
            s3_prefix: self.s3_prefix,
            created_at: self.created_at,
            last_active_at: self.last_active_at,
            idle_timeout_s: self.idle_timeout_s,
            bot_token_set: !self.bot_token.is_empty(),
            phase: Some(phase),
            runtime_status: Some(phase.runtime_status()),
            suspended: self.suspended,
            last_error: self.last_error,
            conditions,
            resources: self.resources,
        }
    }
}

/// The public view of a tenant: every record attribute but `bot_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantView {
    pub tenant_id: TenantId,
    pub status: TenantStatus,
    pub pod_name: String,
    pub pod_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<u16>,
    pub namespace: String,
    pub s3_prefix: String,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub last_active_at: DateTime<Utc>,
    pub idle_timeout_s: u64,
    pub bot_token_set: bool,
    /// Derived from `status`, `suspended`, `deleting` and `last_error` (see `common::lifecycle`);
    /// optional so that views of older servers read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_status: Option<RuntimeStatus>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The tenant's CPU/memory overrides (the platform defaults apply to the rest).
    #[serde(default, skip_serializing_if = "AgentResources::is_empty")]
    pub resources: AgentResources,
}

/// Checks an idle timeout against the bounds of the schema.
pub fn validate_idle_timeout(v: i64) -> Result<u64, String> {
    if v < MIN_IDLE_TIMEOUT_S as i64 || v > MAX_IDLE_TIMEOUT_S as i64 {
        return Err(format!(
            "idle_timeout_s must be between {MIN_IDLE_TIMEOUT_S} and {MAX_IDLE_TIMEOUT_S}, got {v}"
        ));
    }
    Ok(v as u64)
}

/// A non-empty bot token of sane length and characters; the message never repeats the token.
pub fn validate_bot_token(t: &str) -> Result<Secret, String> {
    let t = t.trim();
    if t.is_empty() {
        return Err("bot_token must not be empty".into());
    }
    if t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("bot_token must be at most 256 characters with no spaces".into());
    }
    Ok(Secret::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        for ok in ["a", "bob", "a-b", "0", "x1-2-3", &"a".repeat(53)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Bad_ID",
            "-x",
            "x-",
            "../x",
            "a.b",
            "A",
            &"a".repeat(54),
            &"a".repeat(80),
            "a b",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TenantId::parse(&"a".repeat(53)).unwrap().pod_name().len(),
            62
        );
    }

    #[test]
    fn view_hides_token_and_round_trips() {
        let id = TenantId::parse("bob").unwrap();
        let mut rec = TenantRecord::new(id, Secret::new("1:SECRET"), 300, "tenants", Utc::now());
        rec.agent_token = new_agent_token();
        let json = serde_json::to_string(&rec.view()).unwrap();
        assert!(!json.contains("SECRET"));
        assert!(
            !json.contains(rec.agent_token.expose()),
            "no agent credential"
        );
        assert_eq!(rec.agent_token.expose().len(), 64);
        assert_ne!(new_agent_token(), rec.agent_token);
        assert!(json.contains("\"bot_token_set\":true"));
        let back: TenantView = serde_json::from_str(&json).unwrap();
        assert_eq!(back.tenant_id.as_str(), "bob");
        assert_eq!(back.s3_prefix, "tenants/bob/");
    }

    #[test]
    fn timeouts() {
        assert!(validate_idle_timeout(9).is_err());
        assert!(validate_idle_timeout(0).is_err());
        assert!(validate_idle_timeout(-5).is_err());
        assert_eq!(validate_idle_timeout(10), Ok(10));
        assert!(validate_idle_timeout(2_592_001).is_err());
    }

    #[test]
    fn go_times_read_back() {
        assert!(parse_time("2024-05-01T10:00:00Z").is_some());
        assert!(parse_time("2024-05-01T10:00:00.123456789Z").is_some());
        assert!(parse_time("2024-05-01T12:00:00+02:00").is_some());
    }
}
