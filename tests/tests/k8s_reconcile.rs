//! The reconciler on Kubernetes: a pod deleted behind its back resets the tenant, an orphan pod is
//! deleted, and a pass over 10,000 tenants and 1,000 pods costs one pod List.

mod k8s_support;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Secret, TenantId, TenantRecord, TenantStatus};
use orchestrator::reconciler::reconcile;
use orchestrator::wake::wake;
use platform_tests::fake_k8s::FakeK8s;
use serde_json::json;

use k8s_support::*;

#[tokio::test]
async fn a_pod_deleted_out_of_band_resets_the_tenant_to_idle() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kgone").await;
    wake(&app, &id).await.unwrap();

    fake.delete_out_of_band(NS, "zeroclaw-kgone");
    let report = reconcile(&app).await.unwrap();

    assert_eq!(report.reset, vec![id.clone()]);
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TenantStatus::Idle);
    assert!(rec.pod_ip.is_empty());
    // The next wake starts a fresh pod.
    wake(&app, &id).await.unwrap();
    assert!(fake.get("pods", NS, "zeroclaw-kgone").is_some());
}

#[tokio::test]
async fn an_orphan_tenant_pod_is_deleted() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("korphan").await;
    fake.insert_running_pod(
        NS,
        "zeroclaw-korphan",
        json!({"app": "zeroclaw", "tenant": "korphan"}),
        "node-1",
    );
    fake.insert_running_pod(
        NS,
        "zeroclaw-nobody",
        json!({"app": "zeroclaw", "tenant": "nobody"}),
        "node-1",
    );

    let report = reconcile(&app).await.unwrap();

    let mut stopped = report.orphans_stopped.clone();
    stopped.sort();
    assert_eq!(stopped, vec![id, TenantId::parse("nobody").unwrap()]);
    assert!(fake.get("pods", NS, "zeroclaw-korphan").is_none());
    assert!(fake.get("pods", NS, "zeroclaw-nobody").is_none());
}

#[tokio::test]
async fn one_pass_over_10000_tenants_and_1000_pods_makes_one_list_call() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let now = Utc::now();
    for i in 0..10_000 {
        let id = TenantId::parse(&format!("t{i:05}")).unwrap();
        let mut rec = TenantRecord::new(id.clone(), Secret::new("1:A"), 300, NS, now);
        if i % 10 == 0 {
            rec.status = TenantStatus::Running;
            rec.pod_name = id.pod_name();
            fake.insert_running_pod(
                NS,
                &id.pod_name(),
                json!({"app": "zeroclaw", "tenant": id.as_str()}),
                "node-1",
            );
            // The record points where the pod is (one that points elsewhere gets checked).
            rec.pod_ip = fake.get("pods", NS, &id.pod_name()).unwrap()["status"]["podIP"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        shared.registry.create(&rec).await.unwrap();
    }
    // Unrelated pods in the namespace are not the reconciler's business.
    for i in 0..50 {
        fake.insert_running_pod(
            NS,
            &format!("warm-pool-{i}"),
            json!({"app": "warm-pool", "warm": "true"}),
            "node-2",
        );
    }
    assert_eq!(fake.list("pods").len(), 1_050);
    fake.reset_counts();

    let started = Instant::now();
    let report = reconcile(&app).await.unwrap();
    let took = started.elapsed();

    eprintln!("reconcile pass over 10,000 records and 1,000 pods: {took:?}");
    assert_eq!(report, Default::default(), "all consistent: nothing to fix");
    assert_eq!(fake.count("list", "pods"), 1);
    assert_eq!(fake.count("get", "pods"), 0);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// Fencing by pod UID: a stop acting on an old listing (a stale reconciler pass, a replica whose
/// lock lapsed) deletes the pod it saw, never the one a later wake created under the same name.
#[tokio::test]
async fn a_stale_stop_holding_the_old_pods_uid_leaves_the_pod_that_replaced_it_serving() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(30)).await;
    let id = shared.add_tenant("kuid").await;
    let uid = |pod: &serde_json::Value| pod["metadata"]["uid"].as_str().unwrap().to_owned();

    wake(&app, &id).await.unwrap();
    let old_uid = uid(&fake.get("pods", NS, "zeroclaw-kuid").unwrap());
    // What the stale caller holds: the listing that saw pod A.
    let stale: Vec<_> = app
        .runtime
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.tenant == id)
        .collect();
    assert_eq!(
        stale[0].instance.as_ref().map(|i| i.uid.clone()),
        Some(old_uid.clone())
    );

    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(35), || fake
            .get("pods", NS, "zeroclaw-kuid")
            .is_none())
        .await,
        "pod A gone after its agent exited"
    );
    let woken = wake(&app, &id).await.unwrap();
    let new_uid = uid(&fake.get("pods", NS, "zeroclaw-kuid").unwrap());
    assert_ne!(new_uid, old_uid, "a new pod B of the same name");

    app.runtime.stop_listed(&id, &stale).await.unwrap();

    let pod = fake
        .get("pods", NS, "zeroclaw-kuid")
        .expect("pod B still exists");
    assert_eq!(uid(&pod), new_uid);
    assert!(
        pod["metadata"].get("deletionTimestamp").is_none(),
        "pod B is not terminating"
    );
    let reply = agent_chat(&shared, &id, &woken.endpoint, "still here").await;
    assert!(
        reply.starts_with("echo: still here"),
        "pod B serves: {reply}"
    );
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TenantStatus::Running);
}
