//! Warm pool manager: keeps Deployment `warm-pool` present with `WARM_POOL_TARGET` replicas and the
//! current agent spec, so wakes find pods on nodes that already pulled the image.

use std::time::Duration;

use common::k8s::{self, K8sSettings};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::runtime::kubernetes::is_status;

pub struct WarmPoolManager {
    api: Api<Deployment>,
    settings: K8sSettings,
    target: i32,
    interval: Duration,
}

impl WarmPoolManager {
    pub fn new(client: Client, settings: K8sSettings, target: u32, interval: Duration) -> Self {
        WarmPoolManager {
            api: Api::namespaced(client, &settings.namespace),
            target: i32::try_from(target).unwrap_or(i32::MAX),
            settings,
            interval,
        }
    }

    /// One pass: create the Deployment, or patch it when its replicas or template drifted.
    pub async fn ensure(&self) -> Result<(), kube::Error> {
        let desired = k8s::warm_pool_deployment(&self.settings, self.target);
        let Some(current) = self.api.get_opt(k8s::WARM_POOL_NAME).await? else {
            match self.api.create(&PostParams::default(), &desired).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => return Ok(()),
                Err(e) => return Err(e),
            }
            tracing::info!(replicas = self.target, "warm pool: created deployment");
            return Ok(());
        };
        let want = desired.spec.as_ref().expect("builder sets spec");
        let have = current.spec.as_ref();
        // Compare what we own, not the whole spec: the API server fills in defaults.
        let images = |d: &k8s_openapi::api::apps::v1::DeploymentSpec| -> Vec<Option<String>> {
            d.template
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| c.image.clone())
                .collect()
        };
        let labels = |d: &k8s_openapi::api::apps::v1::DeploymentSpec| {
            d.template.metadata.as_ref().and_then(|m| m.labels.clone())
        };
        let drifted = have.is_none_or(|h| {
            h.replicas != want.replicas || images(h) != images(want) || labels(h) != labels(want)
        });
        if drifted {
            let patch = serde_json::json!({ "spec": want });
            self.api
                .patch(
                    k8s::WARM_POOL_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            tracing::info!(replicas = self.target, "warm pool: updated deployment");
        }
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
        }
    }
}
