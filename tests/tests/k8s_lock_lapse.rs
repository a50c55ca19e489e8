//! A wake lock that lapses under a wake, with two orchestrator replicas on the fake cluster: the
//! replica that lost its lock must neither overwrite the registry nor delete the pod the replica
//! that took the lock over adopted and serves.

mod k8s_support;

use std::sync::Arc;
use std::time::Duration;

use common::lock::LapsingLock;
use common::telegram::TelegramClient;
use common::TenantStatus;
use k8s_support::*;
use orchestrator::app::{App, Ports, Settings};
use orchestrator::leader::AlwaysLeader;
use orchestrator::runtime::kubernetes::KubeRuntime;
use platform_tests::fake_k8s::{FakeK8s, FakeK8sOptions};

async fn replica(fake: &FakeK8s, shared: &Shared, lock: Arc<LapsingLock>) -> Arc<App> {
    let ports = Ports {
        registry: shared.registry.clone(),
        lock,
        cache: Arc::new(common::cache::MemoryCache::new()),
        state: Arc::new(common::state::DirStateStore::new(
            shared.dir.path().join("state"),
        )),
        runtime: Arc::new(KubeRuntime::new(fake.client().await, k8s_settings())),
        leader: Arc::new(AlwaysLeader),
        webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
    };
    let settings = Settings {
        pod_ready_wait: Duration::from_secs(60),
        wake_lock_ttl: Duration::from_millis(800),
        ..Settings::default()
    };
    App::new(ports, TelegramClient::new("http://127.0.0.1:1"), settings)
}

/// The tenant's pods that are not being deleted.
fn live_pods(fake: &FakeK8s) -> Vec<String> {
    fake.list("pods")
        .iter()
        .filter(|p| p["metadata"]["labels"]["tenant"] == "lapse")
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_whose_lock_lapsed_leaves_the_pod_the_other_replica_adopted() {
    // Pods take 2 s to run: long enough for the lock to lapse under the first wake.
    let fake = FakeK8s::start_with(FakeK8sOptions {
        pod_start_delay: Duration::from_millis(2000),
        ..FakeK8sOptions::default()
    })
    .await;
    let mut shared = Shared::new();
    let lock = Arc::new(LapsingLock::default());
    shared.lock = lock.clone();
    let (a, b) = (
        replica(&fake, &shared, lock.clone()).await,
        replica(&fake, &shared, lock.clone()).await,
    );
    let id = shared.add_tenant("lapse").await;

    let first = tokio::spawn({
        let (a, id) = (a.clone(), id.clone());
        async move { orchestrator::wake::wake(&a, &id).await }
    });
    assert!(
        eventually(Duration::from_secs(20), || !live_pods(&fake).is_empty()).await,
        "the first wake creates the pod"
    );
    // Replica A is cut off past the lock's TTL while its pod starts; B takes the lock over.
    lock.lapse();
    let second = orchestrator::wake::wake(&b, &id).await;
    let first = first.await.unwrap();

    assert!(first.is_err(), "the wake that lost its lock fails");
    let woken = second.expect("the replica that took the lock over wakes the tenant");
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TenantStatus::Running, "{rec:?}");
    assert_eq!(rec.endpoint(3000), Some(woken.endpoint.clone()));
    let pods = live_pods(&fake);
    assert_eq!(
        pods.len(),
        1,
        "one agent, never two, none deleted: {pods:?}"
    );
    assert_eq!(
        agent_chat(&shared, &id, &woken.endpoint, "hi").await,
        "echo: hi (#1)",
        "the adopted agent still serves"
    );
}
