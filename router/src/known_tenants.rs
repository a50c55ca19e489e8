//! Which tenants exist, asked of the orchestrator and remembered briefly: without `WEBHOOK_SECRET`
//! the webhook refuses updates for unknown tenants before writing anything, without a round trip
//! per update. A "no" is remembered only for a moment, so a tenant just created is accepted at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TenantId;

use crate::orchestrator_client::{OrchestratorClient, OrchestratorError};

/// Bound on remembered answers: forged ids must not grow memory without limit.
const MAX_ENTRIES: usize = 10_000;

pub struct KnownTenants {
    orch: Arc<OrchestratorClient>,
    known_ttl: Duration,
    unknown_ttl: Duration,
    answers: Mutex<HashMap<TenantId, (bool, Instant)>>,
}

impl KnownTenants {
    pub fn new(orch: Arc<OrchestratorClient>, known_ttl: Duration, unknown_ttl: Duration) -> Self {
        KnownTenants {
            orch,
            known_ttl,
            unknown_ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the tenant exists; an error when the orchestrator cannot say (the caller refuses
    /// the update with a retryable status).
    pub async fn exists(&self, id: &TenantId) -> Result<bool, OrchestratorError> {
        if let Some((exists, at)) = self.lock().get(id) {
            let ttl = if *exists {
                self.known_ttl
            } else {
                self.unknown_ttl
            };
            if at.elapsed() < ttl {
                return Ok(*exists);
            }
        }
        let exists = self.orch.exists(id).await?;
        let mut answers = self.lock();
        if answers.len() >= MAX_ENTRIES {
            let (known, unknown) = (self.known_ttl, self.unknown_ttl);
            answers.retain(|_, (e, at)| at.elapsed() < if *e { known } else { unknown });
            if answers.len() >= MAX_ENTRIES {
                answers.retain(|_, (e, _)| *e);
            }
        }
        if answers.len() < MAX_ENTRIES {
            answers.insert(id.clone(), (exists, Instant::now()));
        }
        Ok(exists)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (bool, Instant)>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
