//! Warm agents (`WARM_POOL_MODE=agent`) on the fake cluster: a wake assigns a running warm-pool agent
//! (no pod created or deleted), which restores the tenant's memory and configuration through
//! presigned S3 grants (moto) and saves through them at sleep; claims race safely, a failed
//! assignment falls back to a cold start, an interrupted one is swept.

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
use orchestrator::warm_pool::WarmPoolManager;
use platform_tests::backends::{unique_name, Moto};
use platform_tests::fake_k8s::FakeK8s;
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
    capture_logs();
    let moto = Moto::start().await;
    let bucket = unique_name("warm");
    let store = Arc::new(moto.state_store(&bucket).await);
    Env {
        fake: FakeK8s::start().await,
        shared: Shared::new(),
        _moto: moto,
        store,
        bucket,
    }
}

impl Env {
    /// One orchestrator replica in `WARM_POOL_MODE=agent`.
    async fn replica(&self) -> Arc<App> {
        let runtime = KubeRuntime::new(self.fake.client().await, k8s_settings()).with_warm_agents(
            WarmAgents {
                grants: self.store.clone(),
                grant_ttl: Duration::from_secs(600),
            },
        );
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
        self.fake
            .list("pods")
            .into_iter()
            .filter(|p| {
                p["metadata"]["labels"]["warm"] == "true" && p["status"]["phase"] == "Running"
            })
            .collect()
    }

    /// Until `n` warm pods are Running and their agents answer `/health`.
    async fn wait_warm(&self, n: usize) -> bool {
        let http = reqwest::Client::new();
        let until = std::time::Instant::now() + T;
        while std::time::Instant::now() < until {
            let pods = self.warm_pods();
            let mut up = 0;
            for p in &pods {
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
    // A warm pod holds the pool credential only: no tenant Secret, no state volume.
    let spec = &e.fake.get("pods", NS, &warm).unwrap()["spec"];
    let refs: Vec<&str> = spec["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["valueFrom"]["secretKeyRef"]["name"].as_str())
        .collect();
    assert_eq!(refs, ["warm-pool"], "{spec}");
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
    let url = format!(
        "http://{}:3000/assign",
        pod["status"]["podIP"].as_str().unwrap()
    );
    let spent = reqwest::Client::new()
        .post(url)
        .bearer_auth(e.pool_token().await)
        .json(
            &serde_json::json!({"tenant_id": "wa-else", "agent_token": "0123456789abcdef0123",
                                   "config": {"tenant_id": "wa-else"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);

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
