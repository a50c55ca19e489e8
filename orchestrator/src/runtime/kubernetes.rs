//! Kubernetes runtime: one pod `zeroclaw-{id}` per awake tenant, its state on an S3-backed PV/PVC and
//! its bot token in Secret `tenant-{id}`; warm-pool pods are claimed to start on a node that already
//! has the image. With warm agents (`WARM_POOL_MODE=agent`) every start is an assignment: of a
//! running warm agent, or on a pool miss of a warm agent created for the tenant (no PV, PVC, Secret
//! or ConfigMap), its state through presigned grants either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::agent_config::PlatformDefaults;
use common::assignment::StateGrantIssuer;
use common::k8s::{self, K8sSettings};
use common::lifecycle::TenantEvent;
use common::{TenantId, TenantRecord};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, EventSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::{Api, Client};
use serde_json::json;

use super::{AgentAddress, AgentInfo, Instance, LogQuery, Runtime, RuntimeError, WarmPoolClaims};

/// Container waiting reasons after which a pod will not become ready without someone's help.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
const POLL: Duration = Duration::from_millis(250);
/// The field manager of every object the orchestrator converges by server-side apply.
pub(crate) const FIELD_MANAGER: &str = "zeroclaw-orchestrator";

pub struct KubeRuntime {
    client: Client,
    settings: K8sSettings,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    pvcs: Api<PersistentVolumeClaim>,
    pvs: Api<PersistentVolume>,
    events: Api<Event>,
    http: reqwest::Client,
    warm_hits: AtomicU64,
    warm_misses: AtomicU64,
    defaults: PlatformDefaults,
    /// Set in `WARM_POOL_MODE=agent`: warm hits assign a running agent instead of creating a pod.
    warm_agents: Option<WarmAgents>,
    pool_token: tokio::sync::OnceCell<common::Secret>,
    /// For the assignment call, whose timeout is the wake's remaining deadline.
    assign_http: reqwest::Client,
    pod_names: std::sync::Mutex<std::collections::HashMap<TenantId, String>>,
}

/// What warm agents need from the orchestrator besides the pool credential: tenant-scoped state
/// grants (presigned S3 URLs) and how long they last.
pub struct WarmAgents {
    pub grants: Arc<dyn StateGrantIssuer>,
    pub grant_ttl: Duration,
}

impl KubeRuntime {
    pub fn new(client: Client, settings: K8sSettings) -> Self {
        let ns = settings.namespace.as_str();
        KubeRuntime {
            pods: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client.clone(), ns),
            config_maps: Api::namespaced(client.clone(), ns),
            pvcs: Api::namespaced(client.clone(), ns),
            pvs: Api::all(client.clone()),
            events: Api::namespaced(client.clone(), ns),
            client,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("static reqwest configuration"),
            settings,
            warm_hits: AtomicU64::new(0),
            warm_misses: AtomicU64::new(0),
            defaults: PlatformDefaults::default(),
            warm_agents: None,
            pool_token: tokio::sync::OnceCell::new(),
            assign_http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("static reqwest configuration"),
            pod_names: std::sync::Mutex::default(),
        }
    }

    pub fn has_warm_agents(&self) -> bool {
        self.warm_agents.is_some()
    }

    /// Warm agents (`WARM_POOL_MODE=agent`): a wake assigns a running warm-pool agent.
    pub fn with_warm_agents(mut self, agents: WarmAgents) -> Self {
        self.warm_agents = Some(agents);
        self
    }

    /// Platform defaults rendered into every tenant's ConfigMap.
    pub fn with_agent_config(mut self, defaults: PlatformDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    /// Applies ConfigMap `tenant-config-{id}` (the whole `tenant.json`, reset on every start).
    async fn ensure_config_map(&self, record: &TenantRecord) -> Result<(), RuntimeError> {
        let id = &record.tenant_id;
        let json = super::rendered_config(record, &self.defaults)?;
        let cm = k8s::tenant_config_map(id, &json, &self.settings);
        apply(&self.config_maps, &cm, "config map").await
    }

    /// Creates or converges Secret, ConfigMap, PV and PVC by server-side apply; a PV or PVC whose
    /// immutable spec differs from the settings is kept as it is.
    async fn ensure_objects(&self, record: &TenantRecord) -> Result<(), RuntimeError> {
        let id = &record.tenant_id;
        if record.agent_token.is_empty() {
            return Err(RuntimeError::start_failed(
                "the tenant has no agent credential yet",
            ));
        }
        let secret = k8s::tenant_secret(id, &record.bot_token, &record.agent_token, &self.settings);
        apply(&self.secrets, &secret, "secret").await?;
        self.ensure_config_map(record).await?;
        if self.settings.uses_s3_csi() {
            apply_volume(
                &self.pvs,
                &k8s::tenant_pv(id, &self.settings),
                "persistent volume",
            )
            .await?;
        }
        apply_volume(
            &self.pvcs,
            &k8s::tenant_pvc(id, &self.settings),
            "persistent volume claim",
        )
        .await
    }

    /// Takes a Running warm pod out of the pool and returns its node; `None` when the pool is empty.
    /// The label patch carries the pod's resourceVersion, so two replicas never claim the same pod.
    async fn claim_warm_pod(&self, tenant: &TenantId) -> Result<Option<String>, RuntimeError> {
        for (name, rv, pod) in self.pool_pods().await? {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let (true, Some(node), None) =
                (running, node, pod.metadata.deletion_timestamp.as_ref())
            else {
                continue;
            };
            if !self.take_from_pool(&name, &rv, None).await? {
                continue;
            }
            let uid = pod.metadata.uid.as_deref();
            let dp = DeleteParams::default().grace_period(0);
            self.delete_observed(&name, uid, dp)
                .await
                .map_err(|e| backend("delete claimed warm pod", e))?;
            tracing::info!(tenant = %tenant, warm_pod = %name, node = %node, "warm pool hit: reusing node");
            self.warm_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(node));
        }
        tracing::info!(tenant = %tenant, "warm pool miss: cold start");
        self.warm_misses.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// The pool's pods (`app=warm-pool,warm=true`) with their name and resourceVersion, for a claim.
    async fn pool_pods(&self) -> Result<Vec<(String, String, Pod)>, RuntimeError> {
        let warm = self
            .pods
            .list(&ListParams::default().labels(k8s::WARM_POD_SELECTOR))
            .await
            .map_err(|e| backend("list warm pods", e))?;
        Ok(warm
            .items
            .into_iter()
            .filter_map(|p| {
                let name = p.metadata.name.clone()?;
                let rv = p.metadata.resource_version.clone()?;
                Some((name, rv, p))
            })
            .collect())
    }

    /// Relabels pool pod `name` `warm=consuming` (with the claim mark) if it is still at `rv`, so
    /// two replicas never claim the same pod; false when another claim won or the pod is gone.
    async fn take_from_pool(
        &self,
        name: &str,
        rv: &str,
        assigning: Option<&TenantId>,
    ) -> Result<bool, RuntimeError> {
        let patch = json!({
            "metadata": {
                "resourceVersion": rv,
                "labels": { k8s::WARM_LABEL: "consuming" },
                "annotations": claim_mark(assigning),
            }
        });
        match self
            .pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(false),
            Err(e) => Err(backend("claim warm pod", e)),
        }
    }

    /// Polls the pod until its agent answers `/health`; a pod that cannot become ready is deleted.
    async fn wait_ready(
        &self,
        name: String,
        mut uid: Option<String>,
        probe: Probe<'_>,
        until: Instant,
        deadline: Duration,
    ) -> Result<AgentAddress, RuntimeError> {
        let mut last_problem: Option<String> = None;
        let mut marked = Instant::now();
        loop {
            let pod = self
                .pods
                .get_opt(&name)
                .await
                .map_err(|e| backend("get pod", e))?;
            let Some(pod) = pod else {
                return Err(RuntimeError::start_failed(format!(
                    "pod {name} disappeared while starting"
                )));
            };
            // The pod this start created or adopted; a newer one of that name is someone else's.
            match (&uid, &pod.metadata.uid) {
                (Some(ours), Some(seen)) if ours != seen => {
                    return Err(RuntimeError::start_failed(format!(
                        "pod {name} was replaced while starting"
                    )))
                }
                (None, seen) => uid = seen.clone(),
                _ => {}
            }
            if let Some(reason) = fatal_reason(&pod) {
                self.delete_pod(&name, uid.as_deref()).await;
                return Err(RuntimeError::start_failed(format!("pod {name}: {reason}")));
            }
            last_problem = pending_reason(&pod).or(last_problem);
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if let (true, Some(ip)) = (running, ip) {
                let base = format!("http://{ip}:{}", self.settings.agent_port);
                let request = match probe {
                    // Identity, not just liveness: only this tenant's agent accepts its credential.
                    Probe::Tenant(credential) => self
                        .http
                        .get(format!("{base}/api/health"))
                        .bearer_auth(credential.expose()),
                    Probe::Assignable => self.http.get(format!("{base}/health")),
                };
                if matches!(request.send().await, Ok(r) if r.status().is_success()) {
                    return Ok(AgentAddress {
                        pod_name: name,
                        pod_ip: ip,
                        agent_port: None,
                        warm: None,
                    });
                }
            }
            if Instant::now() >= until {
                self.delete_pod(&name, uid.as_deref()).await;
                return Err(match last_problem {
                    Some(reason) => RuntimeError::start_failed(format!("pod {name}: {reason}")),
                    None => RuntimeError::Timeout(deadline),
                });
            }
            if matches!(probe, Probe::Assignable) && marked.elapsed() >= CLAIM_REFRESH {
                // The claim mark is renewed while this start lives: a pod slower to start than the
                // orphan grace is not swept, one whose replica died is (its mark ages).
                let mark = json!({ "metadata": { "annotations": claim_mark(None) } });
                if let Err(e) = self
                    .pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&mark))
                    .await
                {
                    tracing::warn!(pod = %name, error = %api_message(&e), "could not renew the claim mark");
                }
                marked = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes the failed pod this caller observed (`uid`) at once; failures are logged.
    async fn delete_pod(&self, name: &str, uid: Option<&str>) {
        let dp = DeleteParams::default().grace_period(0);
        if let Err(e) = self.delete_observed(name, uid, dp).await {
            tracing::warn!(pod = %name, error = %e, "could not delete failed pod");
        }
    }

    /// Deletes pod `name` only if it is still the one observed (UID precondition), so a stale
    /// caller never deletes a newer pod of the same name or tenant. Gone (404) or replaced (409)
    /// is done; a pod seen without a UID is left alone rather than deleted by name.
    async fn delete_observed(
        &self,
        name: &str,
        uid: Option<&str>,
        mut dp: DeleteParams,
    ) -> Result<(), kube::Error> {
        let Some(uid) = uid else {
            tracing::warn!(pod = %name, "pod has no UID; not deleting it by name");
            return Ok(());
        };
        dp.preconditions = Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        });
        match self.pods.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                tracing::info!(pod = %name, uid = %uid, "pod was replaced since it was observed; leaving the new one");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The tenant's pods by label (`app=zeroclaw,tenant={id}`): `zeroclaw-{id}` after a cold
    /// start, the warm pod's own name after a warm hit.
    async fn tenant_pods(&self, id: &TenantId) -> Result<Vec<Pod>, RuntimeError> {
        self.pods
            .list(&ListParams::default().labels(&k8s::tenant_pod_selector(id)))
            .await
            .map(|l| l.items)
            .map_err(|e| backend("list tenant pods", e))
    }

    /// The tenant's pod that still runs, to adopt; waits until terminating ones are gone (so a
    /// wake never starts beside a dying agent whose save has not landed) and replaces Failed or
    /// Evicted ones.
    async fn live_tenant_pod(
        &self,
        id: &TenantId,
        until: Instant,
    ) -> Result<Option<Pod>, RuntimeError> {
        loop {
            let mut dying = None;
            for p in self.tenant_pods(id).await? {
                let name = p.metadata.name.clone().unwrap_or_default();
                if p.metadata.deletion_timestamp.is_some() {
                    dying = Some(name);
                } else if pod_gone(&p) {
                    // A Failed or Evicted pod never answers again: gone, replaced by a new one.
                    tracing::warn!(tenant = %id, pod = %name, "previous pod failed or was evicted, replacing it");
                    self.delete_pod(&name, p.metadata.uid.as_deref()).await;
                    dying = Some(name);
                } else {
                    return Ok(Some(p));
                }
            }
            let Some(name) = dying else {
                return Ok(None);
            };
            if Instant::now() >= until {
                return Err(RuntimeError::start_failed(format!(
                    "previous pod {name} is still terminating"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn remember(&self, id: &TenantId, pod: &str) {
        let mut names = self.pod_names.lock().unwrap_or_else(|e| e.into_inner());
        names.insert(id.clone(), pod.to_owned());
    }

    /// The tenant's pod name as last started or adopted here (events name it), else `zeroclaw-{id}`.
    fn known_pod_name(&self, id: &TenantId) -> String {
        let names = self.pod_names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(id).cloned().unwrap_or_else(|| id.pod_name())
    }

    /// The pool credential (Secret `warm-pool`), read once.
    async fn pool_token(&self) -> Result<common::Secret, RuntimeError> {
        self.pool_token
            .get_or_try_init(|| crate::warm_pool::pool_token(&self.secrets, &self.settings))
            .await
            .cloned()
            .map_err(|e| backend("warm pool secret", e))
    }

    /// What an assignment hands an agent besides its grants: the rendered `tenant.json`; refuses a
    /// tenant without an agent credential.
    fn assignment_config(&self, record: &TenantRecord) -> Result<serde_json::Value, RuntimeError> {
        if record.agent_token.is_empty() {
            return Err(RuntimeError::start_failed(
                "the tenant has no agent credential yet",
            ));
        }
        serde_json::from_str(&super::rendered_config(record, &self.defaults)?)
            .map_err(|e| RuntimeError::start_failed_by("rendered configuration", e))
    }

    /// Warm hit (`WARM_POOL_MODE=agent`): claims a Running warm agent with the resourceVersion-
    /// guarded relabel, assigns it the tenant (`POST /assign`), relabels it as the tenant's pod.
    /// `None` on an empty pool or a failed assignment (that pod is deleted): the caller cold-starts.
    async fn assign_warm_agent(
        &self,
        record: &TenantRecord,
        agents: &WarmAgents,
        config: &serde_json::Value,
        until: Instant,
    ) -> Result<Option<AgentAddress>, RuntimeError> {
        let id = &record.tenant_id;
        let Some((name, uid, node, ip)) = self.claim_warm_agent(id).await? else {
            tracing::info!(tenant = %id, "warm pool miss: cold start");
            self.warm_misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        match self
            .assign(record, config.clone(), agents, &name, &ip, until)
            .await
        {
            Ok(address) => {
                tracing::info!(tenant = %id, warm_pod = %name, node = %node, "warm pool hit: assigned warm agent");
                self.warm_hits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(address))
            }
            Err(why) => {
                tracing::warn!(tenant = %id, warm_pod = %name, error = %why, "warm pool: assignment failed, deleting the warm pod; cold start");
                self.delete_pod(&name, uid.as_deref()).await;
                self.warm_misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Cold start (`WARM_POOL_MODE=agent`, pool empty): creates one warm agent `zeroclaw-{id}`
    /// already claimed for the tenant, waits until it answers, then assigns it as on a warm hit, so
    /// memory and configuration take one path. A failed assignment deletes the pod and fails the wake.
    async fn assign_cold_agent(
        &self,
        record: &TenantRecord,
        agents: &WarmAgents,
        config: serde_json::Value,
        until: Instant,
        deadline: Duration,
    ) -> Result<AgentAddress, RuntimeError> {
        let id = &record.tenant_id;
        // The pod reads the pool credential from Secret `warm-pool`: made here if no manager has yet.
        self.pool_token().await?;
        let mut pod = k8s::cold_agent_pod(id, &self.settings, &chrono::Utc::now().to_rfc3339());
        k8s::apply_resources(&mut pod, &record.resources);
        let (name, uid) = self.create_cold_pod(&pod, until).await?;
        let ready = self
            .wait_ready(
                name.clone(),
                Some(uid.clone()),
                Probe::Assignable,
                until,
                deadline,
            )
            .await?;
        match self
            .assign(record, config, agents, &name, &ready.pod_ip, until)
            .await
        {
            Ok(mut address) => {
                tracing::info!(tenant = %id, pod = %name, "cold start: assigned a new agent pod");
                address.warm = Some(false);
                Ok(address)
            }
            Err(why) => {
                tracing::warn!(tenant = %id, pod = %name, error = %why, "cold start: assignment failed, deleting the pod");
                self.delete_pod(&name, Some(&uid)).await;
                Err(RuntimeError::start_failed(format!(
                    "pod {name}: assignment failed: {why}"
                )))
            }
        }
    }

    /// Creates the cold start's pod and returns its name and UID. A pod of that name left by an
    /// interrupted start (not yet the tenant's) is deleted by its UID first, never adopted: what it
    /// was told is unknown. At most two creates.
    async fn create_cold_pod(
        &self,
        pod: &Pod,
        until: Instant,
    ) -> Result<(String, String), RuntimeError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut cleared = false;
        loop {
            let err = match self.pods.create(&PostParams::default(), pod).await {
                Ok(created) => {
                    return created
                        .metadata
                        .uid
                        .map(|uid| (name.clone(), uid))
                        .ok_or_else(|| {
                            RuntimeError::start_failed(format!("create pod {name}: no UID"))
                        })
                }
                Err(e) => e,
            };
            if cleared || !is_status(&err, 409) {
                return Err(RuntimeError::start_failed(format!(
                    "create pod {name}: {}",
                    api_message(&err)
                )));
            }
            self.clear_leftover(&name, until).await?;
            cleared = true;
        }
    }

    /// Deletes pod `name` left by an interrupted cold start and waits until it is gone.
    async fn clear_leftover(&self, name: &str, until: Instant) -> Result<(), RuntimeError> {
        loop {
            let Some(pod) = self
                .pods
                .get_opt(name)
                .await
                .map_err(|e| backend("get pod", e))?
            else {
                return Ok(());
            };
            let labels = pod.metadata.labels.as_ref();
            if labels
                .and_then(|l| l.get(k8s::APP_LABEL))
                .map(String::as_str)
                == Some(k8s::TENANT_APP)
            {
                return Err(RuntimeError::start_failed(format!(
                    "pod {name} already runs as a tenant's pod"
                )));
            }
            if pod.metadata.deletion_timestamp.is_none() {
                tracing::warn!(pod = %name, "deleting a pod left by an interrupted cold start");
                self.delete_pod(name, pod.metadata.uid.as_deref()).await;
            }
            if Instant::now() >= until {
                return Err(RuntimeError::start_failed(format!(
                    "previous pod {name} is still terminating"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes one Running warm agent out of the pool (`warm=consuming`, claimed-at and the tenant
    /// annotated); returns its name, UID, node and IP.
    async fn claim_warm_agent(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(String, Option<String>, String, String)>, RuntimeError> {
        for (name, rv, pod) in self.pool_pods().await? {
            let status = pod.status.as_ref();
            // Ready: the agent's readiness probe (`/health`) answers, so `/assign` will too.
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let running = ready && status.and_then(|s| s.phase.as_deref()) == Some("Running");
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let ip = status.and_then(|s| s.pod_ip.clone());
            let (true, Some(node), Some(ip), None, None) = (
                running,
                node,
                ip,
                pod.metadata.deletion_timestamp.as_ref(),
                fatal_reason(&pod),
            ) else {
                continue;
            };
            if self.take_from_pool(&name, &rv, Some(tenant)).await? {
                return Ok(Some((name, pod.metadata.uid.clone(), node, ip)));
            }
        }
        Ok(None)
    }

    /// The assignment call, the relabel and the identity probe; any failure leaves the pod spent.
    async fn assign(
        &self,
        record: &TenantRecord,
        config: serde_json::Value,
        agents: &WarmAgents,
        name: &str,
        ip: &str,
        until: Instant,
    ) -> Result<AgentAddress, String> {
        let id = &record.tenant_id;
        let token = self.pool_token().await.map_err(|e| e.to_string())?;
        let mut state = agents
            .grants
            .grants(id, common::state::BRAIN_FILE, agents.grant_ttl)
            .await
            .map_err(|e| format!("state grants: {e}"))?;
        // Renewals name the pod; the registry refuses them once the tenant runs elsewhere.
        state.holder = Some(name.to_owned());
        let assignment = common::assignment::Assignment {
            tenant_id: id.to_string(),
            agent_token: record.agent_token.clone(),
            config,
            state,
        };
        let left = until.saturating_duration_since(Instant::now());
        let base = format!("http://{ip}:{}", self.settings.agent_port);
        let r = self
            .assign_http
            .post(format!("{base}{}", common::assignment::ASSIGN_PATH))
            .bearer_auth(token.expose())
            .json(&assignment)
            .timeout(left)
            .send()
            .await
            .map_err(|e| format!("assignment call: {}", e.without_url()))?;
        if !r.status().is_success() {
            return Err(format!("assignment refused: HTTP {}", r.status().as_u16()));
        }
        let relabel = json!({
            "metadata": {
                "labels": {
                    k8s::APP_LABEL: k8s::TENANT_APP,
                    k8s::TENANT_LABEL: id.as_str(),
                    k8s::WARM_LABEL: null,
                },
            }
        });
        self.pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&relabel))
            .await
            .map_err(|e| format!("relabel: {}", api_message(&e)))?;
        // Identity, not just liveness: only this tenant's agent accepts its credential.
        let probe = self
            .http
            .get(format!("{base}/api/health"))
            .bearer_auth(record.agent_token.expose());
        match probe.send().await {
            Ok(r) if r.status().is_success() => Ok(AgentAddress {
                pod_name: name.to_owned(),
                pod_ip: ip.to_owned(),
                agent_port: None,
                warm: Some(true),
            }),
            Ok(r) => Err(format!("identity probe: HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("identity probe: {}", e.without_url())),
        }
    }
}

#[async_trait]
impl Runtime for KubeRuntime {
    async fn start(
        &self,
        record: &TenantRecord,
        deadline: Duration,
    ) -> Result<AgentAddress, RuntimeError> {
        let until = Instant::now() + deadline;
        let id = &record.tenant_id;
        let name = id.pod_name();
        if self.warm_agents.is_none() {
            self.ensure_objects(record).await?;
        }
        if let Some(pod) = self.live_tenant_pod(id, until).await? {
            let name = pod.metadata.name.unwrap_or(name);
            tracing::info!(tenant = %id, pod = %name, "adopting existing pod");
            let address = self
                .wait_ready(
                    name,
                    pod.metadata.uid,
                    Probe::Tenant(&record.agent_token),
                    until,
                    deadline,
                )
                .await?;
            self.remember(id, &address.pod_name);
            return Ok(address);
        }
        if let Some(agents) = &self.warm_agents {
            let config = self.assignment_config(record)?;
            let address = match self
                .assign_warm_agent(record, agents, &config, until)
                .await?
            {
                Some(address) => address,
                None => {
                    self.assign_cold_agent(record, agents, config, until, deadline)
                        .await?
                }
            };
            self.remember(id, &address.pod_name);
            return Ok(address);
        }
        let node = self.claim_warm_pod(id).await?;
        let warm = Some(node.is_some());
        let mut pod = k8s::tenant_pod(id, &self.settings, node.as_deref());
        k8s::apply_resources(&mut pod, &record.resources);
        // The UID of the pod created here: a clean-up deletes that one, never a successor.
        let uid = match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => created.metadata.uid,
            Err(e) if is_status(&e, 409) => {
                tracing::info!(tenant = %id, pod = %name, "adopting existing pod");
                None
            }
            Err(e) => {
                return Err(RuntimeError::start_failed(format!(
                    "create pod {name}: {}",
                    api_message(&e)
                )))
            }
        };
        let mut address = self
            .wait_ready(
                name,
                uid,
                Probe::Tenant(&record.agent_token),
                until,
                deadline,
            )
            .await?;
        address.warm = warm;
        self.remember(id, &address.pod_name);
        Ok(address)
    }

    /// A core/v1 Event on the tenant's pod (`kubectl describe pod`, `kubectl get events`), labelled
    /// with the tenant and the event's sequence number. Failures are logged, never returned.
    async fn emit_event(&self, tenant: &TenantId, e: &TenantEvent) {
        let pod = self.known_pod_name(tenant);
        let at = Time(jiff_from(e.at));
        let event = Event {
            metadata: ObjectMeta {
                // Unique per emission, like the API server's own `{object}.{hex}` names.
                name: Some(format!(
                    "{pod}.{:x}",
                    e.at.timestamp_nanos_opt().unwrap_or_default() as u64 ^ e.seq
                )),
                namespace: Some(self.settings.namespace.clone()),
                labels: Some(
                    [
                        (k8s::TENANT_LABEL.to_owned(), tenant.to_string()),
                        ("seq".to_owned(), e.seq.to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectReference::default()
            },
            reason: Some(e.reason.clone()),
            message: Some(e.message.clone()),
            type_: Some(e.kind.as_str().into()),
            count: Some(1),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            source: Some(EventSource {
                component: Some("orchestrator".into()),
                ..EventSource::default()
            }),
            ..Event::default()
        };
        if let Err(err) = self.events.create(&PostParams::default(), &event).await {
            tracing::warn!(tenant = %tenant, reason = %e.reason, error = %api_message(&err), "kubernetes event not created");
        }
    }

    /// The pod's log through the API; `previous` reads the previous container's.
    async fn logs(&self, tenant: &TenantId, q: &LogQuery) -> Result<Option<String>, RuntimeError> {
        let params = LogParams {
            tail_lines: q.tail.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            since_seconds: q.since_s.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            previous: q.previous,
            ..LogParams::default()
        };
        let name = match self
            .tenant_pods(tenant)
            .await?
            .into_iter()
            .find_map(|p| p.metadata.name)
        {
            Some(n) => n,
            None => tenant.pod_name(),
        };
        match self.pods.logs(&name, &params).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if is_status(&e, 404) => Err(RuntimeError::Unsupported(format!(
                "tenant {tenant:?} has no pod (it is asleep): its log went with the pod; see its events"
            ))),
            Err(e) if is_status(&e, 400) => Err(RuntimeError::Unsupported(api_message(&e))),
            Err(e) => Err(backend("read pod log", e)),
        }
    }

    /// Deletes every pod of the tenant (`app=zeroclaw,tenant={id}`, whatever its name): an
    /// assigned warm pod is never returned to the pool.
    async fn stop(&self, tenant: &TenantId) -> Result<(), RuntimeError> {
        let dp = DeleteParams::default().grace_period(k8s::GRACE_PERIOD_S as u32);
        for pod in self.tenant_pods(tenant).await? {
            let Some(name) = pod.metadata.name else {
                continue;
            };
            self.delete_observed(&name, pod.metadata.uid.as_deref(), dp.clone())
                .await
                .map_err(|e| backend("delete pod", e))?;
        }
        Ok(())
    }

    /// Deletes the tenant's pods the listing saw, each by its UID: a pod created since (a later
    /// wake's, of the same name) is left running.
    async fn stop_listed(
        &self,
        tenant: &TenantId,
        listed: &[AgentInfo],
    ) -> Result<(), RuntimeError> {
        let dp = DeleteParams::default().grace_period(k8s::GRACE_PERIOD_S as u32);
        for seen in listed.iter().filter(|a| &a.tenant == tenant) {
            let Some(pod) = &seen.instance else {
                continue;
            };
            self.delete_observed(&pod.name, Some(&pod.uid), dp.clone())
                .await
                .map_err(|e| backend("delete pod", e))?;
        }
        Ok(())
    }

    /// The pod is deleted with a grace period: it saves after SIGTERM and is gone once the agent
    /// exited (or the kubelet killed it at the end of the grace period).
    async fn wait_stopped(&self, tenant: &TenantId, timeout: Duration) -> Result<(), RuntimeError> {
        let until = Instant::now() + timeout;
        loop {
            let pods = self.tenant_pods(tenant).await?;
            let Some(pod) = pods.first() else {
                return Ok(());
            };
            if Instant::now() >= until {
                let name = pod.metadata.name.clone().unwrap_or_default();
                return Err(RuntimeError::unavailable_msg(format!(
                    "pod {name} still terminating after {timeout:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn list(&self) -> Result<Vec<AgentInfo>, RuntimeError> {
        let pods = self
            .pods
            .list(&ListParams::default().labels(k8s::TENANT_POD_SELECTOR))
            .await
            .map_err(|e| backend("list pods", e))?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !pod_gone(p))
            .filter_map(|p| {
                let tenant = p.metadata.labels.as_ref()?.get(k8s::TENANT_LABEL)?;
                let tenant = TenantId::parse(tenant).ok()?;
                let pod_name = p.metadata.name.clone()?;
                let instance = p.metadata.uid.clone().map(|uid| Instance {
                    name: pod_name.clone(),
                    uid,
                });
                let address = p.status.and_then(|s| s.pod_ip).map(|pod_ip| AgentAddress {
                    pod_name,
                    pod_ip,
                    agent_port: None,
                    warm: None,
                });
                Some(AgentInfo {
                    tenant,
                    address,
                    instance,
                })
            })
            .collect())
    }

    async fn remove(&self, tenant: &TenantId) -> Result<(), RuntimeError> {
        let dp = DeleteParams::default();
        ignore_404(
            self.pvcs.delete(&k8s::pvc_name(tenant), &dp).await,
            "delete persistent volume claim",
        )?;
        ignore_404(
            self.pvs.delete(&k8s::pv_name(tenant), &dp).await,
            "delete persistent volume",
        )?;
        ignore_404(
            self.config_maps
                .delete(&k8s::config_map_name(tenant), &dp)
                .await,
            "delete config map",
        )?;
        ignore_404(
            self.secrets.delete(&k8s::secret_name(tenant), &dp).await,
            "delete secret",
        )
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.client
            .apiserver_version()
            .await
            .map(drop)
            .map_err(|e| backend("api server version", e))
    }

    async fn state_grants(
        &self,
        tenant: &TenantId,
    ) -> Result<common::assignment::StateGrants, RuntimeError> {
        let Some(agents) = &self.warm_agents else {
            return Err(super::no_state_grants());
        };
        agents
            .grants
            .grants(tenant, common::state::BRAIN_FILE, agents.grant_ttl)
            .await
            .map_err(|e| RuntimeError::unavailable("state grants", e))
    }

    fn warm_pool_claims(&self) -> Option<WarmPoolClaims> {
        Some(WarmPoolClaims {
            hits: self.warm_hits.load(Ordering::Relaxed),
            misses: self.warm_misses.load(Ordering::Relaxed),
        })
    }

    fn agent_port(&self) -> u16 {
        self.settings.agent_port
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }
}

/// Server-side apply of an object only the orchestrator writes: forced, so a field someone edited
/// by hand is reset to the orchestrator's value instead of failing the wake with a conflict.
pub(crate) fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates `obj`, or converges the fields the orchestrator sets, in one request.
async fn apply<K>(api: &Api<K>, obj: &K, what: &str) -> Result<(), RuntimeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map(drop)
        .map_err(|e| backend(&format!("apply {what}"), e))
}

/// [`apply`] for a PV or PVC: when the API server refuses it as invalid because the existing
/// object's immutable spec differs (the settings changed since it was made), the existing one is
/// kept, with the tenant's state on it; an invalid new object still fails.
async fn apply_volume<K>(api: &Api<K>, obj: &K, what: &str) -> Result<(), RuntimeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.patch(&name, &apply_params(), &Patch::Apply(obj)).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 422) => match api.get_opt(&name).await {
            Ok(Some(_)) => {
                tracing::warn!(object = %name, error = %api_message(&e), "{what} differs from the settings in an immutable field; keeping the existing one");
                Ok(())
            }
            _ => Err(backend(&format!("apply {what}"), e)),
        },
        Err(e) => Err(backend(&format!("apply {what}"), e)),
    }
}

/// What [`KubeRuntime::wait_ready`] asks the pod's agent before calling it ready.
#[derive(Clone, Copy)]
enum Probe<'a> {
    /// The tenant's agent: `/api/health` with its credential.
    Tenant(&'a common::Secret),
    /// A warm agent waiting for its assignment (a cold start in `WARM_POOL_MODE=agent`): `/health`.
    Assignable,
}

/// How often a cold start renews its pod's claim mark, well inside the orphan sweep's grace.
const CLAIM_REFRESH: Duration = Duration::from_secs(crate::warm_pool::ORPHAN_GRACE.as_secs() / 4);

/// The annotations that mark a pod claimed (now) and, when given, for which tenant.
fn claim_mark(assigning: Option<&TenantId>) -> serde_json::Value {
    let mut mark = json!({ k8s::CLAIMED_AT_ANNOTATION: chrono::Utc::now().to_rfc3339() });
    if let Some(id) = assigning {
        mark[k8s::ASSIGNING_ANNOTATION] = json!(id.as_str());
    }
    mark
}

fn ignore_404<T>(r: Result<T, kube::Error>, what: &str) -> Result<(), RuntimeError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(backend(what, e)),
    }
}

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// k8s-openapi's `Time` holds a `jiff` timestamp.
fn jiff_from(t: chrono::DateTime<chrono::Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}

/// The API server's answer is said in full by its message and reason; any other failure
/// (connection, TLS, decoding) is kept as the source.
fn backend(what: &str, e: kube::Error) -> RuntimeError {
    let message = format!("{what}: {}", api_message(&e));
    match e {
        kube::Error::Api(_) => RuntimeError::unavailable_msg(message),
        other => RuntimeError::Unavailable {
            message,
            source: Some(Box::new(other)),
        },
    }
}

/// A pod in phase Failed, or Evicted: its agent is gone even though the object remains.
fn pod_gone(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Failed")
        || status.and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// Why the pod will not start by itself: phase Failed or a container stuck in a fatal waiting state.
fn fatal_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!(
            "pod failed: {}",
            status
                .reason
                .clone()
                .or(status.message.clone())
                .unwrap_or_default()
        ));
    }
    let statuses = status.container_statuses.iter().flatten();
    let init = status.init_container_statuses.iter().flatten();
    init.chain(statuses).find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref()?;
        FATAL_WAITING.contains(&reason).then(|| match &w.message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason.to_owned(),
        })
    })
}

/// Why a pod is still pending (e.g. unschedulable), reported if the deadline passes.
fn pending_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find_map(|c| {
            (c.type_ == "PodScheduled" && c.status == "False").then(|| {
                format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("Unschedulable"),
                    c.message.as_deref().unwrap_or("")
                )
            })
        })
}
