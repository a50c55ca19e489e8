//! Composition root: read config, pick an adapter for every port, wire, serve.

use std::sync::Arc;

use anyhow::{bail, Context};
use common::cache::{EndpointCache, MemoryCache};
use common::lock::{MemoryLock, WakeLock};
use common::registry::Registry;
use common::state::{DirStateStore, StateStore};
use common::telegram::TelegramClient;
use orchestrator::api::ApiConfig;
use orchestrator::app::{App, Ports, Settings};
use orchestrator::config::{Config, RuntimeKind};
use orchestrator::leader::{AlwaysLeader, LeaderElector};
use orchestrator::runtime::local::{self, LocalRuntime};
use orchestrator::runtime::Runtime;

#[cfg(not(feature = "kube"))]
mod kube_wiring {
    //! Stand-ins for a build without the `kube` feature (`make bench`): RUNTIME=kubernetes is refused.
    /// No value exists: code holding a client is unreachable in this build.
    #[derive(Clone)]
    pub enum Client {}

    pub async fn connect() -> anyhow::Result<Client> {
        anyhow::bail!("RUNTIME=kubernetes: this orchestrator was built without the `kube` feature")
    }
}
#[cfg(feature = "kube")]
mod kube_wiring {
    pub type Client = kube::Client;

    pub async fn connect() -> anyhow::Result<Client> {
        use anyhow::Context;
        kube::Client::try_default()
            .await
            .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")
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
    if config.api_token.is_none() {
        tracing::warn!("API_TOKEN is not set: the API accepts requests without a token");
    }

    let registry: Arc<dyn Registry> = if config.use_dynamodb {
        let r = common::registry::dynamodb::DynamoRegistry::connect(
            &config.dynamodb_table,
            config.dynamodb_endpoint.as_deref(),
            config.aws_region.as_deref(),
        )
        .await
        .context("connecting to DynamoDB")?;
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

    let (lock, cache): (Arc<dyn WakeLock>, Arc<dyn EndpointCache>) = match &config.redis_addr {
        Some(addr) => {
            let pool = common::redis_pool::pool(addr).context("REDIS_ADDR")?;
            (
                Arc::new(common::lock::redis::RedisLock::new(pool.clone())),
                Arc::new(common::cache::redis::RedisCache::new(pool)),
            )
        }
        None => (Arc::new(MemoryLock::new()), Arc::new(MemoryCache::new())),
    };

    let state: Arc<dyn StateStore> = if config.use_s3 {
        s3_state_store(&config).await?
    } else {
        Arc::new(DirStateStore::new(config.data_dir.join("state")))
    };

    // One Kubernetes client (in-cluster config or KUBECONFIG) for runtime, lease and warm pool.
    let (runtime, kube_client): (Arc<dyn Runtime>, _) = match config.runtime {
        RuntimeKind::Local => {
            let r = LocalRuntime::new(
                &config.data_dir,
                local::agent_command(config.agent_command.clone()),
                state.clone(),
                local::DEFAULT_GRACE,
            );
            let adopted = r.adopt_running().await;
            if adopted > 0 {
                tracing::info!(
                    adopted,
                    "local runtime: adopted agents left by a previous run"
                );
            }
            (Arc::new(r), None)
        }
        RuntimeKind::Kubernetes => {
            let client = kube_wiring::connect().await?;
            (kubernetes_runtime(&config, client.clone())?, Some(client))
        }
    };
    let (leader, leader_name) = leader_elector(&config, kube_client.as_ref());

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
        },
        TelegramClient::new(&config.telegram_api_url),
        Settings::from_config(&config),
    );
    if let Some(client) = kube_client {
        spawn_warm_pool(&app, &config, client);
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

#[cfg(not(feature = "kube"))]
fn kubernetes_runtime(_: &Config, client: kube_wiring::Client) -> anyhow::Result<Arc<dyn Runtime>> {
    match client {}
}

#[cfg(not(feature = "kube"))]
fn leader_elector(
    _: &Config,
    kube: Option<&kube_wiring::Client>,
) -> (Arc<dyn LeaderElector>, &'static str) {
    if let Some(client) = kube {
        match *client {}
    }
    (Arc::new(AlwaysLeader), "always")
}

#[cfg(not(feature = "kube"))]
fn spawn_warm_pool(_: &App, _: &Config, client: kube_wiring::Client) {
    match client {}
}

/// Deployment `warm-pool`, checked every 30 s (DESIGN.md).
#[cfg(feature = "kube")]
fn spawn_warm_pool(app: &App, config: &Config, client: kube::Client) {
    let pool = orchestrator::warm_pool::WarmPoolManager::new(
        client,
        k8s_settings(config),
        config.warm_pool_target,
        std::time::Duration::from_secs(30),
    );
    app.tasks.spawn(pool.run(app.shutdown.clone()));
}

/// The Kubernetes runtime (pods `zeroclaw-{id}`, PV/PVC/Secret, warm pool).
#[cfg(feature = "kube")]
fn kubernetes_runtime(config: &Config, client: kube::Client) -> anyhow::Result<Arc<dyn Runtime>> {
    use orchestrator::runtime::kubernetes::KubeRuntime;
    Ok(Arc::new(KubeRuntime::new(client, k8s_settings(config))))
}

#[cfg(feature = "kube")]
fn k8s_settings(config: &Config) -> common::k8s::K8sSettings {
    common::k8s::K8sSettings {
        namespace: config.k8s_namespace.clone(),
        image: config.zeroclaw_image.clone(),
        runtime_class: config.kata_runtime_class.clone(),
        agent_port: config.agent_port,
        s3_bucket: config.s3_bucket.clone(),
        state_storage_class: config.state_storage_class.clone(),
    }
}

/// The idle controller's leader election; one replica without Kubernetes always leads.
/// With Kubernetes: Lease `orchestrator-leader`, identity `LEADER_ELECTION_ID`, else `POD_NAME`.
#[cfg(feature = "kube")]
fn leader_elector(
    config: &Config,
    kube: Option<&kube::Client>,
) -> (Arc<dyn LeaderElector>, &'static str) {
    let Some(client) = kube else {
        return (Arc::new(AlwaysLeader), "always");
    };
    let identity = config
        .leader_election_id
        .clone()
        .or_else(|| config.pod_name.clone())
        .unwrap_or_else(|| format!("orchestrator-{}", uuid::Uuid::new_v4().simple()));
    use orchestrator::leader_lease::{LeaseElector, LeaseTiming};
    let elector = LeaseElector::new(
        client.clone(),
        &config.k8s_namespace,
        common::k8s::LEADER_LEASE_NAME,
        &identity,
        LeaseTiming::default(),
    );
    (Arc::new(elector), "kubernetes-lease")
}
