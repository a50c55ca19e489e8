//! The JSON of the platform's HTTP contracts, declared once for every side: the agent contract
//! (what the router POSTs to an agent and what it answers, `/health`, `/api/health`) and the
//! orchestrator API (bodies and answers the router, `ztm` and the orchestrator share).
//!
//! The shapes on the wire are fixed (Go-era routers and scripts read them): field names never
//! change here, and the Go-compatible response mode rewrites them in `orchestrator/src/compat.rs`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::resources::AgentResources;
use crate::Secret;
pub use crate::TenantView;

// ---- Addresses ----

/// Where an agent answers: a host (IP or name, IPv6 without brackets) and a port. On the wire and
/// in logs it is `host:port` (`[v6]:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a host:port endpoint: {0:?}")]
pub struct EndpointError(String);

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// A value as the Go platform cached it too: a bare IP means `ip:default_port`.
    pub fn from_cached(value: &str, default_port: u16) -> Result<Self, EndpointError> {
        match value.parse::<IpAddr>() {
            Ok(ip) => Ok(Endpoint::new(ip.to_string(), default_port)),
            Err(_) => value.parse(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the host lies in a `host:port` value (inside any brackets), and the port.
fn split_endpoint(s: &str) -> Option<(std::ops::Range<usize>, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let (start, host) = match host.strip_prefix('[') {
        Some(v6) => (1, v6.strip_suffix(']')?),
        None if host.contains(':') => return None,
        None => (0, host),
    };
    let port = port.parse::<u16>().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((start..start + host.len(), port))
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_endpoint(s).ok_or_else(|| EndpointError(s.to_owned()))?;
        Ok(Endpoint::new(&s[host], port))
    }
}

/// Parses a `host:port` value it is given, keeping its buffer as the host: the router reads one
/// from its endpoint cache for every forward, and this costs no allocation.
impl TryFrom<String> for Endpoint {
    type Error = EndpointError;

    fn try_from(mut s: String) -> Result<Self, Self::Error> {
        let Some((host, port)) = split_endpoint(&s) else {
            return Err(EndpointError(s));
        };
        s.truncate(host.end);
        s.drain(..host.start);
        Ok(Endpoint { host: s, port })
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `""` on the wire for "none" (the Go platform's convention), `None` in code.
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = Option::<String>::deserialize(d)?;
        Ok(v.filter(|s| !s.is_empty()))
    }
}

/// A secret the answer exists to hand over (only on routes behind the API token).
fn expose<S: Serializer>(v: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.expose())
}

// ---- The agent contract ----

/// `POST /webhook` on an agent.
pub const AGENT_WEBHOOK_PATH: &str = "/webhook";
/// Liveness of an agent, no credential.
pub const AGENT_HEALTH_PATH: &str = "/health";
/// The identity probe: 200 only with this tenant's credential (`Authorization: Bearer`).
pub const AGENT_PAIRED_HEALTH_PATH: &str = "/api/health";
/// The router's delivery key: an agent answers a repeated key with its first reply.
pub const IDEMPOTENCY_KEY_HEADER: &str = "x-idempotency-key";
/// The tenant the router means; an agent of another tenant answers 421.
pub const TENANT_ID_HEADER: &str = "x-tenant-id";

/// Body of `POST /webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMessage<'a> {
    #[serde(borrow)]
    pub message: std::borrow::Cow<'a, str>,
}

/// Answer of `POST /webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReply {
    pub response: String,
}

/// Answer of `GET /health` and `GET /api/health`. An agent that names no tenant (the ZeroClaw
/// gateway) is taken at its word.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentHealth {
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `/api/health` only: the caller's credential was this tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<bool>,
    /// `/health` of a warm-pool agent not assigned yet (`common::assignment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
}

/// The error body of both services and the agent: `{"error": ..., "code": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// A machine-readable reason where the caller branches on it (`agent_start_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            code: None,
        }
    }
}

// ---- The orchestrator API ----

/// Body of `POST /tenants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub tenant_id: String,
    pub bot_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<i64>,
}

/// Body of `PATCH /tenants/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<i64>,
    /// CPU/memory overrides to change; a field given as `""` goes back to the platform default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<AgentResources>,
}

/// Answer of `POST /wake/{id}`: `endpoint` from this platform; a Go orchestrator answered only
/// `pod_ip` (its agents listened on a fixed port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeAnswer {
    #[serde(default, with = "empty_is_none")]
    pub pod_ip: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_endpoint_is_none"
    )]
    pub endpoint: Option<Endpoint>,
}

fn empty_endpoint_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Endpoint>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) if !s.is_empty() => s.parse().map(Some).map_err(serde::de::Error::custom),
        _ => Ok(None),
    }
}

impl WakeAnswer {
    /// Where the agent answers; a bare `pod_ip` (a Go orchestrator's) means `pod_ip:go_port`.
    pub fn endpoint(&self, go_port: u16) -> Option<Endpoint> {
        match (&self.endpoint, &self.pod_ip) {
            (Some(ep), _) => Some(ep.clone()),
            (None, Some(ip)) => Endpoint::from_cached(ip, go_port).ok(),
            (None, None) => None,
        }
    }
}

/// Answer of `GET /tenants/{id}/bot_token` (`{"BotToken": ...}` from a Go orchestrator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotTokenAnswer {
    #[serde(alias = "BotToken", serialize_with = "expose")]
    pub bot_token: Secret,
}

/// Answer of `GET /tenants/{id}/agent_token`: the credential the tenant's agent accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTokenAnswer {
    #[serde(serialize_with = "expose")]
    pub agent_token: Secret,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_read_and_write_as_host_port() {
        for (s, host, port) in [
            ("10.1.2.3:3000", "10.1.2.3", 3000),
            ("[fd00::5]:3000", "fd00::5", 3000),
            ("agent.local:8080", "agent.local", 8080),
        ] {
            let ep: Endpoint = s.parse().unwrap();
            assert_eq!(ep, Endpoint::new(host, port));
            assert_eq!(Endpoint::try_from(s.to_owned()).unwrap(), ep);
            assert_eq!(ep.to_string(), s);
            assert_eq!(serde_json::to_value(&ep).unwrap(), json!(s));
        }
        for bad in [
            "",
            "10.1.2.3",
            "10.1.2.3:0",
            ":3000",
            "fd00::5:3000",
            "h:x",
            "[fd00::5:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
            assert!(Endpoint::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert_eq!(
            Endpoint::from_cached("fd00::5", 3000).unwrap().to_string(),
            "[fd00::5]:3000"
        );
        assert_eq!(
            Endpoint::from_cached("10.1.2.3:4001", 3000).unwrap(),
            Endpoint::new("10.1.2.3", 4001)
        );
    }

    #[test]
    fn the_wake_answer_keeps_its_json() {
        let ours = WakeAnswer {
            pod_ip: Some("10.1.2.3".into()),
            endpoint: Some(Endpoint::new("10.1.2.3", 40123)),
        };
        let v = serde_json::to_value(&ours).unwrap();
        assert_eq!(
            v,
            json!({"pod_ip": "10.1.2.3", "endpoint": "10.1.2.3:40123"})
        );
        assert_eq!(serde_json::from_value::<WakeAnswer>(v).unwrap(), ours);
        let go: WakeAnswer = serde_json::from_value(json!({"pod_ip": "10.1.2.3"})).unwrap();
        assert_eq!(go.endpoint(3000), Some(Endpoint::new("10.1.2.3", 3000)));
        let none: WakeAnswer =
            serde_json::from_value(json!({"pod_ip": "", "endpoint": ""})).unwrap();
        assert_eq!((none.pod_ip.clone(), none.endpoint(3000)), (None, None));
        let empty = WakeAnswer {
            pod_ip: None,
            endpoint: None,
        };
        assert_eq!(serde_json::to_value(empty).unwrap(), json!({"pod_ip": ""}));
    }

    #[test]
    fn token_answers_hand_the_secret_over_and_read_the_go_name() {
        let t = BotTokenAnswer {
            bot_token: Secret::new("1:x"),
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"bot_token": "1:x"})
        );
        let go: BotTokenAnswer = serde_json::from_value(json!({"BotToken": "1:x"})).unwrap();
        assert_eq!(go, t);
        let a = AgentTokenAnswer {
            agent_token: Secret::new("s3cr3t"),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"agent_token": "s3cr3t"})
        );
    }

    #[test]
    fn bodies_send_only_what_is_given() {
        let patch = UpdateTenant {
            idle_timeout_s: Some(60),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!({"idle_timeout_s": 60})
        );
        assert!(serde_json::from_value::<UpdateTenant>(json!({"nope": 1})).is_err());
        let health = AgentHealth {
            status: "ok".into(),
            tenant_id: Some("bob".into()),
            paired: None,
            warm: None,
        };
        assert_eq!(
            serde_json::to_value(&health).unwrap(),
            json!({"status": "ok", "tenant_id": "bob"})
        );
        let msg: AgentMessage = serde_json::from_str(r#"{"message":"hi \"x\""}"#).unwrap();
        assert_eq!(msg.message, "hi \"x\"");
    }
}
