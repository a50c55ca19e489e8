//! Tenant lifecycle on the fake cluster (issue 17): Kubernetes Events on the tenant's pod, the pod
//! log through the API, an image pull failure as the last error, suspend, and deletions the
//! reconciler finishes.

mod k8s_support;

use std::time::Duration;

use common::lifecycle::{Phase, EVENTS_KEPT};
use common::TenantStatus;
use orchestrator::runtime::LogQuery;
use orchestrator::wake::wake;
use orchestrator::{operations, reconciler, Error};
use platform_tests::fake_k8s::FakeK8s;
use serde_json::{json, Value};

use k8s_support::*;

const T: Duration = Duration::from_secs(30);

/// The fake cluster's Events about pod `pod`: (type, reason, message).
fn pod_events(fake: &FakeK8s, pod: &str) -> Vec<(String, String, String)> {
    let mut evs: Vec<Value> = fake
        .list("events")
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == pod && e["involvedObject"]["kind"] == "Pod")
        .collect();
    evs.sort_by_key(|e| {
        e["metadata"]["labels"]["seq"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
    });
    evs.iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
}

#[tokio::test]
async fn wakes_and_sleeps_are_kubernetes_events_on_the_pod_and_its_log_is_read_through_the_api() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("kev").await;
    warm_pod(&fake, "warm-pool-ev001").await;

    let woken = wake(&app, &id).await.unwrap();
    assert_eq!(
        agent_chat(&shared, &id, &woken.endpoint, "one").await,
        "echo: one (#1)"
    );
    assert!(
        eventually(Duration::from_secs(5), || pod_events(&fake, "zeroclaw-kev")
            .iter()
            .any(|e| e.1 == "Woke"))
        .await,
        "a Woke event on the pod"
    );
    let evs = pod_events(&fake, "zeroclaw-kev");
    let woke = evs.iter().find(|e| e.1 == "Woke").unwrap();
    assert_eq!(woke.0, "Normal");
    assert!(woke.2.contains("warm pool hit"), "{woke:?}");
    let ev = fake
        .list("events")
        .into_iter()
        .find(|e| e["reason"] == "Woke")
        .unwrap();
    assert_eq!(ev["metadata"]["labels"]["tenant"], "kev");
    assert_eq!(ev["source"]["component"], "orchestrator");

    // The agent's own output, through the pod log subresource.
    let log = operations::logs(&app, &id, &LogQuery::default())
        .await
        .unwrap();
    assert!(log.contains("agent listening"), "{log}");
    let tail = operations::logs(
        &app,
        &id,
        &LogQuery {
            tail: Some(1),
            ..LogQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(tail.lines().count(), 1, "{tail:?}");

    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || pod_events(&fake, "zeroclaw-kev")
            .iter()
            .any(|e| e.1 == "Slept" && e.2.contains("manual sleep")))
        .await,
        "a Slept event saying why: {:?}",
        pod_events(&fake, "zeroclaw-kev")
    );
    assert!(
        eventually(T, || fake.get("pods", NS, "zeroclaw-kev").is_none()).await,
        "pod gone after sleep"
    );
    let asleep = operations::logs(&app, &id, &LogQuery::default())
        .await
        .unwrap_err();
    assert!(
        asleep.to_string().contains("has no pod"),
        "a clear answer for a sleeping tenant: {asleep}"
    );

    // Woken again: `previous` reads the last run's output (the fake keeps it, as a restarted
    // container's); the events say it was a cold start this time.
    wake(&app, &id).await.unwrap();
    let previous = operations::logs(
        &app,
        &id,
        &LogQuery {
            previous: true,
            ..LogQuery::default()
        },
    )
    .await
    .unwrap();
    assert!(previous.contains("brain.db saved"), "{previous}");
    let reasons: Vec<String> = operations::events(&app, &id, 0, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert_eq!(reasons, ["Woke", "Slept", "Woke"]);
    let last = operations::events(&app, &id, 0, Some(1)).await.unwrap();
    assert!(last[0].message.contains("warm pool miss"), "{last:?}");
    const { assert!(EVENTS_KEPT >= 3) };
}

#[tokio::test]
async fn an_image_pull_failure_is_the_last_error_and_a_warning_event() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, Duration::from_secs(20)).await;
    let id = shared.add_tenant("kpullerr").await;
    fake.fail_image(IMAGE, "ErrImagePull");

    wake(&app, &id).await.unwrap_err();
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.phase(), Phase::Error);
    let err = rec.last_error.expect("last error");
    assert_eq!(err.reason, "ImagePullFailed");
    assert!(err.message.contains("ErrImagePull"), "{}", err.message);
    assert!(
        eventually(Duration::from_secs(5), || pod_events(
            &fake,
            "zeroclaw-kpullerr"
        )
        .iter()
        .any(|e| e.0 == "Warning"
            && e.1 == "StartFailed"
            && e.2.contains("ImagePullFailed")))
        .await,
        "{:?}",
        pod_events(&fake, "zeroclaw-kpullerr")
    );
}

#[tokio::test]
async fn a_suspended_tenant_has_no_pod_is_never_woken_and_an_interrupted_suspend_is_finished() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("ksusp").await;
    wake(&app, &id).await.unwrap();

    operations::suspend(&app, &id).await.unwrap();
    assert!(eventually(T, || fake.get("pods", NS, "zeroclaw-ksusp").is_none()).await);
    assert!(
        common::state_file::newest(
            &fake.s3_dir("zeroclaw-tenant-state", "tenants/ksusp/"),
            "brain.db"
        )
        .unwrap()
        .is_some(),
        "the suspended agent's state was saved"
    );
    let creates = fake.count("create", "pods");
    assert!(matches!(wake(&app, &id).await, Err(Error::Suspended(_))));
    assert_eq!(
        fake.count("create", "pods"),
        creates,
        "no pod for a suspended tenant"
    );

    // A replica that crashed between setting the flag and stopping the pod: the reconciler stops it.
    operations::resume(&app, &id).await.unwrap();
    wake(&app, &id).await.unwrap();
    shared.registry.set_suspended(&id, true).await.unwrap();
    let report = reconciler::reconcile(&app).await.unwrap();
    assert_eq!(report.suspended_stopped, vec![id.clone()]);
    assert!(eventually(T, || fake.get("pods", NS, "zeroclaw-ksusp").is_none()).await);
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.phase()),
        (TenantStatus::Idle, Phase::Suspended)
    );
}

#[tokio::test]
async fn the_reconciler_finishes_a_deletion_a_crashed_replica_left_half_done() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("kdel").await;
    wake(&app, &id).await.unwrap();
    assert!(fake.get("secrets", NS, "tenant-kdel").is_some());

    // The deleting replica marked the record and died before removing anything.
    shared.registry.set_deleting(&id).await.unwrap();
    assert_eq!(
        shared.registry.get(&id).await.unwrap().unwrap().phase(),
        Phase::Deleting
    );
    assert!(
        matches!(wake(&app, &id).await, Err(Error::NotFound(_))),
        "a tenant being deleted is not woken"
    );
    let report = reconciler::reconcile(&app).await.unwrap();
    assert_eq!(report.deletions_finished, vec![id.clone()]);
    assert!(shared.registry.get(&id).await.unwrap().is_none());
    assert!(fake.get("secrets", NS, "tenant-kdel").is_none());
    assert!(fake
        .get("persistentvolumeclaims", NS, "pvc-tenant-kdel")
        .is_none());
    assert!(fake
        .get("persistentvolumes", "", "pv-tenant-kdel")
        .is_none());
    assert!(eventually(T, || fake.get("pods", NS, "zeroclaw-kdel").is_none()).await);
    let reasons: Vec<String> = operations::events(&app, &id, 0, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert_eq!(
        reasons.last().map(String::as_str),
        Some("Deleted"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn per_tenant_resources_are_validated_and_applied_at_the_next_start() {
    use common::resources::AgentResources;
    use orchestrator::tenants::{update, UpdateTenant};

    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("kres").await;
    let first = wake(&app, &id).await.unwrap();
    let limits = |fake: &FakeK8s| {
        let pod = fake.get("pods", NS, "zeroclaw-kres").unwrap();
        pod["spec"]["containers"][0]["resources"].clone()
    };
    assert_eq!(
        limits(&fake)["limits"]["memory"],
        "512Mi",
        "platform default"
    );

    // Out of the operator's bounds, malformed, or a request above its limit: refused, nothing stored.
    for bad in [
        AgentResources {
            cpu_limit: Some("64".into()),
            ..Default::default()
        },
        AgentResources {
            memory_limit: Some("lots".into()),
            ..Default::default()
        },
        AgentResources {
            memory_request: Some("2Gi".into()),
            ..Default::default()
        },
    ] {
        let req = UpdateTenant {
            resources: Some(bad.clone()),
            ..UpdateTenant::default()
        };
        let err = update(&app, &id, req).await.unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{bad:?}: {err:?}");
    }
    assert!(shared
        .registry
        .get(&id)
        .await
        .unwrap()
        .unwrap()
        .resources
        .is_empty());

    let req = UpdateTenant {
        resources: Some(AgentResources {
            cpu_limit: Some("1500m".into()),
            memory_request: Some("768Mi".into()),
            memory_limit: Some("1Gi".into()),
            ..Default::default()
        }),
        ..UpdateTenant::default()
    };
    let view = update(&app, &id, req).await.unwrap();
    assert_eq!(view.resources.memory_limit.as_deref(), Some("1Gi"));
    assert_eq!(
        limits(&fake)["limits"]["memory"],
        "512Mi",
        "the running pod is left alone"
    );
    assert!(!first.endpoint.host.is_empty());

    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(eventually(T, || fake.get("pods", NS, "zeroclaw-kres").is_none()).await);
    wake(&app, &id).await.unwrap();
    let r = limits(&fake);
    assert_eq!(
        (&r["requests"]["cpu"], &r["requests"]["memory"]),
        (&json!("100m"), &json!("768Mi")),
        "{r}"
    );
    assert_eq!(
        (&r["limits"]["cpu"], &r["limits"]["memory"]),
        (&json!("1500m"), &json!("1Gi")),
        "{r}"
    );
    let changed = operations::events(&app, &id, 0, None)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.reason == "ConfigChanged")
        .expect("a ConfigChanged event");
    assert!(changed.message.contains("1500m"), "{}", changed.message);
}
