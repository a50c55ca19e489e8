//! Warm pool manager: keeps Deployment `warm-pool` present with `WARM_POOL_TARGET` replicas and the
//! current agent spec, so wakes find pods on nodes that already pulled the image, and deletes claimed
//! warm pods that a failed or interrupted claim left behind.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::k8s::{self, K8sSettings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PostParams, Preconditions};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::runtime::kubernetes::{apply_params, is_status};

/// How long a claimed (`warm=consuming`) pod may live before it counts as orphaned: a claim
/// deletes it milliseconds after the relabel, so minutes leave room for clock skew between replicas.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(120);

pub struct WarmPoolManager {
    api: Api<Deployment>,
    pods: Api<Pod>,
    settings: K8sSettings,
    target: i32,
    interval: Duration,
    orphan_grace: Duration,
    secrets: Api<Secret>,
    /// Warm agents (`WARM_POOL_MODE=agent`): pods run the agent waiting for `POST /assign`.
    agents: bool,
}

/// The pool's assignment credential from Secret `warm-pool`, creating it (random) when absent.
/// Every replica and the manager call this; the first create wins, the others read its value.
pub async fn pool_token(
    secrets: &Api<Secret>,
    settings: &K8sSettings,
) -> Result<common::Secret, kube::Error> {
    for _ in 0..3 {
        if let Some(s) = secrets.get_opt(k8s::WARM_POOL_SECRET).await? {
            let value = s
                .data
                .as_ref()
                .and_then(|d| d.get(k8s::ASSIGN_TOKEN_KEY))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .filter(|v| !v.is_empty());
            if let Some(v) = value {
                return Ok(common::Secret::new(v));
            }
        }
        let fresh = common::tenant::new_agent_token();
        let secret = k8s::warm_pool_secret(&fresh, settings);
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(fresh),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Api(
        kube::core::Status::failure("Secret warm-pool has no ASSIGN_TOKEN", "Invalid")
            .with_code(422)
            .boxed(),
    ))
}

impl WarmPoolManager {
    pub fn new(client: Client, settings: K8sSettings, target: u32, interval: Duration) -> Self {
        WarmPoolManager {
            api: Api::namespaced(client.clone(), &settings.namespace),
            pods: Api::namespaced(client.clone(), &settings.namespace),
            secrets: Api::namespaced(client, &settings.namespace),
            agents: false,
            target: i32::try_from(target).unwrap_or(i32::MAX),
            settings,
            interval,
            orphan_grace: ORPHAN_GRACE,
        }
    }

    /// Runs warm agents (assigned on a claim) instead of placeholder pods, with Secret `warm-pool`.
    pub fn with_warm_agents(mut self, on: bool) -> Self {
        self.agents = on;
        self
    }

    /// Changes how long a claimed pod may live before [`sweep_orphans`](Self::sweep_orphans) deletes it.
    pub fn with_orphan_grace(mut self, grace: Duration) -> Self {
        self.orphan_grace = grace;
        self
    }

    /// Deletes warm pods labelled `warm=consuming` whose claim is older than the grace period: the
    /// relabel took them out of the Deployment, so if the claim's delete failed, or its replica
    /// crashed or was cancelled between the two calls, nothing else would ever delete them. The
    /// delete carries the pod's UID, so a pod of the same name created since is never touched.
    /// Returns the names deleted.
    pub async fn sweep_orphans(&self) -> Result<Vec<String>, kube::Error> {
        let claimed = self
            .pods
            .list(&ListParams::default().labels(k8s::CLAIMED_WARM_POD_SELECTOR))
            .await?;
        let now = Utc::now();
        let mut deleted = Vec::new();
        for pod in claimed.items {
            let (Some(name), Some(uid)) = (pod.metadata.name.clone(), pod.metadata.uid.clone())
            else {
                continue;
            };
            let claimed_at = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k8s::CLAIMED_AT_ANNOTATION))
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .or_else(|| {
                    let created = pod.metadata.creation_timestamp.as_ref()?;
                    DateTime::from_timestamp(created.0.as_second(), 0)
                });
            let age = claimed_at.map(|t| now.signed_duration_since(t));
            let old_enough = age.is_none_or(|a| a.to_std().is_ok_and(|a| a > self.orphan_grace));
            if !old_enough || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.pods.delete(&name, &params).await {
                Ok(_) => {
                    tracing::warn!(warm_pod = %name, "warm pool: deleted orphaned claimed pod");
                    deleted.push(name);
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// One pass: server-side apply of the Deployment, which creates it or converges the replicas and
    /// template it sets (a hand scale or edit is reset); an apply that changes nothing writes nothing.
    pub async fn ensure(&self) -> Result<(), kube::Error> {
        let desired = if self.agents {
            pool_token(&self.secrets, &self.settings).await?;
            k8s::warm_agent_pool_deployment(&self.settings, self.target)
        } else {
            k8s::warm_pool_deployment(&self.settings, self.target)
        };
        let applied = self
            .api
            .patch(
                k8s::WARM_POOL_NAME,
                &apply_params(),
                &Patch::Apply(&desired),
            )
            .await?;
        tracing::debug!(
            replicas = self.target,
            generation = applied.metadata.generation,
            "warm pool: deployment applied"
        );
        Ok(())
    }

    /// Runs `ensure` every interval until `shutdown`; failures are logged and retried next pass.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.ensure().await {
                tracing::warn!(error = %e, "warm pool: could not ensure deployment");
            }
            if let Err(e) = self.sweep_orphans().await {
                tracing::warn!(error = %e, "warm pool: could not sweep orphaned claimed pods");
            }
        }
    }
}
