//! Warm agents (`WARM_POOL_MODE=agent`) on the fake cluster: a wake assigns a running warm-pool agent
//! (no pod created or deleted), which restores the tenant's memory and configuration through
//! presigned S3 grants (moto) and saves through them at sleep; claims race safely, a failed
//! assignment falls back to a cold start, an interrupted one is swept. A cold start (pool empty)
//! creates one warm agent for the tenant and assigns it the same way: memory moves both ways.

mod k8s_support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::assignment::StateGrantIssuer;
use common::{Secret, TenantId, TenantRecord};
use k8s_support::*;
use orchestrator::app::{App, Ports, Settings};
use orchestrator::leader::AlwaysLeader;
use orchestrator::runtime::kubernetes::{KubeRuntime, WarmAgents};
use orchestrator::runtime::{LogQuery, Runtime};
use orchestrator::warm_pool::WarmPoolManager;
use platform_tests::backends::{unique_name, Moto};
use platform_tests::fake_k8s::{FakeK8s, FakeK8sOptions};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

struct Env {
    fake: FakeK8s,
    shared: Shared,
    _moto: Moto,
    store: Arc<common::state::s3::S3StateStore>,
    bucket: String,
}

async fn env() -> Env {
    env_with(FakeK8sOptions::default()).await
}

async fn env_with(opts: FakeK8sOptions) -> Env {
    capture_logs();
    let moto = Moto::start().await;
    let bucket = unique_name("warm");
    let store = Arc::new(moto.state_store(&bucket).await);
    Env {
        fake: FakeK8s::start_with(opts).await,
        shared: Shared::new(),
        _moto: moto,
        store,
        bucket,
    }
}

impl Env {
    /// The Kubernetes runtime of one replica in `WARM_POOL_MODE=agent`.
    async fn runtime(&self) -> KubeRuntime {
        KubeRuntime::new(self.fake.client().await, k8s_settings()).with_warm_agents(WarmAgents {
            grants: self.store.clone(),
            grant_ttl: Duration::from_secs(600),
        })
    }

    /// One orchestrator replica in `WARM_POOL_MODE=agent`.
    async fn replica(&self) -> Arc<App> {
        let runtime = self.runtime().await;
        let ports = Ports {
            registry: self.shared.registry.clone(),
            lock: self.shared.lock.clone(),
            cache: Arc::new(common::cache::MemoryCache::new()),
            state: Arc::new(common::state::DirStateStore::new(
                self.shared.dir.path().join("state"),
            )),
            runtime: Arc::new(runtime),
            leader: Arc::new(AlwaysLeader),
            webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
        };
        let settings = Settings {
            pod_ready_wait: T,
            ..Settings::default()
        };
        App::new(
            ports,
            common::telegram::TelegramClient::new("http://127.0.0.1:1"),
            settings,
        )
    }

    async fn manager(&self, replicas: u32) -> WarmPoolManager {
        WarmPoolManager::new(
            self.fake.client().await,
            k8s_settings(),
            replicas,
            Duration::from_secs(3600),
        )
        .with_warm_agents(true)
    }

    /// Creates the warm pool (Secret + Deployment) and waits until `n` warm agents answer.
    async fn pool(&self, n: u32) -> Vec<Value> {
        self.manager(n).await.ensure().await.unwrap();
        assert!(
            self.wait_warm(n as usize).await,
            "{n} warm agents did not come up"
        );
        self.warm_pods()
    }

    /// Deletes Deployment `warm-pool` (its pods stay): no replacement pod joins the test's pool.
    async fn freeze_pool(&self) {
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(self.fake.client().await, NS);
        api.delete("warm-pool", &Default::default()).await.unwrap();
    }

    fn warm_pods(&self) -> Vec<Value> {
        running_warm_pods(&self.fake)
    }

    /// Until `n` warm pods are Running and their agents answer `/health`.
    async fn wait_warm(&self, n: usize) -> bool {
        wait_warm_agents(&self.fake, n, T).await
    }

    /// A tenant with a persona, as `POST /tenants` + `PUT /config` store it.
    async fn tenant(&self, id: &str) -> TenantId {
        let id = TenantId::parse(id).unwrap();
        let mut rec = TenantRecord::new(
            id.clone(),
            Secret::new("123:ABC-secret"),
            300,
            NS,
            Utc::now(),
        );
        rec.agent_token = common::tenant::new_agent_token();
        rec.agent_config = Some(r#"{"files":{"SOUL.md":"You are terse."}}"#.into());
        self.shared.registry.create(&rec).await.unwrap();
        id
    }

    async fn pod_name(&self, id: &TenantId) -> String {
        self.shared
            .registry
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .pod_name
    }

    /// Names of the pods `kubectl get pods -l app=zeroclaw,tenant={id}` lists.
    fn tenant_pods(&self, id: &TenantId) -> Vec<String> {
        self.fake
            .list("pods")
            .into_iter()
            .filter(|p| {
                p["metadata"]["labels"]["app"] == "zeroclaw"
                    && p["metadata"]["labels"]["tenant"] == id.as_str()
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn saved_keys(&self, id: &TenantId) -> Vec<String> {
        let out = self
            .store
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(id.s3_prefix())
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    async fn pool_token(&self) -> String {
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.fake.client().await, NS);
        orchestrator::warm_pool::pool_token(&secrets, &k8s_settings())
            .await
            .unwrap()
            .expose()
            .to_owned()
    }
}

async fn wake(app: &Arc<App>, id: &TenantId) -> orchestrator::wake::Woken {
    orchestrator::wake::wake(app, id).await.unwrap()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_hit_assigns_a_running_agent_restores_memory_and_config_and_creates_no_pod() {
    let e = env().await;
    let app = e.replica().await;
    let id = e.tenant("wa-hit").await;
    let warm = name(&e.pool(1).await[0]);
    // A warm pod holds the pool credential and the platform's LLM key only: no tenant Secret, no
    // state volume.
    let spec = &e.fake.get("pods", NS, &warm).unwrap()["spec"];
    let refs: Vec<&str> = spec["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["valueFrom"]["secretKeyRef"]["name"].as_str())
        .collect();
    assert_eq!(refs, ["llm-credentials", "warm-pool"], "{spec}");
    assert!(spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.get("persistentVolumeClaim").is_none()));

    e.fake.reset_counts();
    let woken = wake(&app, &id).await;
    assert_eq!(
        e.fake.count("create", "pods"),
        0,
        "no pod created on a warm hit"
    );
    assert_eq!(
        e.fake.count("delete", "pods"),
        0,
        "no pod deleted on a warm hit"
    );
    assert_eq!(
        e.pod_name(&id).await,
        warm,
        "the registry records the warm pod"
    );
    assert_eq!(e.tenant_pods(&id), std::slice::from_ref(&warm));
    let pod = e.fake.get("pods", NS, &warm).unwrap();
    assert!(pod["metadata"]["labels"].get("warm").is_none(), "{pod}");
    assert_eq!(woken.pod_ip, pod["status"]["podIP"].as_str().unwrap());
    assert_eq!(
        log_lines(&["warm pool hit: assigned warm agent", "tenant=wa-hit"]).len(),
        1
    );
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "hello").await,
        "echo: hello (#1)"
    );
    let log = std::fs::read_to_string(e.fake.agent_log(&warm)).unwrap();
    assert!(
        log.contains("agent configuration loaded") && log.contains("SOUL.md"),
        "{log}"
    );
    assert!(!log.contains("You are terse"), "persona text never logged");

    // Sleep deletes the assigned pod (never back to the pool); the save lands through the grant.
    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(eventually(T, || e.fake.get("pods", NS, &warm).is_none()).await);
    let keys = e.saved_keys(&id).await;
    assert_eq!(
        keys,
        [
            "tenants/wa-hit/brain.db.0000000001",
            "tenants/wa-hit/brain.db.0000000001.sha256"
        ]
    );

    // The Deployment replaced the warm pod: the next wake is a warm hit that restores memory.
    assert!(e.wait_warm(1).await);
    let woken = wake(&app, &id).await;
    let second = e.pod_name(&id).await;
    assert_ne!(second, warm);
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "again").await,
        "echo: again (#2)"
    );
    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(eventually(T, || e.tenant_pods(&id).is_empty()).await);
    assert_eq!(
        e.saved_keys(&id).await,
        [
            "tenants/wa-hit/brain.db.0000000002",
            "tenants/wa-hit/brain.db.0000000002.sha256"
        ],
        "the save replaced the older generation"
    );
}

/// The grants an assignment carries name exactly the tenant's objects: a warm pod never holds a
/// credential that reaches another tenant's state.
#[tokio::test]
async fn state_grants_reach_only_the_tenants_own_objects() {
    let e = env().await;
    let a = TenantId::parse("wa-own").unwrap();
    let b = TenantId::parse("wa-other").unwrap();
    for (id, body) in [(&a, b"a".to_vec()), (&b, b"b".to_vec())] {
        for (key, bytes) in [
            ("brain.db.0000000003", body.clone()),
            ("brain.db.0000000003.sha256", hex(&body).into_bytes()),
        ] {
            e.store
                .client()
                .put_object()
                .bucket(&e.bucket)
                .key(format!("{}{key}", id.s3_prefix()))
                .body(bytes.into())
                .send()
                .await
                .unwrap();
        }
    }
    let g = e
        .store
        .grants(&a, "brain.db", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(g.restore.len(), 1);
    assert_eq!(g.save.as_ref().unwrap().generation, 4);
    let urls: Vec<String> = g
        .restore
        .iter()
        .chain(&g.save)
        .flat_map(|x| std::iter::once(&x.data_url).chain(&x.marker_url))
        .chain(&g.delete)
        .map(|s| s.expose().to_owned())
        .collect();
    assert_eq!(urls.len(), 6);
    let own = format!("/{}/tenants/wa-own/brain.db.", e.bucket);
    for u in &urls {
        let path = u.split('?').next().unwrap();
        assert!(path.contains(&own), "{path}");
        assert!(u.contains("X-Amz-Expires=60"), "short-lived: {u}");
    }
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let got = common::assignment::restore(&http, &g, &dir.path().join("brain.db"))
        .await
        .unwrap();
    assert_eq!(got, Some(3));
    assert_eq!(std::fs::read(dir.path().join("brain.db")).unwrap(), b"a");
}

fn hex(b: &[u8]) -> String {
    use sha2::Digest;
    ::hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_agent_accepts_one_assignment_and_only_with_the_pool_credential() {
    let e = env().await;
    let pod = e.pool(1).await.remove(0);
    let url = format!(
        "http://{}:3000/assign",
        pod["status"]["podIP"].as_str().unwrap()
    );
    let token = e.pool_token().await;
    let body = |t: &str| {
        serde_json::json!({"tenant_id": t, "agent_token": "0123456789abcdef0123",
                           "config": {"tenant_id": t, "provider": "p", "model": "m"}})
    };
    let http = reqwest::Client::new();
    let post = |auth: Option<String>, b: Value| {
        let mut r = http.post(&url).json(&b);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None, body("wa-one")).await, 401);
    assert_eq!(
        post(Some("0123456789abcdef0123".into()), body("wa-one")).await,
        401
    );
    // Before an assignment the agent answers nobody.
    let chat = http
        .post(url.replace("/assign", "/webhook"))
        .bearer_auth("0123456789abcdef0123")
        .json(&serde_json::json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 401);
    assert_eq!(post(Some(token.clone()), body("wa-one")).await, 200);
    assert_eq!(
        post(Some(token), body("wa-two")).await,
        409,
        "a pod is assigned once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_for_one_warm_agent_assign_it_once() {
    let e = env().await;
    let (a, b) = (e.replica().await, e.replica().await);
    let (ta, tb) = (e.tenant("wa-race-a").await, e.tenant("wa-race-b").await);
    let warm = name(&e.pool(1).await[0]);
    // No replacement meanwhile: the race is for this one pod.
    e.freeze_pool().await;

    let (wa, wb) = tokio::join!(wake(&a, &ta), wake(&b, &tb));
    let hits = log_lines(&["warm pool hit: assigned warm agent", "wa-race-"]);
    let misses = log_lines(&["warm pool miss: cold start", "wa-race-"]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(misses.len(), 1, "{misses:?}");
    let names = [e.pod_name(&ta).await, e.pod_name(&tb).await];
    assert_eq!(names.iter().filter(|n| **n == warm).count(), 1, "{names:?}");
    assert_eq!(
        agent_chat(&e.shared, &ta, &wa.endpoint, "a").await,
        "echo: a (#1)"
    );
    assert_eq!(
        agent_chat(&e.shared, &tb, &wb.endpoint, "b").await,
        "echo: b (#1)"
    );
}

/// A warm agent that refuses its assignment (here: already assigned by someone else) is deleted
/// and the wake cold-starts; the tenant's message is answered once, by the cold agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_assignment_deletes_the_warm_pod_and_falls_back_to_a_cold_start() {
    let e = env().await;
    let app = e.replica().await;
    let id = e.tenant("wa-fail").await;
    let pod = e.pool(1).await.remove(0);
    let warm = name(&pod);
    e.freeze_pool().await;
    spend_warm_agent(&pod, &e.pool_token().await).await;

    let woken = wake(&app, &id).await;
    assert_eq!(
        log_lines(&["warm pool: assignment failed", "tenant=wa-fail"]).len(),
        1
    );
    assert!(
        eventually(T, || e.fake.get("pods", NS, &warm).is_none()).await,
        "spent warm pod deleted"
    );
    assert_eq!(e.pod_name(&id).await, "zeroclaw-wa-fail", "cold start");
    assert_eq!(e.tenant_pods(&id), ["zeroclaw-wa-fail"]);
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "hi").await,
        "echo: hi (#1)"
    );
}

/// A replica that died between the claim and the relabel leaves a `warm=consuming` pod, perhaps
/// already serving; the sweep deletes it, and it writes nothing over the tenant's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_left_mid_assignment_is_deleted_by_the_sweep_without_saving() {
    let e = env().await;
    let app = e.replica().await;
    let id = e.tenant("wa-orphan").await;
    let pod = e.pool(1).await.remove(0);
    let warm = name(&pod);
    e.freeze_pool().await;
    // What the dead replica did: the claim (with a claim time long past) and the assignment call.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(e.fake.client().await, NS);
    let claim = serde_json::json!({"metadata": {"labels": {"warm": "consuming"},
        "annotations": {"zeroclaw.io/claimed-at": "2020-01-01T00:00:00Z"}}});
    pods.patch(
        &warm,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&claim),
    )
    .await
    .unwrap();
    let record = e.shared.registry.get(&id).await.unwrap().unwrap();
    let grants = e
        .store
        .grants(&id, "brain.db", Duration::from_secs(60))
        .await
        .unwrap();
    let assigned = reqwest::Client::new()
        .post(format!(
            "http://{}:3000/assign",
            pod["status"]["podIP"].as_str().unwrap()
        ))
        .bearer_auth(e.pool_token().await)
        .json(&common::assignment::Assignment {
            tenant_id: id.to_string(),
            agent_token: record.agent_token.clone(),
            config: serde_json::json!({"tenant_id": id.as_str()}),
            state: grants,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(assigned.status(), 200);

    let swept = e.manager(0).await.sweep_orphans().await.unwrap();
    assert_eq!(swept, std::slice::from_ref(&warm));
    assert!(eventually(T, || e.fake.get("pods", NS, &warm).is_none()).await);
    assert!(
        e.saved_keys(&id).await.is_empty(),
        "nothing new, nothing written"
    );
    // The tenant wakes normally (pool empty: cold start).
    let woken = wake(&app, &id).await;
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "hi").await,
        "echo: hi (#1)"
    );
}

/// What a tenant's objects on the fake cluster are, besides pods: in `WARM_POOL_MODE=agent` none.
fn tenant_objects(e: &Env, id: &TenantId) -> Vec<String> {
    [
        "persistentvolumeclaims",
        "persistentvolumes",
        "secrets",
        "configmaps",
    ]
    .into_iter()
    .flat_map(|r| {
        e.fake
            .list(r)
            .into_iter()
            .filter(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .contains(id.as_str())
            })
            .map(move |o| format!("{r}/{}", name(&o)))
    })
    .collect()
}

/// Names of the Secrets a pod's agent container reads.
fn secret_refs(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["valueFrom"]["secretKeyRef"]["name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Pool empty: the wake creates one warm agent `zeroclaw-{id}` (no tenant Secret, ConfigMap, PV or
/// PVC), assigns it like a warm hit, and a later cold start restores what the first one saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_cold_starts_one_pod_through_the_assignment_and_restores_memory() {
    let e = env().await;
    let app = e.replica().await;
    let id = e.tenant("wa-cold").await;

    e.fake.reset_counts();
    let woken = wake(&app, &id).await;
    assert_eq!(e.fake.count("create", "pods"), 1, "one pod created");
    assert_eq!(e.pod_name(&id).await, "zeroclaw-wa-cold");
    assert_eq!(e.tenant_pods(&id), ["zeroclaw-wa-cold"]);
    assert_eq!(
        tenant_objects(&e, &id),
        Vec::<String>::new(),
        "no volume, Secret or ConfigMap"
    );
    let pod = e.fake.get("pods", NS, "zeroclaw-wa-cold").unwrap();
    assert_eq!(secret_refs(&pod), ["llm-credentials", "warm-pool"], "{pod}");
    assert!(pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.get("persistentVolumeClaim").is_none() && v.get("configMap").is_none()));
    assert!(pod["metadata"]["labels"].get("warm").is_none(), "{pod}");
    assert_eq!(
        pod["metadata"]["annotations"]["zeroclaw.io/assigning-tenant"],
        "wa-cold"
    );
    assert_eq!(
        log_lines(&["cold start: assigned a new agent pod", "tenant=wa-cold"]).len(),
        1
    );
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "hello").await,
        "echo: hello (#1)"
    );
    let log = std::fs::read_to_string(e.fake.agent_log("zeroclaw-wa-cold")).unwrap();
    assert!(log.contains("warm agent assigned"), "{log}");
    assert!(
        log.contains("agent configuration loaded") && log.contains("SOUL.md"),
        "{log}"
    );
    // `ztm tenant logs` reads the pod's log through the runtime.
    let through_api = app.runtime.logs(&id, &LogQuery::default()).await.unwrap();
    assert!(through_api.unwrap().contains("warm agent assigned"));

    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(eventually(T, || e.tenant_pods(&id).is_empty()).await);
    assert_eq!(
        e.saved_keys(&id).await,
        [
            "tenants/wa-cold/brain.db.0000000001",
            "tenants/wa-cold/brain.db.0000000001.sha256"
        ],
        "saved through the grant"
    );

    // Pool still empty: another cold start, which restores the memory and configuration saved above.
    let woken = wake(&app, &id).await;
    assert_eq!(e.pod_name(&id).await, "zeroclaw-wa-cold");
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "again").await,
        "echo: again (#2)"
    );
    let log = std::fs::read_to_string(e.fake.agent_log("zeroclaw-wa-cold")).unwrap();
    assert!(log.contains("restored_generation=Some(1)"), "{log}");
    assert!(log.contains("SOUL.md"), "{log}");
    assert_eq!(tenant_objects(&e, &id), Vec::<String>::new());
}

/// One tenant on both paths: a cold start saves, a warm hit restores it; the warm agent saves, a
/// cold start restores it (one store, one protocol).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_moves_from_a_cold_start_to_a_warm_hit_and_back() {
    let e = env().await;
    let app = e.replica().await;
    let id = e.tenant("wa-move").await;

    let woken = wake(&app, &id).await;
    assert_eq!(
        e.pod_name(&id).await,
        "zeroclaw-wa-move",
        "pool empty: cold"
    );
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "one").await,
        "echo: one (#1)"
    );
    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(eventually(T, || e.tenant_pods(&id).is_empty()).await);

    let warm = name(&e.pool(1).await[0]);
    let woken = wake(&app, &id).await;
    assert_eq!(e.pod_name(&id).await, warm, "warm hit");
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "two").await,
        "echo: two (#2)",
        "the warm agent restored what the cold start saved"
    );
    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(eventually(T, || e.tenant_pods(&id).is_empty()).await);

    // Empty the pool (no Deployment, no warm pod left): the next wake is cold again.
    e.freeze_pool().await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(e.fake.client().await, NS);
    for p in e.warm_pods() {
        pods.delete(&name(&p), &Default::default()).await.unwrap();
    }
    assert!(eventually(T, || e.warm_pods().is_empty()).await);
    let woken = wake(&app, &id).await;
    assert_eq!(e.pod_name(&id).await, "zeroclaw-wa-move", "cold again");
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "three").await,
        "echo: three (#3)",
        "the cold start restored what the warm agent saved"
    );
}

/// A cold start cut off while its pod starts (replica died, wake cancelled) leaves `zeroclaw-{id}`
/// marked as claimed for the tenant: the orphan sweep collects it once its mark is old, and the
/// next wake replaces such a leftover (deleted by UID, never adopted) instead of failing on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_cold_start_leaves_a_pod_the_sweep_collects_and_the_next_wake_replaces() {
    let e = env_with(FakeK8sOptions {
        pod_start_delay: Duration::from_secs(2),
        ..FakeK8sOptions::default()
    })
    .await;
    let id = e.tenant("wa-cut").await;
    let record = e.shared.registry.get(&id).await.unwrap().unwrap();
    let runtime = Arc::new(e.runtime().await);
    let interrupt = || async {
        let (rt, rec) = (runtime.clone(), record.clone());
        let start = tokio::spawn(async move { rt.start(&rec, T).await });
        assert!(eventually(T, || e.fake.get("pods", NS, "zeroclaw-wa-cut").is_some()).await);
        start.abort();
        let _ = start.await;
        e.fake.get("pods", NS, "zeroclaw-wa-cut").unwrap()
    };

    let left = interrupt().await;
    assert_eq!(left["metadata"]["labels"]["app"], "warm-pool", "{left}");
    assert_eq!(left["metadata"]["labels"]["warm"], "consuming", "{left}");
    assert_eq!(
        left["metadata"]["annotations"]["zeroclaw.io/assigning-tenant"],
        "wa-cut"
    );
    assert!(
        e.manager(0).await.sweep_orphans().await.unwrap().is_empty(),
        "a fresh mark is a start in progress"
    );
    let swept = e
        .manager(0)
        .await
        .with_orphan_grace(Duration::ZERO)
        .sweep_orphans()
        .await
        .unwrap();
    assert_eq!(swept, ["zeroclaw-wa-cut"]);
    assert!(eventually(T, || e.fake.get("pods", NS, "zeroclaw-wa-cut").is_none()).await);

    // Left again; this time the next wake finds it first.
    let left = interrupt().await;
    let app = e.replica().await;
    let woken = wake(&app, &id).await;
    let pod = e.fake.get("pods", NS, "zeroclaw-wa-cut").unwrap();
    assert_ne!(
        pod["metadata"]["uid"], left["metadata"]["uid"],
        "replaced, not adopted"
    );
    assert_eq!(
        log_lines(&[
            "deleting a pod left by an interrupted cold start",
            "zeroclaw-wa-cut"
        ])
        .len(),
        1
    );
    assert_eq!(
        agent_chat(&e.shared, &id, &woken.endpoint, "hi").await,
        "echo: hi (#1)"
    );
}
