//! `/admin/webhook/{id}`: points a tenant's bot at this router (or detaches it).

use std::sync::Arc;

use common::telegram::TelegramClient;
use common::{Secret, TenantId};
use thiserror::Error;

use crate::metrics::Metrics;
use crate::orchestrator_client::{OrchestratorClient, OrchestratorError};

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("PUBLIC_BASE_URL is not set: the router does not know the URL Telegram should call")]
    NoPublicUrl,
    #[error("tenant not found")]
    UnknownTenant,
    #[error("cannot get the bot token: {0}")]
    Orchestrator(OrchestratorError),
    #[error("{0}")]
    Telegram(common::telegram::TelegramError),
}

impl From<OrchestratorError> for AdminError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::NotFound => AdminError::UnknownTenant,
            e => AdminError::Orchestrator(e),
        }
    }
}

pub struct WebhookAdmin {
    pub orch: Arc<OrchestratorClient>,
    pub telegram: TelegramClient,
    pub public_base_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub metrics: Arc<Metrics>,
}

impl WebhookAdmin {
    /// Registers `{PUBLIC_BASE_URL}/tg/{id}` (with the tenant's secret token) and returns the URL.
    pub async fn register(&self, id: &TenantId) -> Result<String, AdminError> {
        let base = self
            .public_base_url
            .as_ref()
            .ok_or(AdminError::NoPublicUrl)?;
        let url = format!("{base}/tg/{id}");
        let token = self.orch.bot_token(id).await?;
        let secret = self
            .webhook_secret
            .as_ref()
            .map(|s| common::webhook::secret_token(s.expose(), id));
        let result = self
            .telegram
            .set_webhook(&token, &url, secret.as_deref())
            .await;
        self.count("setWebhook", result.is_ok());
        result.map_err(AdminError::Telegram)?;
        tracing::info!(tenant = %id, url = %url, "webhook registered");
        Ok(url)
    }

    pub async fn unregister(&self, id: &TenantId) -> Result<(), AdminError> {
        let token = self.orch.bot_token(id).await?;
        let result = self.telegram.delete_webhook(&token).await;
        self.count("deleteWebhook", result.is_ok());
        result.map_err(AdminError::Telegram)?;
        tracing::info!(tenant = %id, "webhook deleted");
        Ok(())
    }

    fn count(&self, method: &str, ok: bool) {
        self.metrics
            .telegram_calls
            .inc(&[method, if ok { "ok" } else { "error" }]);
    }
}
