//! Shared set-up of the Kubernetes tests: orchestrator apps on the fake cluster, and captured logs.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::cache::MemoryCache;
use common::k8s::K8sSettings;
use common::lock::{MemoryLock, WakeLock};
use common::registry::sqlite::SqliteRegistry;
use common::registry::Registry;
use common::state::DirStateStore;
use common::telegram::TelegramClient;
use common::{Secret, TenantId, TenantRecord};
use orchestrator::app::{App, Ports, Settings};
use orchestrator::leader::{AlwaysLeader, LeaderElector};
use orchestrator::runtime::kubernetes::KubeRuntime;
use platform_tests::fake_k8s::FakeK8s;

pub const NS: &str = "tenants";
pub const IMAGE: &str = "zeroclaw:test";

pub fn k8s_settings() -> K8sSettings {
    K8sSettings {
        namespace: NS.into(),
        image: IMAGE.into(),
        runtime_class: "kata-qemu".into(),
        agent_port: 3000,
        s3_bucket: "zeroclaw-tenant-state".into(),
        state_storage_class: common::k8s::STATE_STORAGE_CLASS.into(),
        orchestrator_url: None,
    }
}

/// Backends shared by every replica of one test (as DynamoDB and Redis would be).
pub struct Shared {
    pub registry: Arc<dyn Registry>,
    pub lock: Arc<dyn WakeLock>,
    pub dir: tempfile::TempDir,
}

impl Shared {
    pub fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        Shared {
            registry: Arc::new(SqliteRegistry::open(&dir.path().join("registry.db")).unwrap()),
            lock: Arc::new(MemoryLock::new()),
            dir,
        }
    }

    pub async fn add_tenant(&self, id: &str) -> TenantId {
        let id = TenantId::parse(id).unwrap();
        let mut rec = TenantRecord::new(
            id.clone(),
            Secret::new("123:ABC-secret"),
            300,
            NS,
            Utc::now(),
        );
        // As `POST /tenants` does.
        rec.agent_token = common::tenant::new_agent_token();
        self.registry.create(&rec).await.unwrap();
        id
    }
}

/// One orchestrator replica as a library: the real wake, reconciler and Kubernetes runtime.
pub async fn replica(fake: &FakeK8s, shared: &Shared, ready_wait: Duration) -> Arc<App> {
    replica_with(fake, shared, ready_wait, Arc::new(AlwaysLeader)).await
}

pub async fn replica_with(
    fake: &FakeK8s,
    shared: &Shared,
    ready_wait: Duration,
    leader: Arc<dyn LeaderElector>,
) -> Arc<App> {
    replica_with_settings(fake, shared, ready_wait, leader, k8s_settings()).await
}

pub async fn replica_with_settings(
    fake: &FakeK8s,
    shared: &Shared,
    ready_wait: Duration,
    leader: Arc<dyn LeaderElector>,
    k8s: K8sSettings,
) -> Arc<App> {
    let runtime = KubeRuntime::new(fake.client().await, k8s);
    let ports = Ports {
        registry: shared.registry.clone(),
        lock: shared.lock.clone(),
        cache: Arc::new(MemoryCache::new()),
        state: Arc::new(DirStateStore::new(shared.dir.path().join("state"))),
        runtime: Arc::new(runtime),
        leader,
        webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
    };
    let settings = Settings {
        pod_ready_wait: ready_wait,
        ..Settings::default()
    };
    App::new(ports, TelegramClient::new("http://127.0.0.1:1"), settings)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<Capture> = OnceLock::new();

/// Captures this test binary's log lines (install once; tests filter by their own tenant ids).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        cap
    });
}

/// Captured log lines that contain every one of `needles`.
pub fn log_lines(needles: &[&str]) -> Vec<String> {
    let Some(cap) = LOGS.get() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

pub fn tenant_dir_exists(path: &Path) -> bool {
    path.exists()
}

/// `POST /webhook` straight to a tenant's agent, with the tenant's credential as the router sends it.
pub async fn agent_chat(
    shared: &Shared,
    id: &TenantId,
    endpoint: &common::wire::Endpoint,
    text: &str,
) -> String {
    let credential = shared.registry.get(id).await.unwrap().unwrap().agent_token;
    let r: common::wire::AgentReply = reqwest::Client::new()
        .post(format!(
            "http://{endpoint}{}",
            common::wire::AGENT_WEBHOOK_PATH
        ))
        .bearer_auth(credential.expose())
        .json(&common::wire::AgentMessage {
            message: text.into(),
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r.response
}

/// The warm pool's pods that are Running.
pub fn running_warm_pods(fake: &FakeK8s) -> Vec<serde_json::Value> {
    fake.list("pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["warm"] == "true" && p["status"]["phase"] == "Running")
        .collect()
}

/// Until `n` warm pods are Running and their agents answer `/health`; false after `timeout`.
pub async fn wait_warm_agents(fake: &FakeK8s, n: usize, timeout: Duration) -> bool {
    let http = reqwest::Client::new();
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        let mut up = 0;
        for p in running_warm_pods(fake) {
            let url = format!(
                "http://{}:3000/health",
                p["status"]["podIP"].as_str().unwrap()
            );
            if http.get(url).send().await.is_ok_and(|r| r.status() == 200) {
                up += 1;
            }
        }
        if up >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A Running warm pod created the way the warm-pool ReplicaSet would, on a known node.
pub async fn warm_pod(fake: &FakeK8s, name: &str) -> (String, String) {
    let template = common::k8s::warm_pool_deployment(&k8s_settings(), 1)
        .spec
        .unwrap()
        .template;
    let pod = k8s_openapi::api::core::v1::Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: template.metadata.unwrap().labels,
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(fake.client().await, NS);
    api.create(&kube::api::PostParams::default(), &pod)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || fake
            .get("pods", NS, name)
            .is_some_and(|p| p["status"]["phase"] == "Running"))
        .await
    );
    let node = fake.get("pods", NS, name).unwrap()["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_owned();
    (name.to_owned(), node)
}

/// Assigns warm pod `pod` to another tenant behind the orchestrator's back (with the pool
/// credential), so the next assignment it gets is refused (409): a warm pod that fails its claim.
pub async fn spend_warm_agent(pod: &serde_json::Value, pool_token: &str) {
    let url = format!(
        "http://{}:3000/assign",
        pod["status"]["podIP"].as_str().unwrap()
    );
    let spent = reqwest::Client::new()
        .post(url)
        .bearer_auth(pool_token)
        .json(
            &serde_json::json!({"tenant_id": "wa-else", "agent_token": "0123456789abcdef0123",
                                   "config": {"tenant_id": "wa-else"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);
}
