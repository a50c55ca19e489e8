//! Golden tests of the Kubernetes object builders: each object serialised to YAML must equal the
//! checked-in file under `common/src/k8s/golden/` (`UPDATE_GOLDEN=1` rewrites them after a deliberate
//! change; review the diff).

use std::path::PathBuf;

use common::k8s::{self, K8sSettings};
use common::{Secret, TenantId};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../common/src/k8s/golden")
}

fn check<T: serde::Serialize>(name: &str, obj: &T) {
    let yaml = serde_yaml::to_string(obj).unwrap();
    let path = golden_dir().join(format!("{name}.yaml"));
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &yaml).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(yaml, want, "{name} differs from {}", path.display());
}

fn settings() -> K8sSettings {
    K8sSettings {
        namespace: "tenants".into(),
        image: "zeroclaw:latest".into(),
        runtime_class: "kata-qemu".into(),
        agent_port: 3000,
        s3_bucket: "zeroclaw-tenant-state".into(),
        state_storage_class: k8s::STATE_STORAGE_CLASS.into(),
        orchestrator_url: None,
    }
}

fn alice() -> TenantId {
    TenantId::parse("alice").unwrap()
}

#[test]
fn tenant_pod() {
    check("pod", &k8s::tenant_pod(&alice(), &settings(), None));
}

/// A tenant's resource overrides replace the builder's defaults field by field.
#[test]
fn tenant_pod_with_resource_overrides() {
    let mut pod = k8s::tenant_pod(&alice(), &settings(), None);
    k8s::apply_resources(
        &mut pod,
        &common::resources::AgentResources {
            cpu_limit: Some("2".into()),
            memory_request: Some("1Gi".into()),
            memory_limit: Some("2Gi".into()),
            ..Default::default()
        },
    );
    check("pod-resources", &pod);
}

#[test]
fn tenant_pod_pinned_without_runtime_class() {
    let s = K8sSettings {
        runtime_class: String::new(),
        ..settings()
    };
    check(
        "pod-pinned-no-runtime-class",
        &k8s::tenant_pod(&alice(), &s, Some("node-2")),
    );
}

#[test]
fn persistent_volume() {
    check("pv", &k8s::tenant_pv(&alice(), &settings()));
}

#[test]
fn persistent_volume_claim() {
    check("pvc", &k8s::tenant_pvc(&alice(), &settings()));
}

/// Without the S3 CSI driver (dev clusters) the claim is provisioned by the cluster's storage class.
#[test]
fn persistent_volume_claim_on_another_storage_class() {
    let s = K8sSettings {
        state_storage_class: "standard".into(),
        ..settings()
    };
    assert!(!s.uses_s3_csi());
    check("pvc-dynamic", &k8s::tenant_pvc(&alice(), &s));
}

#[test]
fn secret() {
    check(
        "secret",
        &k8s::tenant_secret(
            &alice(),
            &Secret::new("123:ABC-golden"),
            &Secret::new("agent-credential-golden"),
            &settings(),
        ),
    );
}

#[test]
fn config_map() {
    let rendered = common::agent_config::AgentConfig::default()
        .render("alice", &Default::default())
        .unwrap();
    check(
        "configmap",
        &k8s::tenant_config_map(
            &alice(),
            &serde_json::to_string(&rendered).unwrap(),
            &settings(),
        ),
    );
}

#[test]
fn warm_pool_deployment() {
    check("warm-pool", &k8s::warm_pool_deployment(&settings(), 10));
}

#[test]
fn warm_pool_deployment_scaled_to_zero() {
    check("warm-pool-zero", &k8s::warm_pool_deployment(&settings(), 0));
}

/// The pod spec references the token through the Secret and never contains it.
#[test]
fn pod_never_carries_the_token() {
    let pod = serde_yaml::to_string(&k8s::tenant_pod(&alice(), &settings(), None)).unwrap();
    let secret = serde_yaml::to_string(&k8s::tenant_secret(
        &alice(),
        &Secret::new("123:ABC-golden"),
        &Secret::new("agent-credential-golden"),
        &settings(),
    ))
    .unwrap();
    assert!(!pod.contains("123:ABC-golden"));
    assert!(!pod.contains("agent-credential-golden"));
    assert!(!secret.contains("agent-credential-golden"));
    assert!(pod.contains("secretKeyRef"));
    assert!(
        !secret.contains("123:ABC-golden"),
        "secret data is base64, never plain text in YAML"
    );
}
