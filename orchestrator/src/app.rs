//! The service's state: its ports, settings and shared machinery, handed to every component.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::cache::EndpointCache;
use common::lock::WakeLock;
use common::registry::Registry;
use common::state::StateStore;
use common::telegram::TelegramClient;
use common::webhook_record::WebhookRecords;
use common::wire::{Endpoint, AGENT_PAIRED_HEALTH_PATH};
use common::{Secret, TenantId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::error::Error;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::tenant_lock::TenantLocks;

/// What the logic needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub default_idle_timeout_s: u64,
    pub wake_lock_ttl: Duration,
    /// How long a start may take before the wake fails.
    pub pod_ready_wait: Duration,
    pub idle_check_interval: Duration,
    pub reconcile_interval: Duration,
    /// When set, tenants' Telegram webhooks point at `{router_public_url}/tg/{id}`.
    pub router_public_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    /// Stop every agent at shutdown (local runtime: agents are our children).
    pub stop_agents_on_shutdown: bool,
    /// Agents' CPU/memory where a tenant sets none.
    pub agent_resources: common::resources::AgentResources,
    pub resource_bounds: common::resources::ResourceBounds,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: common::tenant::DEFAULT_NAMESPACE.into(),
            default_idle_timeout_s: common::tenant::DEFAULT_IDLE_TIMEOUT_S,
            wake_lock_ttl: Duration::from_secs(240),
            pod_ready_wait: Duration::from_secs(210),
            idle_check_interval: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(60),
            router_public_url: None,
            webhook_secret: None,
            stop_agents_on_shutdown: false,
            agent_resources: common::resources::AgentResources::platform_default(),
            resource_bounds: common::resources::ResourceBounds::default(),
        }
    }
}

impl Settings {
    pub fn from_config(c: &Config) -> Self {
        Settings {
            namespace: c.k8s_namespace.clone(),
            default_idle_timeout_s: c.default_idle_timeout_s,
            wake_lock_ttl: c.wake_lock_ttl,
            pod_ready_wait: c.pod_ready_wait,
            idle_check_interval: c.idle_check_interval,
            reconcile_interval: c.reconcile_interval,
            router_public_url: c.router_public_url.clone(),
            webhook_secret: c.webhook_secret.clone(),
            stop_agents_on_shutdown: c.runtime.kind() == crate::config::RuntimeKind::Local,
            agent_resources: c.agent_resources.clone(),
            resource_bounds: c.resource_bounds,
        }
    }

    /// How long a caller waits for a wake (its own or another replica's) before giving up.
    pub fn wake_wait(&self) -> Duration {
        self.pod_ready_wait + Duration::from_secs(15)
    }
}

/// The adapters chosen for each port.
pub struct Ports {
    pub registry: Arc<dyn Registry>,
    pub lock: Arc<dyn WakeLock>,
    pub cache: Arc<dyn EndpointCache>,
    pub state: Arc<dyn StateStore>,
    pub runtime: Arc<dyn Runtime>,
    pub leader: Arc<dyn LeaderElector>,
    /// What this platform registered as each tenant's webhook (shared with the router in Redis).
    pub webhook_records: Arc<dyn WebhookRecords>,
}

pub struct App {
    pub registry: Arc<dyn Registry>,
    pub lock: Arc<dyn WakeLock>,
    pub cache: Arc<dyn EndpointCache>,
    pub state: Arc<dyn StateStore>,
    pub runtime: Arc<dyn Runtime>,
    pub leader: Arc<dyn LeaderElector>,
    pub webhook_records: Arc<dyn WebhookRecords>,
    pub telegram: TelegramClient,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub locks: TenantLocks,
    /// The idle controller's own clock for activity (never the stamping replica's).
    pub idle_clock: crate::idle_clock::IdleClock,
    /// Owns every task spawned for the service (wakes, loops, lock clean-up); awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the service starts shutting down.
    pub shutdown: CancellationToken,
    /// Client for agents' health checks.
    pub http: reqwest::Client,
    /// The main runtime: all backend I/O runs here, not on the HTTP workers' runtimes, so that
    /// pooled connections outlive the workers and a request's work survives its caller leaving.
    rt: tokio::runtime::Handle,
}

impl App {
    pub fn new(ports: Ports, telegram: TelegramClient, settings: Settings) -> Arc<Self> {
        let tasks = TaskTracker::new();
        Arc::new(App {
            locks: TenantLocks::new(ports.lock.clone(), settings.wake_lock_ttl, tasks.clone())
                .with_floors(ports.registry.clone()),
            idle_clock: Default::default(),
            registry: ports.registry,
            lock: ports.lock,
            cache: ports.cache,
            state: ports.state,
            runtime: ports.runtime,
            leader: ports.leader,
            webhook_records: ports.webhook_records,
            telegram,
            settings,
            metrics: Arc::new(Metrics::new()),
            tasks,
            shutdown: CancellationToken::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .connect_timeout(Duration::from_secs(2))
                .build()
                .expect("reqwest client"),
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// Runs `work` as an owned task on the main runtime and waits for it: it completes (and frees
    /// any tenant lock) even if the caller goes away. It stays in the caller's span (and trace).
    pub async fn run_owned<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        self.tasks
            .spawn_on(work.in_current_span(), &self.rt)
            .await
            .map_err(|e| Error::Internal(format!("task failed: {e}")))?
    }

    /// True when the agent at `endpoint` answers `GET /health` with 200.
    pub async fn agent_healthy(&self, endpoint: &str) -> bool {
        matches!(
            self.http.get(format!("http://{endpoint}/health")).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// True when the agent at `endpoint` is this tenant's: `GET /api/health` with its credential
    /// answers 200 (another tenant's agent at a reused address answers 401, so a bare 2xx from
    /// `/health` proves nothing).
    pub async fn agent_is(&self, endpoint: &Endpoint, agent_token: &Secret) -> bool {
        if agent_token.is_empty() {
            return false;
        }
        matches!(
            self.http
                .get(format!("http://{endpoint}{AGENT_PAIRED_HEALTH_PATH}"))
                .bearer_auth(agent_token.expose())
                .send()
                .await,
            Ok(r) if r.status().is_success()
        )
    }

    /// Drops the tenant's cached endpoint; a failure only delays the router noticing.
    pub async fn forget_endpoint(&self, id: &TenantId) {
        if let Err(e) = self.cache.remove(id).await {
            tracing::warn!(tenant = %id, error = %e, "endpoint cache remove failed");
        }
    }
}
