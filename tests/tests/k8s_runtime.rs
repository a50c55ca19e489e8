//! The Kubernetes runtime against the fake cluster: wake creates the tenant's objects and a pod whose
//! real agent answers; warm pods are claimed once; failing pods fail the wake with the reason.

mod k8s_support;

use std::time::{Duration, Instant};

use common::{TenantId, TenantStatus};
use orchestrator::app::App;
use orchestrator::wake::wake;
use orchestrator::warm_pool::WarmPoolManager;
use platform_tests::fake_k8s::FakeK8s;
use serde_json::{json, Value};

use k8s_support::*;

#[tokio::test]
async fn wake_creates_secret_pv_pvc_and_a_pod_whose_agent_answers() {
    capture_logs();
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kcold").await;

    let woken = wake(&app, &id).await.unwrap();

    let secret = fake.get("secrets", NS, "tenant-kcold").expect("secret");
    let token: k8s_openapi::ByteString =
        serde_json::from_value(secret["data"]["TELEGRAM_BOT_TOKEN"].clone()).unwrap();
    assert_eq!(token.0, b"123:ABC-secret");
    let pv = fake
        .get("persistentvolumes", "", "pv-tenant-kcold")
        .expect("pv");
    assert_eq!(pv["spec"]["csi"]["driver"], "s3.csi.aws.com");
    assert_eq!(
        pv["spec"]["csi"]["volumeAttributes"]["bucketName"],
        "zeroclaw-tenant-state"
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["storageClassName"], "s3-tenant-state");
    assert!(pv["spec"]["mountOptions"]
        .as_array()
        .unwrap()
        .contains(&json!("prefix tenants/kcold/")));
    assert_eq!(pv["spec"]["claimRef"]["name"], "pvc-tenant-kcold");
    let pvc = fake
        .get("persistentvolumeclaims", NS, "pvc-tenant-kcold")
        .expect("pvc");
    assert_eq!(pvc["spec"]["volumeName"], "pv-tenant-kcold");

    let pod = fake.get("pods", NS, "zeroclaw-kcold").expect("pod");
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "zeroclaw", "tenant": "kcold"})
    );
    assert_eq!(pod["spec"]["runtimeClassName"], "kata-qemu");
    assert_eq!(pod["spec"]["priorityClassName"], "tenant-normal");
    assert_eq!(pod["spec"]["serviceAccountName"], "zeroclaw-tenant");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let token_env = env
        .iter()
        .find(|e| e["name"] == "TELEGRAM_BOT_TOKEN")
        .unwrap();
    assert!(token_env.get("value").is_none());
    assert_eq!(
        token_env["valueFrom"]["secretKeyRef"]["name"],
        "tenant-kcold"
    );
    assert!(!pod.to_string().contains("123:ABC-secret"));

    assert_eq!(woken.pod_ip, pod["status"]["podIP"].as_str().unwrap());
    assert_eq!(woken.endpoint.to_string(), format!("{}:3000", woken.pod_ip));
    assert_eq!(
        agent_chat(&shared, &id, &woken.endpoint, "hi").await,
        "echo: hi (#1)"
    );
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TenantStatus::Running);
    assert_eq!(rec.pod_name, "zeroclaw-kcold");
    assert_eq!(
        log_lines(&["warm pool miss: cold start", "tenant=kcold"]).len(),
        1
    );
}

#[tokio::test]
async fn a_warm_hit_pins_the_node_and_deletes_the_warm_pod() {
    capture_logs();
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kwarm").await;
    let (warm, node) = warm_pod(&fake, "warm-pool-abc12").await;

    let woken = wake(&app, &id).await.unwrap();

    let pod = fake.get("pods", NS, "zeroclaw-kwarm").unwrap();
    assert_eq!(pod["spec"]["nodeName"], node.as_str());
    assert!(
        fake.get("pods", NS, &warm).is_none(),
        "claimed warm pod deleted"
    );
    let hits = log_lines(&["warm pool hit: reusing node", "tenant=kwarm"]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].contains(&node));
    assert_eq!(
        agent_chat(&shared, &id, &woken.endpoint, "hello").await,
        "echo: hello (#1)"
    );
}

#[tokio::test]
async fn two_replicas_racing_for_one_warm_pod_claim_it_once() {
    capture_logs();
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let a = replica(&fake, &shared, Duration::from_secs(30)).await;
    let b = replica(&fake, &shared, Duration::from_secs(30)).await;
    let ra = shared.add_tenant("krace-a").await;
    let rb = shared.add_tenant("krace-b").await;
    let (warm, _) = warm_pod(&fake, "warm-pool-race1").await;

    let (wa, wb) = tokio::join!(wake(&a, &ra), wake(&b, &rb));
    wa.unwrap();
    wb.unwrap();

    let hits = log_lines(&["warm pool hit: reusing node", "krace-"]);
    let misses = log_lines(&["warm pool miss: cold start", "krace-"]);
    assert_eq!(
        hits.len(),
        1,
        "exactly one replica claims the pod: {hits:?}"
    );
    assert_eq!(misses.len(), 1, "the other cold-starts: {misses:?}");
    assert!(fake.get("pods", NS, &warm).is_none());
    assert!(fake.count("patch", "pods") >= 1);
}

#[tokio::test]
async fn an_image_pull_failure_fails_the_wake_with_the_reason_and_frees_the_tenant() {
    capture_logs();
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(20)).await;
    let id = shared.add_tenant("kpull").await;
    fake.fail_image(IMAGE, "ErrImagePull");

    let started = Instant::now();
    let err = wake(&app, &id).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fails before its deadline"
    );
    assert!(err.to_string().contains("ErrImagePull"), "{err}");
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TenantStatus::Idle);
    assert!(rec.pod_ip.is_empty());
    assert!(
        shared
            .lock
            .try_acquire(&common::wake_lock_key(&id), "probe", Duration::from_secs(5))
            .await
            .unwrap(),
        "wake lock released"
    );
    assert!(
        eventually(Duration::from_secs(5), || fake
            .get("pods", NS, "zeroclaw-kpull")
            .is_none())
        .await,
        "failed pod deleted"
    );
}

#[tokio::test]
async fn an_unschedulable_pod_fails_at_the_deadline_with_the_reason() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(3)).await;
    let id = shared.add_tenant("ksched").await;
    fake.set_unschedulable("zeroclaw-ksched");

    let err = wake(&app, &id).await.unwrap_err();

    assert!(err.to_string().contains("Unschedulable"), "{err}");
    assert_eq!(
        shared.registry.get(&id).await.unwrap().unwrap().status,
        TenantStatus::Idle
    );
    assert!(
        eventually(Duration::from_secs(5), || fake
            .get("pods", NS, "zeroclaw-ksched")
            .is_none())
        .await
    );
}

/// Dev clusters (no S3 CSI driver): no static PV, a claim from the storage class, memory still kept.
/// Puts `id` to sleep and waits until its pod is gone (its agent saved and exited).
async fn sleep_until_the_pod_is_gone(fake: &FakeK8s, app: &App, id: &TenantId) {
    orchestrator::tenants::sleep(app, id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(35), || fake
            .get("pods", NS, &id.pod_name())
            .is_none())
        .await,
        "pod removed after its agent exited"
    );
}

#[tokio::test]
async fn another_storage_class_gets_a_provisioned_claim_and_keeps_the_memory() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let settings = common::k8s::K8sSettings {
        state_storage_class: "standard".into(),
        orchestrator_url: None,
        ..k8s_settings()
    };
    let leader = std::sync::Arc::new(orchestrator::leader::AlwaysLeader);
    let app =
        replica_with_settings(&fake, &shared, Duration::from_secs(30), leader, settings).await;
    let id = shared.add_tenant("kdyn").await;

    let first = wake(&app, &id).await.unwrap();
    assert!(fake
        .get("persistentvolumes", "", "pv-tenant-kdyn")
        .is_none());
    let pvc = fake
        .get("persistentvolumeclaims", NS, "pvc-tenant-kdyn")
        .expect("pvc");
    assert_eq!(pvc["spec"]["storageClassName"], "standard");
    assert!(pvc["spec"]["volumeName"].is_null());
    assert_eq!(
        agent_chat(&shared, &id, &first.endpoint, "one").await,
        "echo: one (#1)"
    );

    sleep_until_the_pod_is_gone(&fake, &app, &id).await;
    let second = wake(&app, &id).await.unwrap();
    assert_eq!(
        agent_chat(&shared, &id, &second.endpoint, "two").await,
        "echo: two (#2)"
    );
    app.runtime.stop(&id).await.unwrap();
    app.runtime.remove(&id).await.unwrap();
    assert!(fake
        .get("persistentvolumeclaims", NS, "pvc-tenant-kdyn")
        .is_none());
}

#[tokio::test]
async fn stop_saves_state_through_sigterm_and_a_new_pod_continues_the_memory() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kstate").await;
    let first = wake(&app, &id).await.unwrap();
    assert_eq!(
        agent_chat(&shared, &id, &first.endpoint, "one").await,
        "echo: one (#1)"
    );

    sleep_until_the_pod_is_gone(&fake, &app, &id).await;
    assert!(common::state_file::newest(
        &fake.s3_dir("zeroclaw-tenant-state", "tenants/kstate/"),
        "brain.db"
    )
    .unwrap()
    .is_some_and(|saved| saved.generation > 0));

    let second = wake(&app, &id).await.unwrap();
    assert_eq!(
        agent_chat(&shared, &id, &second.endpoint, "two").await,
        "echo: two (#2)"
    );

    app.runtime.stop(&id).await.unwrap();
    app.runtime.remove(&id).await.unwrap();
    assert!(fake.get("secrets", NS, "tenant-kstate").is_none());
    assert!(fake
        .get("persistentvolumeclaims", NS, "pvc-tenant-kstate")
        .is_none());
    assert!(fake
        .get("persistentvolumes", "", "pv-tenant-kstate")
        .is_none());
    app.runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn a_pod_that_already_runs_is_adopted_not_duplicated() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kadopt").await;
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    let first = app
        .runtime
        .start(&rec, Duration::from_secs(30))
        .await
        .unwrap();
    fake.reset_counts();

    let again = app
        .runtime
        .start(&rec, Duration::from_secs(30))
        .await
        .unwrap();

    assert_eq!(
        (first.pod_name, first.pod_ip),
        (again.pod_name, again.pod_ip)
    );
    assert_eq!(
        (first.warm, again.warm),
        (Some(false), None),
        "a cold start, then an adoption"
    );
    assert_eq!(fake.count("create", "pods"), 0);
}

#[tokio::test]
async fn the_warm_pool_manager_keeps_the_deployment_at_its_target() {
    let fake = FakeK8s::start().await;
    let client = fake.client().await;
    let m = WarmPoolManager::new(client.clone(), k8s_settings(), 2, Duration::from_secs(30));
    m.ensure().await.unwrap();
    let d = fake.get("deployments", NS, "warm-pool").unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["priorityClassName"],
        "tenant-low"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        IMAGE
    );
    let warm = || {
        fake.list("pods")
            .iter()
            .filter(|p| {
                p["metadata"]["labels"]["warm"] == "true" && p["status"]["phase"] == "Running"
            })
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || warm() == 2).await);

    let rv = |d: Value| d["metadata"]["resourceVersion"].clone();
    let before = rv(fake.get("deployments", NS, "warm-pool").unwrap());
    m.ensure().await.unwrap();
    assert_eq!(
        rv(fake.get("deployments", NS, "warm-pool").unwrap()),
        before,
        "no drift, no write"
    );

    let zero = WarmPoolManager::new(client, k8s_settings(), 0, Duration::from_secs(30));
    zero.ensure().await.unwrap();
    assert_eq!(
        fake.get("deployments", NS, "warm-pool").unwrap()["spec"]["replicas"],
        0
    );
    assert!(eventually(Duration::from_secs(10), || warm() == 0).await);
}

/// The tenant's configuration reaches its pod as ConfigMap `tenant-config-{id}` mounted read-only
/// at `AGENT_CONFIG_DIR`; the credential comes from Secret `tenant-{id}` (never a literal), and the
/// ConfigMap goes with the tenant.
#[tokio::test]
async fn config_map_and_credential_reach_the_pod_and_go_with_the_tenant() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kconf").await;
    let config: common::agent_config::AgentConfig =
        serde_json::from_str(r#"{"model":"m1","files":{"SOUL.md":"be kind"}}"#).unwrap();
    orchestrator::tenants::set_config(&app, &id, config)
        .await
        .unwrap();

    let woken = wake(&app, &id).await.unwrap();
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    let cm = fake
        .get("configmaps", NS, "tenant-config-kconf")
        .expect("config map");
    let file: Value = serde_json::from_str(cm["data"]["tenant.json"].as_str().unwrap()).unwrap();
    assert_eq!(file["files"]["SOUL.md"], "be kind");
    assert_eq!(file["model"], "m1");
    assert_eq!(file["provider"], "llamacpp");
    let pod = fake.get("pods", NS, "zeroclaw-kconf").unwrap();
    let container = &pod["spec"]["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/zeroclaw-config")
        .expect("config mount")
        .clone();
    assert_eq!(mount["readOnly"], true);
    let env = container["env"].as_array().unwrap();
    let by_name = |n: &str| env.iter().find(|e| e["name"] == n).cloned().unwrap();
    assert_eq!(by_name("AGENT_CONFIG_DIR")["value"], "/zeroclaw-config");
    let agent_env = by_name("AGENT_TOKEN");
    assert!(agent_env.get("value").is_none());
    assert_eq!(
        agent_env["valueFrom"]["secretKeyRef"]["name"],
        "tenant-kconf"
    );
    assert_eq!(agent_env["valueFrom"]["secretKeyRef"]["key"], "AGENT_TOKEN");
    assert!(!pod.to_string().contains(rec.agent_token.expose()));
    assert!(!cm.to_string().contains(rec.agent_token.expose()));
    // The agent got the file through the mount, and only its own credential is answered.
    assert_eq!(
        agent_chat(&shared, &id, &woken.endpoint, "hi").await,
        "echo: hi (#1)"
    );
    let other = reqwest::Client::new()
        .post(format!("http://{}/webhook", woken.endpoint))
        .bearer_auth("another-tenants-credential")
        .json(&json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    let log = std::fs::read_to_string(fake.agent_log("zeroclaw-kconf")).unwrap_or_default();
    assert!(
        log.contains("agent configuration loaded") && log.contains("SOUL.md"),
        "{log}"
    );
    assert!(!log.contains("be kind"), "persona contents are not logged");
    assert!(
        !log.contains(rec.agent_token.expose()),
        "credential not logged"
    );

    orchestrator::tenants::delete(&app, &id, false)
        .await
        .unwrap();
    assert!(fake.get("configmaps", NS, "tenant-config-kconf").is_none());
    assert!(fake.get("secrets", NS, "tenant-kconf").is_none());
}

/// A pod in phase Failed, or Evicted, is gone: the reconciler resets its running record and the
/// next wake replaces the pod instead of adopting it.
#[tokio::test]
async fn failed_and_evicted_pods_count_as_gone() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    for (tenant, phase, reason) in [
        ("kfail", "Failed", "Error"),
        ("kevict", "Failed", "Evicted"),
    ] {
        let id = shared.add_tenant(tenant).await;
        wake(&app, &id).await.unwrap();
        let pod = format!("zeroclaw-{tenant}");
        let uid = fake.get("pods", NS, &pod).unwrap()["metadata"]["uid"].clone();
        fake.end_pod(NS, &pod, phase, reason);

        let report = orchestrator::reconciler::reconcile(&app).await.unwrap();
        assert!(report.reset.contains(&id), "{tenant}: {report:?}");
        assert_eq!(
            shared.registry.get(&id).await.unwrap().unwrap().status,
            TenantStatus::Idle
        );
        let woken = wake(&app, &id).await.unwrap();
        let new = fake.get("pods", NS, &pod).unwrap();
        assert_ne!(
            new["metadata"]["uid"], uid,
            "{tenant}: a new pod, not the dead one"
        );
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(
            agent_chat(&shared, &id, &woken.endpoint, "hi").await,
            "echo: hi (#1)",
            "{tenant}"
        );

        // Also without the reconciler: a wake finding a dead pod behind a running record.
        fake.end_pod(NS, &pod, phase, reason);
        let uid = fake.get("pods", NS, &pod).unwrap()["metadata"]["uid"].clone();
        let woken = wake(&app, &id).await.unwrap();
        let new = fake.get("pods", NS, &pod).unwrap();
        assert_ne!(new["metadata"]["uid"], uid, "{tenant}: replaced at wake");
        assert_eq!(
            agent_chat(&shared, &id, &woken.endpoint, "again").await,
            "echo: again (#1)",
            "{tenant}: a pod that died without SIGTERM saved nothing"
        );
    }
}

/// Issue 15 point 2: the agent saves after SIGTERM, here two seconds after the delete was accepted
/// (a slow save); a purge deletes the state only after the pod is gone, so the memory stays purged
/// and a new tenant of the same id starts empty.
#[tokio::test]
async fn purge_waits_for_the_last_save_of_a_slow_terminating_pod() {
    use common::state::{DirStateStore, StateStore};
    use platform_tests::fake_k8s::FakeK8sOptions;
    let fake = FakeK8s::start_with(FakeK8sOptions {
        termination_delay: Duration::from_secs(2),
        ..FakeK8sOptions::default()
    })
    .await;
    let shared = Shared::new();
    // The state store reads the bucket the pods' S3 volumes write to, as in a cluster.
    let state = std::sync::Arc::new(DirStateStore::new(
        fake.s3_dir("zeroclaw-tenant-state", "tenants"),
    ));
    let app = orchestrator::app::App::new(
        orchestrator::app::Ports {
            registry: shared.registry.clone(),
            lock: shared.lock.clone(),
            cache: std::sync::Arc::new(common::cache::MemoryCache::new()),
            state: state.clone(),
            runtime: std::sync::Arc::new(orchestrator::runtime::kubernetes::KubeRuntime::new(
                fake.client().await,
                k8s_settings(),
            )),
            leader: std::sync::Arc::new(orchestrator::leader::AlwaysLeader),
            webhook_records: std::sync::Arc::new(
                common::webhook_record::MemoryWebhookRecords::default(),
            ),
        },
        common::telegram::TelegramClient::new("http://127.0.0.1:1"),
        orchestrator::app::Settings {
            pod_ready_wait: Duration::from_secs(30),
            ..orchestrator::app::Settings::default()
        },
    );
    let id = shared.add_tenant("kpurge").await;
    let first = wake(&app, &id).await.unwrap();
    assert_eq!(
        agent_chat(&shared, &id, &first.endpoint, "secret memory").await,
        "echo: secret memory (#1)"
    );

    orchestrator::tenants::delete(&app, &id, true)
        .await
        .unwrap();
    assert!(
        fake.get("pods", NS, "zeroclaw-kpurge").is_none(),
        "the purge returned only once the pod was gone"
    );
    assert_eq!(state.load(&id).await.unwrap(), None, "state purged");
    assert_eq!(
        common::state_file::newest(
            &fake.s3_dir("zeroclaw-tenant-state", "tenants/kpurge/"),
            "brain.db"
        )
        .unwrap(),
        None,
        "the agent's last save did not bring the memory back"
    );

    let id = shared.add_tenant("kpurge").await;
    let second = wake(&app, &id).await.unwrap();
    assert_eq!(
        agent_chat(&shared, &id, &second.endpoint, "hello").await,
        "echo: hello (#1)",
        "a new tenant of the same id starts with no memory"
    );
    app.runtime.stop(&id).await.unwrap();
    app.runtime.remove(&id).await.unwrap();
}

/// A failed start's clean-up deletes the pod it created (the UID from its create answer), never a
/// pod of the same name that replaced it meanwhile (another replica's wake after a lock lapse).
#[tokio::test]
async fn a_failed_starts_clean_up_leaves_a_pod_that_replaced_its_own() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kswap").await;
    fake.set_unschedulable("zeroclaw-kswap");
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    let runtime = app.runtime.clone();
    let start = tokio::spawn(async move { runtime.start(&rec, Duration::from_secs(3)).await });
    assert!(
        eventually(Duration::from_secs(5), || fake
            .get("pods", NS, "zeroclaw-kswap")
            .is_some())
        .await,
        "pod A created"
    );
    let uid = |pod: &Value| pod["metadata"]["uid"].as_str().unwrap().to_owned();
    let old_uid = uid(&fake.get("pods", NS, "zeroclaw-kswap").unwrap());

    fake.delete_out_of_band(NS, "zeroclaw-kswap");
    fake.insert_running_pod(
        NS,
        "zeroclaw-kswap",
        json!({"app": "zeroclaw", "tenant": "kswap"}),
        "node-1",
    );
    let new_uid = uid(&fake.get("pods", NS, "zeroclaw-kswap").unwrap());
    assert_ne!(new_uid, old_uid);

    start.await.unwrap().unwrap_err();

    let pod = fake
        .get("pods", NS, "zeroclaw-kswap")
        .expect("pod B still exists");
    assert_eq!(uid(&pod), new_uid);
    assert!(pod["metadata"].get("deletionTimestamp").is_none());
}
