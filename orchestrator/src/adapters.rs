//! Adapter selection: the one place where the typed configuration becomes an adapter for every
//! port (start-up wiring, so `anyhow` errors that name what could not be reached).

use std::sync::Arc;

use anyhow::Context;
use common::cache::{EndpointCache, MemoryCache};
use common::config::SharedBackend;
use common::lock::{MemoryLock, WakeLock};
use common::registry::Registry;
use common::state::{DirStateStore, StateStore};
use common::webhook_record::{MemoryWebhookRecords, RedisWebhookRecords, WebhookRecords};

use crate::app::{App, Ports};
use crate::config::{Config, RegistryBackend, RuntimeConfig, StateBackend};
use crate::leader::{AlwaysLeader, LeaderElector};
use crate::runtime::local::{self, LocalRuntime};
use crate::runtime::Runtime;

/// The ports, and what runs beside the app once it exists.
pub struct Adapters {
    pub ports: Ports,
    pub background: Background,
}

/// Background work the adapters own (the warm pool on Kubernetes).
pub struct Background(Option<kubernetes::Kubernetes>);

impl Background {
    /// Starts it as tasks of `app` (stopped and awaited at its shutdown).
    pub fn start(self, app: &App) {
        if let Some(k) = self.0 {
            k.start_warm_pool(app);
        }
    }
}

/// Refuses an unsafe deployment, then connects every adapter the configuration names.
pub async fn build(config: &Config) -> anyhow::Result<Adapters> {
    if let Some(why) = config.refusal() {
        anyhow::bail!(why);
    }
    let registry: Arc<dyn Registry> = match &config.registry {
        RegistryBackend::Dynamo {
            table,
            events_table,
            endpoint,
            region,
        } => {
            let r = common::registry::dynamodb::DynamoRegistry::connect(
                table,
                endpoint.as_deref(),
                region.as_deref(),
            )
            .await
            .context("connecting to DynamoDB")?;
            let r = match events_table {
                Some(t) => r.with_events_table(t),
                None => r,
            };
            if endpoint.is_some() {
                r.ensure_table()
                    .await
                    .context("creating the DynamoDB table")?;
            }
            Arc::new(r)
        }
        RegistryBackend::Sqlite { path } => Arc::new(
            common::registry::sqlite::SqliteRegistry::open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
    };

    let (lock, cache, webhook_records): (
        Arc<dyn WakeLock>,
        Arc<dyn EndpointCache>,
        Arc<dyn WebhookRecords>,
    ) = match &config.coordination {
        SharedBackend::Redis { url } => {
            let pool = common::redis_pool::connect(url)
                .await
                .context("REDIS_ADDR")?;
            (
                Arc::new(common::lock::redis::RedisLock::new(pool.clone())),
                Arc::new(common::cache::GoEndpointFormat::wrap(
                    Arc::new(common::cache::redis::RedisCache::new(pool.clone())),
                    config.agent_port,
                )),
                Arc::new(RedisWebhookRecords::new(pool)),
            )
        }
        SharedBackend::Local => (
            Arc::new(MemoryLock::new()),
            Arc::new(MemoryCache::new()),
            Arc::new(MemoryWebhookRecords::default()),
        ),
    };

    let state: Arc<dyn StateStore> = match &config.state {
        StateBackend::S3 {
            bucket,
            endpoint,
            region,
        } => s3_state_store(bucket, endpoint.as_deref(), region.as_deref()).await?,
        StateBackend::Local { dir } => Arc::new(DirStateStore::new(dir.clone())),
    };

    let (runtime, leader, leader_name, kubernetes): (
        Arc<dyn Runtime>,
        Arc<dyn LeaderElector>,
        _,
        _,
    ) = match &config.runtime {
        RuntimeConfig::Local {
            agent_command,
            llm_api_key,
        } => {
            let r = LocalRuntime::new(
                &config.data_dir,
                local::agent_command(agent_command.clone()),
                state.clone(),
                local::DEFAULT_GRACE,
            )
            .with_agent_config(config.agent_defaults.clone(), llm_api_key.clone())
            .with_orchestrator_url(
                config
                    .agent_orchestrator_url
                    .clone()
                    .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.port)),
            );
            let adopted = r.adopt_running().await;
            if adopted > 0 {
                tracing::info!(
                    adopted,
                    "local runtime: adopted agents left by a previous run"
                );
            }
            // One replica without Kubernetes always leads.
            (Arc::new(r), Arc::new(AlwaysLeader), "always", None)
        }
        RuntimeConfig::Kubernetes { .. } => {
            let k = kubernetes::connect(config).await?;
            let (runtime, leader) = k.parts();
            (runtime, leader, "kubernetes-lease", Some(k))
        }
    };

    tracing::info!(
        registry = registry.name(),
        lock = lock.name(),
        cache = cache.name(),
        state = state.name(),
        runtime = runtime.name(),
        leader = leader_name,
        "adapters selected"
    );
    Ok(Adapters {
        ports: Ports {
            registry,
            lock,
            cache,
            state,
            runtime,
            leader,
            webhook_records,
        },
        background: Background(kubernetes),
    })
}

#[cfg(feature = "s3")]
async fn s3_state_store(
    bucket: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> anyhow::Result<Arc<dyn StateStore>> {
    let s = common::state::s3::S3StateStore::connect(bucket, endpoint, region)
        .await
        .context("connecting to S3")?;
    if endpoint.is_some() {
        s.ensure_bucket().await.context("creating the S3 bucket")?;
    }
    Ok(Arc::new(s))
}

#[cfg(not(feature = "s3"))]
async fn s3_state_store(
    _: &str,
    _: Option<&str>,
    _: Option<&str>,
) -> anyhow::Result<Arc<dyn StateStore>> {
    anyhow::bail!("STATE_STORE=s3: this orchestrator was built without the `s3` feature")
}

/// The Kubernetes runtime, the Lease leader election and the warm pool, from one client.
#[cfg(feature = "kube")]
mod kubernetes {
    use std::sync::Arc;

    use anyhow::Context;

    use crate::config::{Config, RuntimeConfig, StateBackend};
    use crate::leader::LeaderElector;
    use crate::leader_lease::{LeaseElector, LeaseTiming};
    use crate::runtime::kubernetes::{KubeRuntime, WarmAgents};
    use crate::runtime::Runtime;
    use crate::warm_pool::WarmPoolManager;

    /// How often the warm pool manager checks Deployment `warm-pool` (every 30 s).
    const WARM_POOL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

    pub struct Kubernetes {
        runtime: Arc<dyn Runtime>,
        leader: Arc<dyn LeaderElector>,
        warm_pool: WarmPoolManager,
    }

    /// One client (in-cluster config or KUBECONFIG) for runtime, lease and warm pool. The lease
    /// is `orchestrator-leader`.
    pub async fn connect(config: &Config) -> anyhow::Result<Kubernetes> {
        let RuntimeConfig::Kubernetes {
            image,
            runtime_class,
            s3_bucket,
            state_storage_class,
            warm_pool_target,
            warm_agents: warm_agents_on,
            warm_grant_ttl,
            identity,
        } = &config.runtime
        else {
            anyhow::bail!("not the Kubernetes runtime");
        };
        let client = kube::Client::try_default()
            .await
            .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
        let settings = common::k8s::K8sSettings {
            namespace: config.k8s_namespace.clone(),
            image: image.clone(),
            runtime_class: runtime_class.clone(),
            agent_port: config.agent_port,
            s3_bucket: s3_bucket.clone(),
            state_storage_class: state_storage_class.clone(),
            orchestrator_url: config.agent_orchestrator_url.clone(),
        };
        let warm_agents = if *warm_agents_on {
            warm_agents(&config.state, *warm_grant_ttl).await?
        } else {
            None
        };
        let mut runtime = KubeRuntime::new(client.clone(), settings.clone())
            .with_agent_config(config.agent_defaults.clone());
        if let Some(agents) = warm_agents {
            runtime = runtime.with_warm_agents(agents);
            tracing::info!("warm pool: warm agents (WARM_POOL_MODE=agent)");
        }
        let warm_pool_agents = runtime.has_warm_agents();
        Ok(Kubernetes {
            leader: Arc::new(LeaseElector::new(
                client.clone(),
                &config.k8s_namespace,
                common::k8s::LEADER_LEASE_NAME,
                identity,
                LeaseTiming::default(),
            )),
            warm_pool: WarmPoolManager::new(
                client.clone(),
                settings.clone(),
                *warm_pool_target,
                WARM_POOL_INTERVAL,
            )
            .with_warm_agents(warm_pool_agents),
            runtime: Arc::new(runtime),
        })
    }

    /// `WARM_POOL_MODE=agent` with the S3 state store's presigned grants; without S3 (no way to
    /// hand a running pod its state) the pool keeps nodes warm instead.
    #[cfg(feature = "s3")]
    async fn warm_agents(
        state: &StateBackend,
        grant_ttl: std::time::Duration,
    ) -> anyhow::Result<Option<WarmAgents>> {
        let StateBackend::S3 {
            bucket,
            endpoint,
            region,
        } = state
        else {
            tracing::warn!("WARM_POOL_MODE=agent needs STATE_STORE=s3 for the state grants: the warm pool keeps nodes warm instead");
            return Ok(None);
        };
        let s3 = common::state::s3::S3StateStore::connect(
            bucket,
            endpoint.as_deref(),
            region.as_deref(),
        )
        .await
        .context("connecting to S3 for the warm agents' state grants")?;
        Ok(Some(WarmAgents {
            grants: Arc::new(s3),
            grant_ttl,
        }))
    }

    #[cfg(not(feature = "s3"))]
    async fn warm_agents(
        _: &StateBackend,
        _: std::time::Duration,
    ) -> anyhow::Result<Option<WarmAgents>> {
        Ok(None)
    }

    impl Kubernetes {
        pub fn parts(&self) -> (Arc<dyn Runtime>, Arc<dyn LeaderElector>) {
            (self.runtime.clone(), self.leader.clone())
        }

        pub fn start_warm_pool(self, app: &crate::app::App) {
            app.tasks.spawn(self.warm_pool.run(app.shutdown.clone()));
        }
    }
}

/// A build without the `kube` feature (`make bench`) refuses RUNTIME=kubernetes.
#[cfg(not(feature = "kube"))]
mod kubernetes {
    use std::sync::Arc;

    use crate::leader::LeaderElector;
    use crate::runtime::Runtime;

    /// Never built: `connect` always fails.
    pub enum Kubernetes {}

    pub async fn connect(_: &crate::config::Config) -> anyhow::Result<Kubernetes> {
        anyhow::bail!("RUNTIME=kubernetes: this orchestrator was built without the `kube` feature")
    }

    impl Kubernetes {
        pub fn parts(&self) -> (Arc<dyn Runtime>, Arc<dyn LeaderElector>) {
            match *self {}
        }

        pub fn start_warm_pool(self, _: &crate::app::App) {
            match self {}
        }
    }
}
