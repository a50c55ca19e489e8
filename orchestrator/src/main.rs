//! Composition root: read config, pick an adapter for every port, wire, serve.

use std::sync::Arc;

use anyhow::{bail, Context};
use common::cache::{EndpointCache, MemoryCache};
use common::lock::{MemoryLock, WakeLock};
use common::registry::Registry;
use common::state::{DirStateStore, StateStore};
use common::telegram::TelegramClient;
use common::webhook_record::{MemoryWebhookRecords, RedisWebhookRecords, WebhookRecords};
use orchestrator::api::ApiConfig;
use orchestrator::app::{App, Ports, Settings};
use orchestrator::config::{Config, RuntimeKind};
use orchestrator::leader::{AlwaysLeader, LeaderElector};
use orchestrator::runtime::local::{self, LocalRuntime};
use orchestrator::runtime::Runtime;

/// The Kubernetes runtime, the Lease leader election and the warm pool, from one client.
#[cfg(feature = "kube")]
mod kubernetes {
    use std::sync::Arc;

    use anyhow::Context;
    use orchestrator::config::Config;
    use orchestrator::leader::LeaderElector;
    use orchestrator::leader_lease::{LeaseElector, LeaseTiming};
    use orchestrator::runtime::kubernetes::KubeRuntime;
    use orchestrator::runtime::Runtime;
    use orchestrator::warm_pool::WarmPoolManager;

    /// How often the warm pool manager checks Deployment `warm-pool` (every 30 s).
    const WARM_POOL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

    pub struct Kubernetes {
        runtime: Arc<dyn Runtime>,
        leader: Arc<dyn LeaderElector>,
        warm_pool: WarmPoolManager,
    }

    /// One client (in-cluster config or KUBECONFIG) for runtime, lease and warm pool. The lease
    /// is `orchestrator-leader`, held as `LEADER_ELECTION_ID`, else `POD_NAME`.
    pub async fn connect(config: &Config) -> anyhow::Result<Kubernetes> {
        let client = kube::Client::try_default()
            .await
            .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
        let settings = common::k8s::K8sSettings {
            namespace: config.k8s_namespace.clone(),
            image: config.zeroclaw_image.clone(),
            runtime_class: config.kata_runtime_class.clone(),
            agent_port: config.agent_port,
            s3_bucket: config.s3_bucket.clone(),
            state_storage_class: config.state_storage_class.clone(),
        };
        let identity = config
            .leader_election_id
            .clone()
            .or_else(|| config.pod_name.clone())
            .unwrap_or_else(|| format!("orchestrator-{}", uuid::Uuid::new_v4().simple()));
        Ok(Kubernetes {
            leader: Arc::new(LeaseElector::new(
                client.clone(),
                &config.k8s_namespace,
                common::k8s::LEADER_LEASE_NAME,
                &identity,
                LeaseTiming::default(),
            )),
            warm_pool: WarmPoolManager::new(
                client.clone(),
                settings.clone(),
                config.warm_pool_target,
                WARM_POOL_INTERVAL,
            ),
            runtime: Arc::new(
                KubeRuntime::new(client, settings).with_agent_config(config.agent_defaults.clone()),
            ),
        })
    }

    impl Kubernetes {
        pub fn parts(&self) -> (Arc<dyn Runtime>, Arc<dyn LeaderElector>) {
            (self.runtime.clone(), self.leader.clone())
        }

        pub fn start_warm_pool(self, app: &orchestrator::app::App) {
            app.tasks.spawn(self.warm_pool.run(app.shutdown.clone()));
        }
    }
}

/// A build without the `kube` feature (`make bench`) refuses RUNTIME=kubernetes.
#[cfg(not(feature = "kube"))]
mod kubernetes {
    use std::sync::Arc;

    use orchestrator::leader::LeaderElector;
    use orchestrator::runtime::Runtime;

    /// Never built: `connect` always fails.
    pub enum Kubernetes {}

    pub async fn connect(_: &orchestrator::config::Config) -> anyhow::Result<Kubernetes> {
        anyhow::bail!("RUNTIME=kubernetes: this orchestrator was built without the `kube` feature")
    }

    impl Kubernetes {
        pub fn parts(&self) -> (Arc<dyn Runtime>, Arc<dyn LeaderElector>) {
            match *self {}
        }

        pub fn start_warm_pool(self, _: &orchestrator::app::App) {
            match self {}
        }
    }
}

fn main() {
    if let Some(code) = common::call::from_args() {
        std::process::exit(code);
    }
    let _telemetry = match common::telemetry::init("orchestrator") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("orchestrator: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = start() {
        // One line naming what is wrong (e.g. the variable), no backtrace.
        eprintln!("orchestrator: {e:#}");
        std::process::exit(1);
    }
}

fn start() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(run(config));
    // Do not wait on stray blocking work (a DNS lookup, a backend call) past the shutdown budget.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.runtime == RuntimeKind::Kubernetes
        && config.redis_addr.is_none()
        && !config.allow_single_replica
    {
        bail!(
            "RUNTIME=kubernetes needs REDIS_ADDR: an in-process wake lock is unsafe with more than \
             one replica (set ALLOW_SINGLE_REPLICA=true to run a single replica without Redis)"
        );
    }
    if config.runtime == RuntimeKind::Kubernetes
        && !config.use_dynamodb
        && !config.allow_sqlite_registry
        && !config.allow_single_replica
    {
        bail!(
            "RUNTIME=kubernetes without DYNAMODB_TABLE: the registry would be a SQLite file private to \
             this replica (the Go platform used DynamoDB `tenant-registry` by default); set \
             DYNAMODB_TABLE, or ALLOW_SQLITE_REGISTRY=true to run on SQLite on purpose"
        );
    }
    if config.api_token.is_none() {
        tracing::warn!("API_TOKEN is not set: the API accepts requests without a token");
    }
    if config.webhook_secret.is_none() {
        tracing::warn!("WEBHOOK_SECRET is not set: webhooks are registered without a secret token");
    }

    let registry: Arc<dyn Registry> = if config.use_dynamodb {
        let r = common::registry::dynamodb::DynamoRegistry::connect(
            &config.dynamodb_table,
            config.dynamodb_endpoint.as_deref(),
            config.aws_region.as_deref(),
        )
        .await
        .context("connecting to DynamoDB")?;
        let r = match &config.dynamodb_events_table {
            Some(t) => r.with_events_table(t),
            None => r,
        };
        if config.dynamodb_endpoint.is_some() {
            r.ensure_table()
                .await
                .context("creating the DynamoDB table")?;
        }
        Arc::new(r)
    } else {
        let path = config.data_dir.join("registry.db");
        Arc::new(
            common::registry::sqlite::SqliteRegistry::open(&path)
                .with_context(|| format!("opening {}", path.display()))?,
        )
    };

    let (lock, cache, webhook_records): (
        Arc<dyn WakeLock>,
        Arc<dyn EndpointCache>,
        Arc<dyn WebhookRecords>,
    ) = match &config.redis_addr {
        Some(addr) => {
            let pool = common::redis_pool::pool(addr).context("REDIS_ADDR")?;
            common::redis_pool::check_credentials(&pool)
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
        None => (
            Arc::new(MemoryLock::new()),
            Arc::new(MemoryCache::new()),
            Arc::new(MemoryWebhookRecords::default()),
        ),
    };

    let state: Arc<dyn StateStore> = if config.use_s3 {
        s3_state_store(&config).await?
    } else {
        Arc::new(DirStateStore::new(config.data_dir.join("state")))
    };

    let (runtime, leader, leader_name, kubernetes): (
        Arc<dyn Runtime>,
        Arc<dyn LeaderElector>,
        _,
        _,
    ) = match config.runtime {
        RuntimeKind::Local => {
            let r = LocalRuntime::new(
                &config.data_dir,
                local::agent_command(config.agent_command.clone()),
                state.clone(),
                local::DEFAULT_GRACE,
            )
            .with_agent_config(config.agent_defaults.clone(), config.llm_api_key.clone());
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
        RuntimeKind::Kubernetes => {
            let k = kubernetes::connect(&config).await?;
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

    let app = App::new(
        Ports {
            registry,
            lock,
            cache,
            state,
            runtime,
            leader,
            webhook_records,
        },
        TelegramClient::new(&config.telegram_api_url),
        Settings::from_config(&config),
    );
    if let Some(k) = kubernetes {
        k.start_warm_pool(&app);
    }
    let api = ApiConfig {
        api_token: config.api_token.clone(),
    };
    orchestrator::server::serve(app, api, config.port)
        .await
        .with_context(|| format!("serving on port {}", config.port))
}

#[cfg(feature = "s3")]
async fn s3_state_store(config: &Config) -> anyhow::Result<Arc<dyn StateStore>> {
    let s = common::state::s3::S3StateStore::connect(
        &config.s3_bucket,
        config.s3_endpoint.as_deref(),
        config.aws_region.as_deref(),
    )
    .await
    .context("connecting to S3")?;
    if config.s3_endpoint.is_some() {
        s.ensure_bucket().await.context("creating the S3 bucket")?;
    }
    Ok(Arc::new(s))
}

#[cfg(not(feature = "s3"))]
async fn s3_state_store(_: &Config) -> anyhow::Result<Arc<dyn StateStore>> {
    bail!("STATE_STORE=s3: this orchestrator was built without the `s3` feature")
}
