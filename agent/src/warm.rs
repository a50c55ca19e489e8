//! Warm-pool mode (`AGENT_WARM=1`): the agent runs with no tenant, no tenant secret and no tenant
//! state until `POST /assign` (`common::assignment`) names its tenant; it then restores that
//! tenant's memory through the assignment's grants and serves it. At stop it saves through them,
//! renewed at the orchestrator (`ORCHESTRATOR_URL`) when they are expired, near expiry or refused.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::assignment::{self, AssignError, AssignGate, AssignResponse, Renewer, StateGrants};
use common::Secret;

use crate::brain::{self, Brain, BRAIN_FILE};
use crate::http::Serving;
use crate::service::Agent;

/// What a warm agent keeps of its assignment to save at stop.
struct Assigned {
    grants: StateGrants,
    /// Where the grants are renewed; `None` without `ORCHESTRATOR_URL` (saves with what it holds).
    renewer: Option<Renewer>,
    /// Messages in the brain right after the restore: a save with nothing new is skipped, so a
    /// pod deleted before it served (an interrupted claim) never writes over a newer save.
    restored_count: u64,
}

pub struct Warm {
    gate: AssignGate,
    data_dir: PathBuf,
    startup_delay: Duration,
    reply_delay: Duration,
    http: reqwest::Client,
    assigned: OnceLock<Assigned>,
    orchestrator_url: Option<String>,
}

impl Warm {
    pub fn new(
        pool_token: Secret,
        data_dir: PathBuf,
        startup_delay: Duration,
        reply_delay: Duration,
    ) -> Self {
        Warm {
            gate: AssignGate::new(pool_token),
            data_dir,
            startup_delay,
            reply_delay,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("static reqwest configuration"),
            assigned: OnceLock::new(),
            orchestrator_url: None,
        }
    }

    /// Where the assigned agent renews its state grants (`ORCHESTRATOR_URL`).
    pub fn with_orchestrator_url(mut self, url: Option<String>) -> Self {
        self.orchestrator_url = url;
        self
    }

    /// Where the assignment's `tenant.json` is written.
    pub fn config_dir(&self) -> PathBuf {
        self.data_dir.join("config")
    }

    /// Admits the assignment, restores the tenant's memory and configuration, then pays the
    /// agent's own start (`AGENT_STARTUP_MS`) and returns the tenant to serve.
    pub async fn assign(
        &self,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(Serving, AssignResponse), AssignError> {
        let a = self.gate.admit(authorization, body)?;
        let failed =
            |what: &str, e: &dyn std::fmt::Display| AssignError::Failed(format!("{what}: {e}"));
        let config_dir = self.config_dir();
        std::fs::create_dir_all(&config_dir).map_err(|e| failed("config dir", &e))?;
        let json = serde_json::to_vec_pretty(&a.config).map_err(|e| failed("config", &e))?;
        std::fs::write(config_dir.join(common::agent_config::CONFIG_FILE), json)
            .map_err(|e| failed("writing tenant.json", &e))?;
        crate::tenant_config::log_summary(&config_dir);
        brain::remove_journals(&self.data_dir).map_err(|e| failed("data dir", &e))?;
        let restored = assignment::restore(&self.http, &a.state, &self.data_dir.join(BRAIN_FILE))
            .await
            .map_err(|e| failed("restoring brain.db", &e))?;
        let brain = Brain::open(&self.data_dir).map_err(|e| failed("opening brain.db", &e))?;
        let restored_count = brain.count().map_err(|e| failed("brain.db", &e))?;
        tokio::time::sleep(self.startup_delay).await;
        let renewer = self
            .orchestrator_url
            .as_deref()
            .map(|url| Renewer::new(url, &a.tenant_id, a.agent_token.clone(), &a.state));
        let _ = self.assigned.set(Assigned {
            grants: a.state,
            renewer,
            restored_count,
        });
        let serving = Serving {
            tenant_id: a.tenant_id.clone(),
            agent: Agent::new(brain, self.reply_delay),
            agent_token: Some(a.agent_token.expose().to_owned()),
        };
        Ok((
            serving,
            AssignResponse {
                tenant_id: a.tenant_id,
                restored_generation: restored,
            },
        ))
    }

    /// Saves the brain through the save grant when it holds anything new; returns the generation
    /// written, `None` when there was nothing to save.
    pub async fn save(&self, agent: &Agent) -> anyhow::Result<Option<u64>> {
        let Some(assigned) = self.assigned.get() else {
            return Ok(None);
        };
        if agent.count().await? == assigned.restored_count {
            return Ok(None);
        }
        let tmp = self
            .data_dir
            .join(format!(".{BRAIN_FILE}.save-{}", std::process::id()));
        agent.snapshot(&tmp).await?;
        let saved = assignment::save_renewing(
            &self.http,
            &assigned.grants,
            assigned.renewer.as_ref(),
            &tmp,
        )
        .await;
        let _ = std::fs::remove_file(&tmp);
        Ok(Some(saved?))
    }
}
