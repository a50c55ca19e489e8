//! Orchestrator configuration from the environment.

use std::path::PathBuf;
use std::time::Duration;

use common::config::{self as env, ConfigError, SharedBackend};
use common::resources::{parse_cpu_millis, parse_memory_bytes, AgentResources, ResourceBounds};
use common::tenant::validate_idle_timeout;
use common::Secret;

/// Where tenant agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Local,
    Kubernetes,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Local => "local",
            RuntimeKind::Kubernetes => "kubernetes",
        }
    }

    /// `RUNTIME` wins; else `LOCAL_MODE=true` means local; else Kubernetes inside a cluster, local outside.
    pub fn select(
        runtime: Option<&str>,
        local_mode: bool,
        in_cluster: bool,
    ) -> Result<Self, ConfigError> {
        match runtime.map(|r| r.trim().to_ascii_lowercase()).as_deref() {
            Some("local") => Ok(RuntimeKind::Local),
            Some("kubernetes") => Ok(RuntimeKind::Kubernetes),
            Some(other) => Err(ConfigError {
                name: "RUNTIME".into(),
                reason: format!("{other:?} is not local or kubernetes"),
            }),
            None if local_mode => Ok(RuntimeKind::Local),
            None if in_cluster => Ok(RuntimeKind::Kubernetes),
            None => Ok(RuntimeKind::Local),
        }
    }
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryBackend {
    /// `{DATA_DIR}/registry.db`: private to this replica.
    Sqlite { path: PathBuf },
    /// `DYNAMODB_TABLE` (default `tenant-registry`) when it or `DYNAMODB_ENDPOINT` is set.
    Dynamo {
        table: String,
        /// Table of the tenants' event histories (default `{table}-events`).
        events_table: Option<String>,
        /// A local endpoint (tests, moto): the table is created when missing.
        endpoint: Option<String>,
        region: Option<String>,
    },
}

/// Where tenants' state (`/data`) is saved between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// `S3_BUCKET`, when `STATE_STORE=s3` or `S3_ENDPOINT` is set.
    S3 {
        bucket: String,
        /// A local endpoint (tests, moto): the bucket is created when missing.
        endpoint: Option<String>,
        region: Option<String>,
    },
    /// `{DATA_DIR}/state`.
    Local { dir: PathBuf },
}

/// Where tenant agents run, with what only that runtime reads.
#[derive(Debug, Clone)]
pub enum RuntimeConfig {
    Local {
        /// Program and arguments of the agent (`AGENT_COMMAND`); `None` means `tenant-agent`.
        agent_command: Option<Vec<String>>,
        /// `LLM_API_KEY`, handed to local agents as their env (in Kubernetes it comes from Secret
        /// `llm-credentials` instead); never stored in a tenant configuration.
        llm_api_key: Option<Secret>,
    },
    Kubernetes {
        image: String,
        /// Empty means no runtime class.
        runtime_class: String,
        /// The bucket the state claims mount (`S3_BUCKET`).
        s3_bucket: String,
        /// Storage class of tenant state claims (`s3-tenant-state`: S3 CSI static PVs).
        state_storage_class: String,
        warm_pool_target: u32,
        /// `WARM_POOL_MODE`: `agent` (default) runs warm agents that a wake assigns (needs
        /// `STATE_STORE=s3` for the state grants); `node` keeps placeholder pods, a claim pins the node.
        warm_agents: bool,
        /// `WARM_GRANT_TTL_S`: how long an assigned agent's presigned state URLs last (12 h).
        warm_grant_ttl: Duration,
        /// Holder name of the leader Lease: `LEADER_ELECTION_ID`, else `POD_NAME`, else random.
        identity: String,
    },
}

impl RuntimeConfig {
    pub fn kind(&self) -> RuntimeKind {
        match self {
            RuntimeConfig::Local { .. } => RuntimeKind::Local,
            RuntimeConfig::Kubernetes { .. } => RuntimeKind::Kubernetes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub data_dir: PathBuf,
    pub registry: RegistryBackend,
    /// The wake lock and the endpoint cache (`REDIS_ADDR`, else in-process).
    pub coordination: SharedBackend,
    pub state: StateBackend,
    pub runtime: RuntimeConfig,
    pub k8s_namespace: String,
    pub router_public_url: Option<String>,
    /// `AGENT_ORCHESTRATOR_URL`: this API as agents reach it, given to them as `ORCHESTRATOR_URL`
    /// to report their own activity. Local runtime default `http://127.0.0.1:{PORT}`; unset on
    /// Kubernetes, agents get none.
    pub agent_orchestrator_url: Option<String>,
    pub agent_port: u16,
    pub wake_lock_ttl: Duration,
    pub pod_ready_wait: Duration,
    pub idle_check_interval: Duration,
    pub reconcile_interval: Duration,
    pub default_idle_timeout_s: u64,
    pub api_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub telegram_api_url: String,
    pub allow_single_replica: bool,
    /// `ALLOW_SQLITE_REGISTRY=true`: a SQLite registry on Kubernetes on purpose (refused otherwise).
    pub allow_sqlite_registry: bool,
    /// `LLM_PROVIDER` (default `llamacpp`), `LLM_API_URL`, `LLM_MODEL`: what every tenant's
    /// `tenant.json` falls back to.
    pub agent_defaults: common::agent_config::PlatformDefaults,
    /// Agents' CPU/memory unless a tenant overrides them (`AGENT_CPU_REQUEST`, ...).
    pub agent_resources: AgentResources,
    /// What a tenant may ask for (`AGENT_MAX_CPU`, `AGENT_MAX_MEMORY`, `AGENT_MIN_MEMORY`).
    pub resource_bounds: ResourceBounds,
    /// `ALLOW_INSECURE=true`: start on Kubernetes without `API_TOKEN` / `WEBHOOK_SECRET`.
    pub allow_insecure: bool,
}

/// Platform resource defaults and bounds from the env; the defaults must lie within the bounds.
fn resources_from_env() -> Result<(AgentResources, ResourceBounds), ConfigError> {
    let d = AgentResources::platform_default();
    let value = |name: &str, default: &Option<String>| {
        Some(env::string(name, default.as_deref().unwrap_or_default()))
    };
    let resources = AgentResources {
        cpu_request: value("AGENT_CPU_REQUEST", &d.cpu_request),
        cpu_limit: value("AGENT_CPU_LIMIT", &d.cpu_limit),
        memory_request: value("AGENT_MEMORY_REQUEST", &d.memory_request),
        memory_limit: value("AGENT_MEMORY_LIMIT", &d.memory_limit),
    };
    let b = ResourceBounds::default();
    let quantity = |name: &str, default: u64, parse: fn(&str) -> Option<u64>| match env::var(name) {
        None => Ok(default),
        Some(v) => parse(&v).ok_or_else(|| ConfigError {
            name: name.into(),
            reason: format!("{v:?} is not a quantity"),
        }),
    };
    let bounds = ResourceBounds {
        max_cpu_millis: quantity("AGENT_MAX_CPU", b.max_cpu_millis, parse_cpu_millis)?,
        max_memory_bytes: quantity("AGENT_MAX_MEMORY", b.max_memory_bytes, parse_memory_bytes)?,
        min_memory_bytes: quantity("AGENT_MIN_MEMORY", b.min_memory_bytes, parse_memory_bytes)?,
    };
    resources.validate(&bounds).map_err(|reason| ConfigError {
        name: "AGENT_CPU_REQUEST/AGENT_CPU_LIMIT/AGENT_MEMORY_REQUEST/AGENT_MEMORY_LIMIT".into(),
        reason,
    })?;
    Ok((resources, bounds))
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(env::string("DATA_DIR", "./data"));
        let aws_region = env::var("AWS_REGION");
        let s3_bucket = env::string("S3_BUCKET", "zeroclaw-tenant-state");
        let dynamodb_endpoint = env::url("DYNAMODB_ENDPOINT", None)?;
        let registry = match (env::var("DYNAMODB_TABLE"), dynamodb_endpoint) {
            (None, None) => RegistryBackend::Sqlite {
                path: data_dir.join("registry.db"),
            },
            (table, endpoint) => RegistryBackend::Dynamo {
                table: table.unwrap_or_else(|| "tenant-registry".into()),
                events_table: env::var("DYNAMODB_EVENTS_TABLE"),
                endpoint,
                region: aws_region.clone(),
            },
        };
        let s3_endpoint = env::url("S3_ENDPOINT", None)?;
        let state_store = env::var("STATE_STORE").map(|s| s.trim().to_ascii_lowercase());
        let use_s3 = match state_store.as_deref() {
            None => s3_endpoint.is_some(),
            Some("s3") => true,
            Some("dir" | "directory" | "local") => s3_endpoint.is_some(),
            Some(other) => {
                return Err(ConfigError {
                    name: "STATE_STORE".into(),
                    reason: format!("{other:?} is not s3 or directory"),
                })
            }
        };
        let state = if use_s3 {
            StateBackend::S3 {
                bucket: s3_bucket.clone(),
                endpoint: s3_endpoint,
                region: aws_region,
            }
        } else {
            StateBackend::Local {
                dir: data_dir.join("state"),
            }
        };
        let runtime = match RuntimeKind::select(
            env::var("RUNTIME").as_deref(),
            env::flag("LOCAL_MODE")?,
            env::var("KUBERNETES_SERVICE_HOST").is_some(),
        )? {
            RuntimeKind::Local => RuntimeConfig::Local {
                agent_command: env::var("AGENT_COMMAND")
                    .map(|c| c.split_whitespace().map(str::to_owned).collect()),
                llm_api_key: env::var("LLM_API_KEY").map(Secret::new),
            },
            RuntimeKind::Kubernetes => RuntimeConfig::Kubernetes {
                image: env::string("ZEROCLAW_IMAGE", "zeroclaw:latest"),
                // Set-but-empty means "no runtime class", so `env::var` (empty = unset) does not fit.
                runtime_class: std::env::var("KATA_RUNTIME_CLASS")
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|_| "kata-qemu".into()),
                s3_bucket,
                state_storage_class: env::string("STATE_STORAGE_CLASS", "s3-tenant-state"),
                warm_pool_target: env::parse("WARM_POOL_TARGET", 10)?,
                warm_agents: match env::var("WARM_POOL_MODE")
                    .map(|m| m.trim().to_ascii_lowercase())
                    .as_deref()
                {
                    None | Some("agent") => true,
                    Some("node") => false,
                    Some(other) => {
                        return Err(ConfigError {
                            name: "WARM_POOL_MODE".into(),
                            reason: format!("{other:?} is not agent or node"),
                        })
                    }
                },
                warm_grant_ttl: seconds("WARM_GRANT_TTL_S", 43_200)?,
                identity: env::var("LEADER_ELECTION_ID")
                    .or_else(|| env::var("POD_NAME"))
                    .unwrap_or_else(|| format!("orchestrator-{}", uuid::Uuid::new_v4().simple())),
            },
        };
        let default_idle_timeout_s = validate_idle_timeout(env::parse(
            "DEFAULT_IDLE_TIMEOUT_S",
            common::tenant::DEFAULT_IDLE_TIMEOUT_S as i64,
        )?)
        .map_err(|reason| ConfigError {
            name: "DEFAULT_IDLE_TIMEOUT_S".into(),
            reason,
        })?;
        let (agent_resources, resource_bounds) = resources_from_env()?;
        let config = Config {
            agent_resources,
            resource_bounds,
            port: env::parse("PORT", 8080)?,
            data_dir,
            registry,
            coordination: SharedBackend::from_env(),
            state,
            runtime,
            k8s_namespace: env::string("K8S_NAMESPACE", common::tenant::DEFAULT_NAMESPACE),
            router_public_url: env::url("ROUTER_PUBLIC_URL", None)?,
            agent_orchestrator_url: env::url("AGENT_ORCHESTRATOR_URL", None)?,
            agent_port: env::parse("AGENT_PORT", 3000)?,
            wake_lock_ttl: seconds("WAKE_LOCK_TTL_S", 240)?,
            pod_ready_wait: seconds("POD_READY_WAIT_S", 210)?,
            idle_check_interval: seconds("IDLE_CHECK_INTERVAL_S", 30)?,
            reconcile_interval: seconds("RECONCILE_INTERVAL_S", 60)?,
            default_idle_timeout_s,
            api_token: env::secret("API_TOKEN"),
            webhook_secret: env::secret("WEBHOOK_SECRET"),
            telegram_api_url: env::url(
                "TELEGRAM_API_URL",
                Some(common::telegram::DEFAULT_API_URL),
            )?
            .unwrap_or_default(),
            allow_single_replica: env::flag("ALLOW_SINGLE_REPLICA")?,
            allow_sqlite_registry: env::flag("ALLOW_SQLITE_REGISTRY")?,
            agent_defaults: agent_defaults()?,
            allow_insecure: env::flag("ALLOW_INSECURE")?,
        };
        env::require_secrets(
            config.runtime.kind() == RuntimeKind::Kubernetes || env::on_kubernetes(),
            config.allow_insecure,
            &[
                ("API_TOKEN", config.api_token.is_some()),
                ("WEBHOOK_SECRET", config.webhook_secret.is_some()),
            ],
        )?;
        Ok(config)
    }

    /// Why this configuration must not start (a Kubernetes deployment that would be unsafe with
    /// more than one replica), as the one line the binary prints.
    pub fn refusal(&self) -> Option<&'static str> {
        if self.runtime.kind() != RuntimeKind::Kubernetes || self.allow_single_replica {
            return None;
        }
        if self.coordination == SharedBackend::Local {
            return Some(
                "RUNTIME=kubernetes needs REDIS_ADDR: an in-process wake lock is unsafe with more \
                 than one replica (set ALLOW_SINGLE_REPLICA=true to run a single replica without \
                 Redis)",
            );
        }
        if matches!(self.registry, RegistryBackend::Sqlite { .. }) && !self.allow_sqlite_registry {
            return Some(
                "RUNTIME=kubernetes without DYNAMODB_TABLE: the registry would be a SQLite file \
                 private to this replica (the Go platform used DynamoDB `tenant-registry` by \
                 default); set DYNAMODB_TABLE, or ALLOW_SQLITE_REGISTRY=true to run on SQLite on \
                 purpose",
            );
        }
        None
    }
}

fn agent_defaults() -> Result<common::agent_config::PlatformDefaults, ConfigError> {
    let d = common::agent_config::PlatformDefaults::default();
    let name = |var: &str, default: String| -> Result<String, ConfigError> {
        let v = env::string(var, &default);
        if v.chars().any(char::is_control) || v.chars().count() > 200 {
            return Err(ConfigError {
                name: var.into(),
                reason: "must be at most 200 characters with no control characters".into(),
            });
        }
        Ok(v)
    };
    Ok(common::agent_config::PlatformDefaults {
        provider: name("LLM_PROVIDER", d.provider)?,
        api_url: env::url("LLM_API_URL", None)?,
        model: name("LLM_MODEL", d.model)?,
        temperature: d.temperature,
    })
}

/// A whole number of seconds, at least 1.
fn seconds(name: &str, default: u64) -> Result<Duration, ConfigError> {
    let v: u64 = env::parse(name, default)?;
    if v == 0 {
        return Err(ConfigError {
            name: name.into(),
            reason: "must be a whole number of seconds, at least 1".into(),
        });
    }
    Ok(Duration::from_secs(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_selection() {
        use RuntimeKind::*;
        assert_eq!(RuntimeKind::select(None, false, false).unwrap(), Local);
        assert_eq!(RuntimeKind::select(None, false, true).unwrap(), Kubernetes);
        assert_eq!(RuntimeKind::select(None, true, true).unwrap(), Local);
        assert_eq!(
            RuntimeKind::select(Some("kubernetes"), true, false).unwrap(),
            Kubernetes
        );
        assert_eq!(
            RuntimeKind::select(Some("local"), false, true).unwrap(),
            Local
        );
        let err = RuntimeKind::select(Some("docker"), false, false).unwrap_err();
        assert!(err.to_string().contains("RUNTIME"), "{err}");
    }

    /// Each setting resolves once into the backend it selects, and the unsafe Kubernetes
    /// deployments are refused with the messages operators know. (Env is per process under
    /// nextest; the variables are the ones only this test sets.)
    #[test]
    fn backends_resolve_at_load_and_unsafe_deployments_are_refused() {
        for (k, v) in [
            ("RUNTIME", "kubernetes"),
            ("ALLOW_INSECURE", "true"),
            ("DATA_DIR", "/d"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("LEADER_ELECTION_ID", "me"),
        ] {
            std::env::set_var(k, v);
        }
        let c = Config::from_env().unwrap();
        assert!(c
            .refusal()
            .unwrap()
            .starts_with("RUNTIME=kubernetes needs REDIS_ADDR"));
        assert!(
            matches!(&c.runtime, RuntimeConfig::Kubernetes { identity, .. } if identity == "me")
        );
        assert_eq!(
            c.state,
            StateBackend::S3 {
                bucket: "zeroclaw-tenant-state".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: None
            }
        );
        std::env::set_var("REDIS_ADDR", "redis://127.0.0.1:6379");
        let c = Config::from_env().unwrap();
        assert!(c
            .refusal()
            .unwrap()
            .starts_with("RUNTIME=kubernetes without DYNAMODB_TABLE"));
        assert_eq!(
            c.registry,
            RegistryBackend::Sqlite {
                path: "/d/registry.db".into()
            }
        );
        std::env::set_var("DYNAMODB_TABLE", "t");
        let c = Config::from_env().unwrap();
        assert_eq!(c.refusal(), None);
        assert!(matches!(&c.registry, RegistryBackend::Dynamo { table, .. } if table == "t"));
        std::env::set_var("STATE_STORE", "nfs");
        let e = Config::from_env().unwrap_err();
        assert!(e.to_string().contains("STATE_STORE"), "{e}");
    }
}
