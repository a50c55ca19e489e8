//! Warm pods left labelled `warm=consuming` by a claim that did not finish (its delete failed, or
//! its replica crashed between the relabel and the delete) are deleted by the warm pool manager.

mod k8s_support;

use std::time::Duration;

use chrono::Utc;
use common::k8s;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;
use orchestrator::warm_pool::WarmPoolManager;
use platform_tests::fake_k8s::FakeK8s;
use serde_json::json;

use k8s_support::*;

async fn claimed_at(pods: &Api<Pod>, name: &str, at: chrono::DateTime<Utc>) {
    let patch = json!({"metadata": {"annotations": {k8s::CLAIMED_AT_ANNOTATION: at.to_rfc3339()}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_interrupted_claim_is_cleaned_up_after_the_grace_and_a_claim_in_progress_is_not() {
    let fake = FakeK8s::start().await;
    let claimed = json!({"app": "warm-pool", "warm": "consuming"});
    // What a claim leaves when its delete fails: relabelled, out of the Deployment, running.
    fake.insert_running_pod(NS, "warm-pool-orphan", claimed.clone(), "node-a");
    // A claim a replica is finishing right now.
    fake.insert_running_pod(NS, "warm-pool-claiming", claimed, "node-b");
    fake.insert_running_pod(
        NS,
        "warm-pool-ready",
        json!({"app": "warm-pool", "warm": "true"}),
        "node-c",
    );
    let pods: Api<Pod> = Api::namespaced(fake.client().await, NS);
    claimed_at(
        &pods,
        "warm-pool-orphan",
        Utc::now() - chrono::Duration::minutes(10),
    )
    .await;
    claimed_at(&pods, "warm-pool-claiming", Utc::now()).await;

    let manager = WarmPoolManager::new(
        fake.client().await,
        k8s_settings(),
        1,
        Duration::from_secs(30),
    )
    .with_orphan_grace(Duration::from_secs(60));
    let deleted = manager.sweep_orphans().await.unwrap();

    assert_eq!(deleted, vec!["warm-pool-orphan".to_owned()]);
    assert!(fake.get("pods", NS, "warm-pool-orphan").is_none());
    assert!(
        fake.get("pods", NS, "warm-pool-claiming").is_some(),
        "a claim in progress is left to its replica"
    );
    assert!(
        fake.get("pods", NS, "warm-pool-ready").is_some(),
        "pool pods are untouched"
    );
    assert_eq!(manager.sweep_orphans().await.unwrap(), Vec::<String>::new());
}
