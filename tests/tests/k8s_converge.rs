//! The Kubernetes adapter converges the objects it owns by server-side apply: a hand edit of a
//! tenant's ConfigMap, Secret or PV, or of the warm-pool Deployment, is reset by the next start or
//! pass, while fields someone else added stay and an immutable volume source is left alone.

mod k8s_support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use orchestrator::wake::wake;
use orchestrator::warm_pool::WarmPoolManager;
use platform_tests::fake_k8s::FakeK8s;
use serde_json::{json, Value};

use k8s_support::*;

const T: Duration = Duration::from_secs(30);

/// A merge patch as `kubectl edit` makes one: it takes ownership of what it changes.
fn by_hand() -> PatchParams {
    PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    }
}

fn b64(s: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).unwrap()
}

#[tokio::test]
async fn hand_edits_of_a_tenants_config_map_secret_and_volume_are_reset_at_the_next_start() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("kdrift").await;
    wake(&app, &id).await.unwrap();
    let rec = shared.registry.get(&id).await.unwrap().unwrap();
    let cm_before = fake.get("configmaps", NS, "tenant-config-kdrift").unwrap();
    let pv_before = fake
        .get("persistentvolumes", "", "pv-tenant-kdrift")
        .unwrap();

    let client = fake.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pvs: Api<PersistentVolume> = Api::all(client);
    cms.patch(
        "tenant-config-kdrift",
        &by_hand(),
        &Patch::Merge(
            json!({"metadata": {"labels": {"tenant": "someone-else", "team": "ops"}},
                             "data": {"tenant.json": "{}"}}),
        ),
    )
    .await
    .unwrap();
    secrets
        .patch(
            "tenant-kdrift",
            &by_hand(),
            &Patch::Merge(json!({"data": {"AGENT_TOKEN": b64("stale")}})),
        )
        .await
        .unwrap();
    // A Go-era shape: no `uid=`/`gid=` options, so the non-root agent could not write its state.
    pvs.patch(
        "pv-tenant-kdrift",
        &by_hand(),
        &Patch::Merge(
            json!({"spec": {"mountOptions": ["allow-delete", "prefix tenants/kdrift/"]}}),
        ),
    )
    .await
    .unwrap();

    app.runtime.start(&rec, T).await.unwrap();

    let cm = fake.get("configmaps", NS, "tenant-config-kdrift").unwrap();
    assert_eq!(cm["data"], cm_before["data"]);
    assert_eq!(cm["metadata"]["labels"]["tenant"], "kdrift");
    assert_eq!(
        cm["metadata"]["labels"]["team"], "ops",
        "a label the orchestrator does not set stays"
    );
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"zeroclaw-orchestrator"), "{managers:?}");
    let secret = fake.get("secrets", NS, "tenant-kdrift").unwrap();
    assert_eq!(secret["data"]["AGENT_TOKEN"], b64(rec.agent_token.expose()));
    assert_eq!(secret["data"]["TELEGRAM_BOT_TOKEN"], b64("123:ABC-secret"));
    let pv = fake
        .get("persistentvolumes", "", "pv-tenant-kdrift")
        .unwrap();
    assert_eq!(
        pv["spec"]["mountOptions"],
        pv_before["spec"]["mountOptions"]
    );
}

/// A PV whose volume source differs (immutable: another bucket or handle) keeps the tenant's state:
/// the wake goes on with it and says so, instead of failing every wake on the API server's 422.
#[tokio::test]
async fn a_volume_with_another_source_is_kept_and_the_wake_goes_on() {
    capture_logs();
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("kvolsrc").await;
    let mut pv = common::k8s::tenant_pv(&id, &k8s_settings());
    pv.spec
        .as_mut()
        .unwrap()
        .csi
        .as_mut()
        .unwrap()
        .volume_handle = "go-era-handle".into();
    let pvs: Api<PersistentVolume> = Api::all(fake.client().await);
    pvs.create(&PostParams::default(), &pv).await.unwrap();

    wake(&app, &id).await.unwrap();

    let pv = fake
        .get("persistentvolumes", "", "pv-tenant-kvolsrc")
        .unwrap();
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], "go-era-handle");
    assert_eq!(
        log_lines(&["pv-tenant-kvolsrc", "keeping the existing one"]).len(),
        1
    );
}

#[tokio::test]
async fn the_warm_pool_manager_resets_a_hand_scaled_or_edited_deployment() {
    let fake = FakeK8s::start().await;
    let client = fake.client().await;
    let m = WarmPoolManager::new(client.clone(), k8s_settings(), 2, T);
    m.ensure().await.unwrap();
    let want = fake.get("deployments", NS, "warm-pool").unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client, NS);
    let grace = |d: &Value| d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].clone();

    deployments
        .patch(
            "warm-pool",
            &by_hand(),
            &Patch::Merge(json!({"spec": {"replicas": 5,
                                          "template": {"spec": {"terminationGracePeriodSeconds": 99}}}})),
        )
        .await
        .unwrap();
    m.ensure().await.unwrap();
    let d = fake.get("deployments", NS, "warm-pool").unwrap();
    assert_eq!(
        (d["spec"]["replicas"].clone(), grace(&d)),
        (json!(2), grace(&want))
    );

    // A template edit alone (replicas and image untouched) is drift too.
    deployments
        .patch(
            "warm-pool",
            &by_hand(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 99}}}}),
            ),
        )
        .await
        .unwrap();
    m.ensure().await.unwrap();
    let d = fake.get("deployments", NS, "warm-pool").unwrap();
    assert_eq!(grace(&d), grace(&want));
    assert_eq!(d["spec"]["template"], want["spec"]["template"]);
}
