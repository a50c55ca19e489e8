//! Test support: an app on the real embedded adapters, a fake runtime whose "agents" are tiny HTTP
//! servers (the shared `common::stub`), and that stub for other neighbours.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::cache::MemoryCache;
use common::lock::{LapsingLock, MemoryLock};
use common::registry::sqlite::SqliteRegistry;
use common::state::DirStateStore;
use common::telegram::TelegramClient;
use common::{Secret, TenantId, TenantRecord};

use crate::app::{App, Ports, Settings};
use crate::leader::LeaderElector;
use crate::runtime::{AgentAddress, AgentInfo, Runtime, RuntimeError};

/// The shared HTTP stub (answers, records, stops on drop).
pub use common::stub::Stub as StubServer;

/// A runtime whose agents are [`StubServer`]s answering `/health`; counts starts and stops.
#[derive(Default)]
pub struct FakeRuntime {
    pub starts: AtomicUsize,
    pub stops: AtomicUsize,
    /// Set: every start fails with this reason.
    pub fail_with: Mutex<Option<String>>,
    /// Set: every start fails as if the runtime's backend (Kubernetes API) were down.
    pub backend_down: Mutex<Option<String>>,
    /// How long a start takes (lets concurrent wakes overlap).
    pub start_delay: Mutex<Duration>,
    /// Set: the state grants this runtime issues; `None` issues none.
    pub grants: Mutex<Option<common::assignment::StateGrants>>,
    agents: Mutex<HashMap<TenantId, StubServer>>,
}

impl FakeRuntime {
    pub fn new(start_delay: Duration) -> Arc<Self> {
        let r = FakeRuntime::default();
        *r.start_delay.lock().unwrap() = start_delay;
        Arc::new(r)
    }

    /// The agent dies on its own (no stop, no state save).
    pub fn kill(&self, id: &TenantId) {
        self.agents.lock().unwrap().remove(id);
    }

    pub fn running(&self, id: &TenantId) -> bool {
        self.agents.lock().unwrap().contains_key(id)
    }

    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn start(
        &self,
        rec: &TenantRecord,
        _deadline: Duration,
    ) -> Result<AgentAddress, RuntimeError> {
        let delay = *self.start_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.starts.fetch_add(1, Ordering::SeqCst);
        if let Some(why) = self.fail_with.lock().unwrap().clone() {
            return Err(RuntimeError::start_failed(why));
        }
        if let Some(why) = self.backend_down.lock().unwrap().clone() {
            return Err(RuntimeError::unavailable_msg(why));
        }
        // An agent that already runs is adopted, as the real runtimes do.
        if let Some(port) = self
            .agents
            .lock()
            .unwrap()
            .get(&rec.tenant_id)
            .map(|s| s.port())
        {
            return Ok(AgentAddress {
                pod_name: rec.tenant_id.pod_name(),
                pod_ip: "127.0.0.1".into(),
                agent_port: Some(port),
                warm: None,
            });
        }
        let server = StubServer::json(r#"{"status":"ok"}"#);
        let port = server.port();
        self.agents
            .lock()
            .unwrap()
            .insert(rec.tenant_id.clone(), server);
        Ok(AgentAddress {
            pod_name: rec.tenant_id.pod_name(),
            pod_ip: "127.0.0.1".into(),
            agent_port: Some(port),
            warm: None,
        })
    }

    async fn stop(&self, id: &TenantId) -> Result<(), RuntimeError> {
        if self.agents.lock().unwrap().remove(id).is_some() {
            self.stops.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<AgentInfo>, RuntimeError> {
        Ok(self
            .agents
            .lock()
            .unwrap()
            .iter()
            .map(|(id, s)| AgentInfo {
                tenant: id.clone(),
                address: Some(AgentAddress {
                    pod_name: id.pod_name(),
                    pod_ip: "127.0.0.1".into(),
                    agent_port: Some(s.port()),
                    warm: None,
                }),
                instance: None,
            })
            .collect())
    }

    async fn remove(&self, _id: &TenantId) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn state_grants(
        &self,
        _id: &TenantId,
    ) -> Result<common::assignment::StateGrants, RuntimeError> {
        let grants = self.grants.lock().unwrap().clone();
        grants.ok_or_else(crate::runtime::no_state_grants)
    }

    fn agent_port(&self) -> u16 {
        3000
    }

    fn name(&self) -> &'static str {
        "fake"
    }
}

/// A leader elector the test switches on and off.
pub struct SwitchLeader(pub AtomicBool);

#[async_trait]
impl LeaderElector for SwitchLeader {
    fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    async fn run(&self, shutdown: tokio_util::sync::CancellationToken) {
        shutdown.cancelled().await;
    }
}

pub struct TestApp {
    pub app: Arc<App>,
    pub runtime: Arc<FakeRuntime>,
    pub lock: Arc<MemoryLock>,
    pub leader: Arc<SwitchLeader>,
    pub _dir: tempfile::TempDir,
}

/// An app on SQLite, the in-process lock and cache, a directory state store and a [`FakeRuntime`].
pub fn test_app(runtime: Arc<FakeRuntime>, settings: Settings, telegram_url: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let lock = Arc::new(MemoryLock::new());
    let leader = Arc::new(SwitchLeader(AtomicBool::new(true)));
    let app = App::new(
        Ports {
            registry: Arc::new(SqliteRegistry::open(&dir.path().join("registry.db")).unwrap()),
            lock: lock.clone(),
            cache: Arc::new(MemoryCache::new()),
            state: Arc::new(DirStateStore::new(dir.path().join("state"))),
            runtime: runtime.clone(),
            leader: leader.clone(),
            webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
        },
        TelegramClient::new(telegram_url),
        settings,
    );
    TestApp {
        app,
        runtime,
        lock,
        leader,
        _dir: dir,
    }
}

/// Two replicas sharing one registry, one [`LapsingLock`] and one runtime, each with its own cache.
pub fn two_replicas(
    runtime: Arc<FakeRuntime>,
    settings: Settings,
) -> (Arc<App>, Arc<App>, Arc<LapsingLock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let registry: Arc<SqliteRegistry> =
        Arc::new(SqliteRegistry::open(&dir.path().join("registry.db")).unwrap());
    let lock = Arc::new(LapsingLock::default());
    let replica = || {
        App::new(
            Ports {
                registry: registry.clone(),
                lock: lock.clone(),
                cache: Arc::new(MemoryCache::new()),
                state: Arc::new(DirStateStore::new(dir.path().join("state"))),
                runtime: runtime.clone(),
                leader: Arc::new(SwitchLeader(AtomicBool::new(true))),
                webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
            },
            TelegramClient::new("http://127.0.0.1:1"),
            settings.clone(),
        )
    };
    let (a, b) = (replica(), replica());
    (a, b, lock, dir)
}

/// Two replicas sharing one registry and one runtime whose wake locks do not see each other: a
/// split brain (a Redis failover that lost the lock key) in which each believes it holds the lock.
pub fn split_brain_replicas(
    runtime: Arc<FakeRuntime>,
    settings: Settings,
) -> (Arc<App>, Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let registry: Arc<SqliteRegistry> =
        Arc::new(SqliteRegistry::open(&dir.path().join("registry.db")).unwrap());
    let replica = || {
        App::new(
            Ports {
                registry: registry.clone(),
                lock: Arc::new(MemoryLock::new()),
                cache: Arc::new(MemoryCache::new()),
                state: Arc::new(DirStateStore::new(dir.path().join("state"))),
                runtime: runtime.clone(),
                leader: Arc::new(SwitchLeader(AtomicBool::new(true))),
                webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
            },
            TelegramClient::new("http://127.0.0.1:1"),
            settings.clone(),
        )
    };
    let (a, b) = (replica(), replica());
    (a, b, dir)
}

/// Settings with short waits for tests.
pub fn quick_settings() -> Settings {
    Settings {
        wake_lock_ttl: Duration::from_secs(10),
        pod_ready_wait: Duration::from_secs(5),
        ..Settings::default()
    }
}

pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// Stores an idle tenant directly in the registry.
pub async fn add_tenant(app: &App, id: &str) -> TenantId {
    let id = tid(id);
    let mut rec = TenantRecord::new(
        id.clone(),
        Secret::new("123:abc"),
        300,
        "tenants",
        Utc::now(),
    );
    rec.agent_token = common::tenant::new_agent_token();
    app.registry.create(&rec).await.unwrap();
    id
}
