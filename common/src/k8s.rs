//! Kubernetes object builders: pure functions from a tenant and the platform settings to the objects
//! DESIGN.md names (tenant pod, state PV/PVC, token Secret, warm-pool Deployment).
//!
//! State: the PVC mounts the tenant's S3 prefix (Mountpoint CSI) at `STATE_DIR`; the agent restores
//! the newest saved `brain.db` (a `common::state_file` generation: Mountpoint allows no rename and no
//! overwrite) into `DATA_DIR` at start and saves a new one after SIGTERM within the 30 s grace
//! (the agent contract in DESIGN.md, which `tenant-agent` follows). We chose the contract over
//! an init container plus a wrapping entrypoint because a wrapper needs a shell in the image and hides
//! signal handling; an image that cannot follow the contract needs such a wrapper (copy in, exec the
//! agent, on TERM forward it and copy `brain.db` out): for ZeroClaw that is `zeroclaw-launcher`
//! (`launcher/`, the entrypoint of `docker/zeroclaw.Dockerfile`), a binary rather than a script.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, Capabilities, ConfigMap, ConfigMapVolumeSource, Container,
    ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret as K8sSecret,
    SecretKeySelector, SecurityContext, Toleration, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use crate::{Secret, TenantId};

pub const APP_LABEL: &str = "app";
pub const TENANT_LABEL: &str = "tenant";
pub const WARM_LABEL: &str = "warm";
pub const TENANT_APP: &str = "zeroclaw";
pub const WARM_POOL_APP: &str = "warm-pool";
pub const WARM_POOL_NAME: &str = "warm-pool";
/// Label selector of every tenant pod (the reconciler's single List).
pub const TENANT_POD_SELECTOR: &str = "app=zeroclaw";
/// Label selector of claimable warm pods.
pub const WARM_POD_SELECTOR: &str = "app=warm-pool,warm=true";
/// Warm pods a wake has claimed (relabelled) and is about to delete.
pub const CLAIMED_WARM_POD_SELECTOR: &str = "app=warm-pool,warm=consuming";
/// When a warm pod was claimed (RFC 3339), so an orphaned claim can be told from one in progress.
pub const CLAIMED_AT_ANNOTATION: &str = "zeroclaw.io/claimed-at";
/// Secret holding the warm pool's assignment credential (key [`ASSIGN_TOKEN_KEY`]), shared by the
/// orchestrator replicas and the warm agents; it opens `POST /assign` of an unassigned agent only.
pub const WARM_POOL_SECRET: &str = "warm-pool";
pub const ASSIGN_TOKEN_KEY: &str = "ASSIGN_TOKEN";
/// The tenant a warm pod is being assigned to (set with the `warm=consuming` claim).
pub const ASSIGNING_ANNOTATION: &str = "zeroclaw.io/assigning-tenant";
pub const LEADER_LEASE_NAME: &str = "orchestrator-leader";
/// Key of the bot token inside Secret `tenant-{id}`.
pub const BOT_TOKEN_KEY: &str = "TELEGRAM_BOT_TOKEN";
/// Key of the agent credential inside Secret `tenant-{id}`.
pub const AGENT_TOKEN_KEY: &str = "AGENT_TOKEN";
/// Where the tenant's ConfigMap (`tenant.json`) is mounted read-only (`AGENT_CONFIG_DIR`).
pub const CONFIG_DIR: &str = "/zeroclaw-config";
/// Secret with the platform's LLM API key (key [`LLM_API_KEY_KEY`]), optional.
pub const LLM_SECRET_NAME: &str = "llm-credentials";
pub const LLM_API_KEY_KEY: &str = "api_key";
pub const DATA_DIR: &str = "/zeroclaw-data";
pub const STATE_DIR: &str = "/s3-state";
pub const CSI_DRIVER: &str = "s3.csi.aws.com";
pub const STATE_STORAGE_CLASS: &str = "s3-tenant-state";
pub const GRACE_PERIOD_S: i64 = 30;
const AGENT_UID: i64 = 1000;
/// Mountpoint S3 ignores capacity, but the API requires one.
const STATE_CAPACITY: &str = "1Gi";

/// Platform settings the builders need (from the orchestrator's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sSettings {
    pub namespace: String,
    /// Agent image of tenant and warm pods (`ZEROCLAW_IMAGE`).
    pub image: String,
    /// `KATA_RUNTIME_CLASS`; empty means no runtimeClassName.
    pub runtime_class: String,
    pub agent_port: u16,
    pub s3_bucket: String,
    /// `STATE_STORAGE_CLASS`: `s3-tenant-state` mounts the tenant's S3 prefix through a static CSI PV;
    /// any other class gets a dynamically provisioned claim (dev clusters without the S3 CSI driver).
    pub state_storage_class: String,
    /// `AGENT_ORCHESTRATOR_URL`: given to tenant pods as `ORCHESTRATOR_URL`, where an agent busy
    /// with a long task reports its own activity; `None` gives them none.
    pub orchestrator_url: Option<String>,
}

impl K8sSettings {
    /// Whether tenant state lives on the S3 CSI volume (a static PV per tenant).
    pub fn uses_s3_csi(&self) -> bool {
        self.state_storage_class == STATE_STORAGE_CLASS
    }
}

impl Default for K8sSettings {
    fn default() -> Self {
        K8sSettings {
            namespace: crate::tenant::DEFAULT_NAMESPACE.into(),
            image: "zeroclaw:latest".into(),
            runtime_class: "kata-qemu".into(),
            agent_port: 3000,
            s3_bucket: "zeroclaw-tenant-state".into(),
            state_storage_class: STATE_STORAGE_CLASS.into(),
            orchestrator_url: None,
        }
    }
}

/// Label selector of a tenant's pods, whatever their name (`zeroclaw-{id}`, or a warm pod's
/// name after a warm hit).
pub fn tenant_pod_selector(id: &TenantId) -> String {
    format!("{APP_LABEL}={TENANT_APP},{TENANT_LABEL}={id}")
}

pub fn pv_name(id: &TenantId) -> String {
    format!("pv-tenant-{id}")
}

pub fn pvc_name(id: &TenantId) -> String {
    format!("pvc-tenant-{id}")
}

pub fn secret_name(id: &TenantId) -> String {
    format!("tenant-{id}")
}

/// ConfigMap with the tenant's rendered agent configuration.
pub fn config_map_name(id: &TenantId) -> String {
    format!("tenant-config-{id}")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn secret_env(name: &str, secret: String, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
    ])
}

/// Restricted pod security standard: non-root, no escalation, no capabilities, RuntimeDefault seccomp.
fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(AGENT_UID),
        run_as_group: Some(AGENT_UID),
        fs_group: Some(AGENT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn agent_container(s: &K8sSettings, env_vars: Vec<EnvVar>, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: "agent".into(),
        image: Some(s.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(s.agent_port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(env_vars),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("100m", "384Mi")),
            limits: Some(quantities("500m", "512Mi")),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port: IntOrString::Int(i32::from(s.agent_port)),
                ..Default::default()
            }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

/// Scheduling and isolation shared by tenant and warm pods, so a warm pod's node fits the tenant pod.
/// Without a runtime class (a cluster with no Kata nodes) the Kata node selector and toleration go too.
fn base_pod_spec(s: &K8sSettings, priority_class: &str) -> PodSpec {
    let kata = !s.runtime_class.is_empty();
    PodSpec {
        runtime_class_name: kata.then(|| s.runtime_class.clone()),
        priority_class_name: Some(priority_class.into()),
        service_account_name: Some("zeroclaw-tenant".into()),
        automount_service_account_token: Some(false),
        node_selector: kata.then(|| labels(&[("katacontainers.io/kata-runtime", "true")])),
        tolerations: kata.then(|| {
            vec![Toleration {
                key: Some("kata-runtime".into()),
                operator: Some("Equal".into()),
                value: Some("true".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]
        }),
        termination_grace_period_seconds: Some(GRACE_PERIOD_S),
        security_context: Some(pod_security()),
        ..Default::default()
    }
}

fn local_state_volume() -> Volume {
    Volume {
        name: "local-state".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// The tenant's agent pod `zeroclaw-{id}`, optionally pinned to a claimed warm pod's node.
/// Sets the agent container's CPU/memory requests and limits that `r` gives (the rest keep the
/// builder's defaults): a tenant's resources, applied at its next start.
pub fn apply_resources(pod: &mut Pod, r: &crate::resources::AgentResources) {
    let Some(c) = pod
        .spec
        .as_mut()
        .and_then(|s| s.containers.iter_mut().find(|c| c.name == "agent"))
    else {
        return;
    };
    let req = c.resources.get_or_insert_with(Default::default);
    let set = |which: &mut Option<BTreeMap<String, Quantity>>, key: &str, v: &Option<String>| {
        if let Some(v) = v {
            which
                .get_or_insert_with(Default::default)
                .insert(key.to_owned(), Quantity(v.clone()));
        }
    };
    set(&mut req.requests, "cpu", &r.cpu_request);
    set(&mut req.requests, "memory", &r.memory_request);
    set(&mut req.limits, "cpu", &r.cpu_limit);
    set(&mut req.limits, "memory", &r.memory_limit);
}

pub fn tenant_pod(id: &TenantId, s: &K8sSettings, node_name: Option<&str>) -> Pod {
    let mut env_vars = vec![
        env("TENANT_ID", id.as_str()),
        env("AGENT_PORT", s.agent_port.to_string()),
        env("DATA_DIR", DATA_DIR),
        env("STATE_DIR", STATE_DIR),
        env("AGENT_CONFIG_DIR", CONFIG_DIR),
        secret_env("TELEGRAM_BOT_TOKEN", secret_name(id), BOT_TOKEN_KEY, false),
        secret_env("AGENT_TOKEN", secret_name(id), AGENT_TOKEN_KEY, false),
        secret_env("LLM_API_KEY", LLM_SECRET_NAME.into(), LLM_API_KEY_KEY, true),
    ];
    if let Some(url) = &s.orchestrator_url {
        env_vars.push(env("ORCHESTRATOR_URL", url));
    }
    let mounts = vec![
        mount("local-state", DATA_DIR),
        mount("s3-state", STATE_DIR),
        VolumeMount {
            read_only: Some(true),
            ..mount("agent-config", CONFIG_DIR)
        },
    ];
    let mut spec = base_pod_spec(s, "tenant-normal");
    spec.node_name = node_name.map(str::to_owned);
    spec.containers = vec![agent_container(s, env_vars, mounts)];
    spec.volumes = Some(vec![
        local_state_volume(),
        Volume {
            name: "s3-state".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(id),
                read_only: Some(false),
            }),
            ..Default::default()
        },
        Volume {
            name: "agent-config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(id),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    Pod {
        metadata: ObjectMeta {
            name: Some(id.pod_name()),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[
                (APP_LABEL, TENANT_APP),
                (TENANT_LABEL, id.as_str()),
            ])),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The tenant's state volume: its S3 prefix through the Mountpoint CSI driver, kept on release.
/// `allow-delete` lets a save remove the generations it replaced; `allow-overwrite` stays off, as
/// saves only create new files; `allow-other` with uid/gid lets the non-root agent write.
pub fn tenant_pv(id: &TenantId, s: &K8sSettings) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(id)),
            labels: Some(labels(&[
                (APP_LABEL, TENANT_APP),
                (TENANT_LABEL, id.as_str()),
            ])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(STATE_CAPACITY.into()),
            )])),
            access_modes: Some(vec!["ReadWriteMany".into()]),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(STATE_STORAGE_CLASS.into()),
            mount_options: Some(vec![
                "allow-delete".into(),
                "allow-other".into(),
                format!("uid={AGENT_UID}"),
                format!("gid={AGENT_UID}"),
                format!("prefix {}", id.s3_prefix()),
            ]),
            csi: Some(CSIPersistentVolumeSource {
                driver: CSI_DRIVER.into(),
                volume_handle: format!("s3-tenant-{id}"),
                volume_attributes: Some(labels(&[("bucketName", &s.s3_bucket)])),
                ..Default::default()
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                name: Some(pvc_name(id)),
                namespace: Some(s.namespace.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The claim the tenant pod mounts: bound statically to `pv-tenant-{id}` on S3, or provisioned by
/// the cluster's storage class otherwise.
pub fn tenant_pvc(id: &TenantId, s: &K8sSettings) -> PersistentVolumeClaim {
    let s3 = s.uses_s3_csi();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(pvc_name(id)),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[
                (APP_LABEL, TENANT_APP),
                (TENANT_LABEL, id.as_str()),
            ])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![
                if s3 { "ReadWriteMany" } else { "ReadWriteOnce" }.into()
            ]),
            storage_class_name: Some(s.state_storage_class.clone()),
            volume_name: s3.then(|| pv_name(id)),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(STATE_CAPACITY.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Secret `tenant-{id}` holding the bot token and the agent credential, so the pod spec never
/// carries either.
pub fn tenant_secret(
    id: &TenantId,
    token: &Secret,
    agent_token: &Secret,
    s: &K8sSettings,
) -> K8sSecret {
    K8sSecret {
        metadata: ObjectMeta {
            name: Some(secret_name(id)),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[
                (APP_LABEL, TENANT_APP),
                (TENANT_LABEL, id.as_str()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                BOT_TOKEN_KEY.to_string(),
                ByteString(token.expose().as_bytes().to_vec()),
            ),
            (
                AGENT_TOKEN_KEY.to_string(),
                ByteString(agent_token.expose().as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

/// ConfigMap `tenant-config-{id}`: the rendered agent configuration as `tenant.json` (no secrets:
/// the LLM key comes from Secret `llm-credentials`, the credential from `tenant-{id}`).
pub fn tenant_config_map(id: &TenantId, rendered_json: &str, s: &K8sSettings) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(id)),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[
                (APP_LABEL, TENANT_APP),
                (TENANT_LABEL, id.as_str()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            crate::agent_config::CONFIG_FILE.to_string(),
            rendered_json.to_owned(),
        )])),
        ..Default::default()
    }
}

/// Deployment `warm-pool`: idle agent pods on kata nodes with the image pulled. A claimed pod is
/// relabelled `warm=consuming`, which takes it out of the selector so the ReplicaSet replaces it.
pub fn warm_pool_deployment(s: &K8sSettings, replicas: i32) -> Deployment {
    let pod_labels = labels(&[(APP_LABEL, WARM_POOL_APP), (WARM_LABEL, "true")]);
    let mut spec = base_pod_spec(s, "tenant-low");
    spec.termination_grace_period_seconds = Some(5);
    spec.containers = vec![agent_container(
        s,
        vec![
            env("TENANT_ID", WARM_POOL_NAME),
            env("AGENT_PORT", s.agent_port.to_string()),
            env("DATA_DIR", DATA_DIR),
            env("STATE_DIR", format!("{DATA_DIR}/state")),
            // No tenant and no Secret: the launcher pairs ZeroClaw with a random credential.
            env("AGENT_WARM", "1"),
        ],
        vec![mount("local-state", DATA_DIR)],
    )];
    spec.volumes = Some(vec![local_state_volume()]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(WARM_POOL_NAME.into()),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[(APP_LABEL, WARM_POOL_APP)])),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(pod_labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Deployment `warm-pool` of warm agents: the same pods as [`warm_pool_deployment`] plus the
/// pool credential from Secret `warm-pool`, so each pod runs its agent waiting for `POST /assign`.
pub fn warm_agent_pool_deployment(s: &K8sSettings, replicas: i32) -> Deployment {
    let mut d = warm_pool_deployment(s, replicas);
    let spec = d
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("builder sets a pod spec");
    // An assigned pod is a tenant's for the rest of its life and a running pod's priority and grace
    // cannot change: tenant priority (a pool miss finds no warm pod to preempt anyway) and the
    // tenant's grace, so an eviction leaves the agent time to save.
    spec.priority_class_name = Some("tenant-normal".into());
    spec.termination_grace_period_seconds = Some(GRACE_PERIOD_S);
    let container = spec
        .containers
        .first_mut()
        .expect("builder sets one container");
    let env_vars = container.env.get_or_insert_with(Vec::new);
    // The platform's LLM key is no tenant's data: every agent may hold it (optional Secret).
    env_vars.push(secret_env(
        "LLM_API_KEY",
        LLM_SECRET_NAME.into(),
        LLM_API_KEY_KEY,
        true,
    ));
    env_vars.push(secret_env(
        crate::assignment::POOL_TOKEN_ENV,
        WARM_POOL_SECRET.into(),
        ASSIGN_TOKEN_KEY,
        false,
    ));
    // Where an assigned agent renews its state grants before it saves.
    if let Some(url) = &s.orchestrator_url {
        env_vars.push(env("ORCHESTRATOR_URL", url));
    }
    d
}

/// A cold start's pod in `WARM_POOL_MODE=agent`: the warm agent of [`warm_agent_pool_deployment`]
/// (no tenant Secret, no state volume), named `zeroclaw-{id}` and marked as claimed for the tenant
/// (`warm=consuming`, claimed-at, assigning-tenant) from its creation, so it is assigned like a warm
/// hit and the orphan sweep collects it if its start is interrupted.
pub fn cold_agent_pod(id: &TenantId, s: &K8sSettings, claimed_at: &str) -> Pod {
    let template = warm_agent_pool_deployment(s, 1)
        .spec
        .expect("builder sets a spec")
        .template;
    let spec = template.spec.expect("builder sets a pod spec");
    Pod {
        metadata: ObjectMeta {
            name: Some(id.pod_name()),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[
                (APP_LABEL, WARM_POOL_APP),
                (WARM_LABEL, "consuming"),
            ])),
            annotations: Some(labels(&[
                (CLAIMED_AT_ANNOTATION, claimed_at),
                (ASSIGNING_ANNOTATION, id.as_str()),
            ])),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Secret `warm-pool` with the pool's assignment credential.
pub fn warm_pool_secret(token: &Secret, s: &K8sSettings) -> K8sSecret {
    K8sSecret {
        metadata: ObjectMeta {
            name: Some(WARM_POOL_SECRET.into()),
            namespace: Some(s.namespace.clone()),
            labels: Some(labels(&[(APP_LABEL, WARM_POOL_APP)])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            ASSIGN_TOKEN_KEY.to_string(),
            ByteString(token.expose().as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TenantId {
        TenantId::parse("alice").unwrap()
    }

    #[test]
    fn token_comes_from_the_secret_never_a_literal() {
        let pod = tenant_pod(&id(), &K8sSettings::default(), None);
        let json = serde_json::to_string(&pod).unwrap();
        let token_env = pod.spec.clone().unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .find(|e| e.name == "TELEGRAM_BOT_TOKEN")
            .unwrap();
        assert!(token_env.value.is_none());
        let key = token_env.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("tenant-alice", BOT_TOKEN_KEY)
        );
        assert!(!json.contains("123:ABC"));
        let env = pod.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let agent = env.iter().find(|e| e.name == "AGENT_TOKEN").unwrap();
        assert!(agent.value.is_none(), "the credential is never a literal");
        let key = agent.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str(), key.optional),
            ("tenant-alice", AGENT_TOKEN_KEY, Some(false))
        );
        let llm = env.iter().find(|e| e.name == "LLM_API_KEY").unwrap();
        let key = llm.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str(), key.optional),
            (LLM_SECRET_NAME, LLM_API_KEY_KEY, Some(true))
        );
    }

    /// Agents report their own activity to `ORCHESTRATOR_URL` only when the orchestrator says where.
    #[test]
    fn tenant_pods_learn_the_orchestrator_url_only_when_it_is_set() {
        let url_of = |s: &K8sSettings| {
            tenant_pod(&id(), s, None).spec.unwrap().containers[0]
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "ORCHESTRATOR_URL")
                .and_then(|e| e.value.clone())
        };
        assert_eq!(url_of(&K8sSettings::default()), None);
        let s = K8sSettings {
            orchestrator_url: Some("http://orchestrator:8080".into()),
            ..Default::default()
        };
        assert_eq!(url_of(&s).as_deref(), Some("http://orchestrator:8080"));
        // Warm agents renew their state grants there once assigned.
        let warm_url = |s: &K8sSettings| {
            let d = warm_agent_pool_deployment(s, 1);
            d.spec.unwrap().template.spec.unwrap().containers[0]
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "ORCHESTRATOR_URL")
                .and_then(|e| e.value.clone())
        };
        assert_eq!(warm_url(&K8sSettings::default()), None);
        assert_eq!(warm_url(&s).as_deref(), Some("http://orchestrator:8080"));
    }

    /// A warm agent becomes a tenant's pod in place: it carries the tenant's priority and grace
    /// from the start, the platform's (optional) LLM key and no tenant's Secret or volume.
    #[test]
    fn warm_agents_are_born_with_what_a_tenant_pod_keeps() {
        let d = warm_agent_pool_deployment(&K8sSettings::default(), 2);
        let spec = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(spec.priority_class_name.as_deref(), Some("tenant-normal"));
        assert_eq!(spec.termination_grace_period_seconds, Some(GRACE_PERIOD_S));
        let env = spec.containers[0].env.clone().unwrap();
        let llm = env.iter().find(|e| e.name == "LLM_API_KEY").unwrap();
        let key = llm.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str(), key.optional),
            (LLM_SECRET_NAME, LLM_API_KEY_KEY, Some(true))
        );
        let secrets: Vec<&str> = env
            .iter()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(secrets, [LLM_SECRET_NAME, WARM_POOL_SECRET]);
        let volumes: Vec<String> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(volumes, ["local-state"]);
        // Node-mode placeholders stay preemptible.
        let placeholder = warm_pool_deployment(&K8sSettings::default(), 2);
        let spec = placeholder.spec.unwrap().template.spec.unwrap();
        assert_eq!(spec.priority_class_name.as_deref(), Some("tenant-low"));
    }

    #[test]
    fn empty_runtime_class_means_none_and_node_pin_is_optional() {
        let s = K8sSettings {
            runtime_class: String::new(),
            ..Default::default()
        };
        let spec = tenant_pod(&id(), &s, Some("node-7")).spec.unwrap();
        assert_eq!(spec.runtime_class_name, None);
        assert_eq!(spec.node_selector, None);
        assert_eq!(spec.tolerations, None);
        assert_eq!(spec.node_name.as_deref(), Some("node-7"));
        let spec = tenant_pod(&id(), &K8sSettings::default(), None)
            .spec
            .unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("kata-qemu"));
        assert!(spec.node_selector.is_some() && spec.tolerations.is_some());
        assert_eq!(spec.node_name, None);
    }
}
