//! Per-tenant CPU and memory requests and limits of the agent: platform defaults from the
//! orchestrator's env, per-tenant overrides in the registry, both checked against operator bounds.

use serde::{Deserialize, Serialize};

/// Kubernetes quantities (`250m`, `1`, `512Mi`, `2Gi`); `None` = the platform default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

/// What an operator allows a tenant to ask for (orchestrator env `AGENT_MAX_CPU`,
/// `AGENT_MAX_MEMORY`, `AGENT_MIN_MEMORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceBounds {
    pub max_cpu_millis: u64,
    pub max_memory_bytes: u64,
    pub min_memory_bytes: u64,
}

impl Default for ResourceBounds {
    fn default() -> Self {
        ResourceBounds {
            max_cpu_millis: 4000,
            max_memory_bytes: 8 << 30,
            min_memory_bytes: 128 << 20,
        }
    }
}

impl AgentResources {
    /// The platform's defaults when the orchestrator's env sets none (what pods had before).
    pub fn platform_default() -> Self {
        AgentResources {
            cpu_request: Some("100m".into()),
            cpu_limit: Some("500m".into()),
            memory_request: Some("384Mi".into()),
            memory_limit: Some("512Mi".into()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == AgentResources::default()
    }

    /// These overrides over `defaults`, field by field.
    pub fn over(&self, defaults: &AgentResources) -> AgentResources {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        AgentResources {
            cpu_request: pick(&self.cpu_request, &defaults.cpu_request),
            cpu_limit: pick(&self.cpu_limit, &defaults.cpu_limit),
            memory_request: pick(&self.memory_request, &defaults.memory_request),
            memory_limit: pick(&self.memory_limit, &defaults.memory_limit),
        }
    }

    /// An update on top of these overrides: a field given as `""` goes back to the default.
    pub fn updated(&self, change: &AgentResources) -> AgentResources {
        let apply = |cur: &Option<String>, new: &Option<String>| match new.as_deref() {
            None => cur.clone(),
            Some("") => None,
            Some(v) => Some(v.trim().to_owned()),
        };
        AgentResources {
            cpu_request: apply(&self.cpu_request, &change.cpu_request),
            cpu_limit: apply(&self.cpu_limit, &change.cpu_limit),
            memory_request: apply(&self.memory_request, &change.memory_request),
            memory_limit: apply(&self.memory_limit, &change.memory_limit),
        }
    }

    /// Checks every quantity is well-formed and within `bounds`, and that no request exceeds its
    /// limit; the message names the field.
    pub fn validate(&self, bounds: &ResourceBounds) -> Result<(), String> {
        let cpu = |name: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            let Some(v) = v else { return Ok(None) };
            let m = parse_cpu_millis(v)
                .ok_or_else(|| format!("{name} {v:?} is not a CPU quantity (e.g. 250m, 1, 1.5)"))?;
            if m == 0 || m > bounds.max_cpu_millis {
                return Err(format!(
                    "{name} {v:?} is outside 1m..{}m (AGENT_MAX_CPU)",
                    bounds.max_cpu_millis
                ));
            }
            Ok(Some(m))
        };
        let mem = |name: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            let Some(v) = v else { return Ok(None) };
            let b = parse_memory_bytes(v).ok_or_else(|| {
                format!("{name} {v:?} is not a memory quantity (e.g. 512Mi, 1Gi)")
            })?;
            if b < bounds.min_memory_bytes || b > bounds.max_memory_bytes {
                return Err(format!(
                    "{name} {v:?} is outside {}Mi..{}Mi (AGENT_MIN_MEMORY, AGENT_MAX_MEMORY)",
                    bounds.min_memory_bytes >> 20,
                    bounds.max_memory_bytes >> 20
                ));
            }
            Ok(Some(b))
        };
        let (cr, cl) = (
            cpu("cpu_request", &self.cpu_request)?,
            cpu("cpu_limit", &self.cpu_limit)?,
        );
        let (mr, ml) = (
            mem("memory_request", &self.memory_request)?,
            mem("memory_limit", &self.memory_limit)?,
        );
        if let (Some(r), Some(l)) = (cr, cl) {
            if r > l {
                return Err("cpu_request must not exceed cpu_limit".into());
            }
        }
        if let (Some(r), Some(l)) = (mr, ml) {
            if r > l {
                return Err("memory_request must not exceed memory_limit".into());
            }
        }
        Ok(())
    }
}

/// `250m` → 250, `1` → 1000, `1.5` → 1500.
pub fn parse_cpu_millis(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Some(m) = v.strip_suffix('m') {
        return m.parse().ok();
    }
    let f: f64 = v.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| (f * 1000.0).round() as u64)
}

/// `512Mi`, `1Gi`, `1G`, `1000000` → bytes.
pub fn parse_memory_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu_millis("250m"), Some(250));
        assert_eq!(parse_cpu_millis("1.5"), Some(1500));
        assert_eq!(parse_cpu_millis("two"), None);
        assert_eq!(parse_memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(parse_memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory_bytes("1.5Gi"), None);
        assert_eq!(parse_memory_bytes("12Qi"), None);
    }

    #[test]
    fn validation_and_updates() {
        let b = ResourceBounds::default();
        assert!(AgentResources::platform_default().validate(&b).is_ok());
        let r = AgentResources {
            cpu_limit: Some("8".into()),
            ..Default::default()
        };
        assert!(r.validate(&b).unwrap_err().contains("cpu_limit"));
        let r = AgentResources {
            memory_request: Some("1Gi".into()),
            memory_limit: Some("512Mi".into()),
            ..Default::default()
        };
        assert!(r.validate(&b).unwrap_err().contains("must not exceed"));
        let r = AgentResources {
            memory_limit: Some("1Mi".into()),
            ..Default::default()
        };
        assert!(r.validate(&b).is_err());
        let cur = AgentResources {
            cpu_limit: Some("1".into()),
            memory_limit: Some("1Gi".into()),
            ..Default::default()
        };
        let next = cur.updated(&AgentResources {
            cpu_limit: Some(String::new()),
            memory_request: Some("512Mi".into()),
            ..Default::default()
        });
        assert_eq!(next.cpu_limit, None, "\"\" goes back to the default");
        assert_eq!(next.memory_limit.as_deref(), Some("1Gi"));
        assert_eq!(next.memory_request.as_deref(), Some("512Mi"));
        let eff = next.over(&AgentResources::platform_default());
        assert_eq!(eff.cpu_limit.as_deref(), Some("500m"));
        assert_eq!(eff.memory_limit.as_deref(), Some("1Gi"));
    }
}
