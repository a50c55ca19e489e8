//! `/admin/webhook/{id}`: points a tenant's bot at this router (or detaches it), and shows the
//! bot's webhook as Telegram sees it.

use std::sync::Arc;

use common::telegram::TelegramClient;
use common::webhook_record::{WebhookRecord, WebhookRecords};
use common::{Secret, StoreError, TenantId};
use thiserror::Error;

use crate::metrics::{Metrics, TelegramMethod};
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
    #[error("webhook records: {0}")]
    Records(#[source] StoreError),
}

impl From<OrchestratorError> for AdminError {
    fn from(e: OrchestratorError) -> Self {
        match e {
            OrchestratorError::NotFound => AdminError::UnknownTenant,
            e => AdminError::Orchestrator(e),
        }
    }
}

/// `GET /admin/webhook/{id}`: Telegram's view of the bot's webhook next to the platform's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebhookReport {
    pub tenant_id: String,
    /// Where Telegram sends the bot's updates (empty: no webhook, updates wait for getUpdates).
    pub url: String,
    /// `{PUBLIC_BASE_URL}/tg/{id}`; `None` when the router has no public URL configured.
    pub expected_url: Option<String>,
    pub url_matches: Option<bool>,
    pub pending_update_count: u64,
    pub last_error_message: Option<String>,
    /// Unix time of the last delivery error, and its age in seconds.
    pub last_error_date: Option<i64>,
    pub last_error_age_s: Option<i64>,
    pub max_connections: Option<u32>,
    pub allowed_updates: Option<Vec<String>>,
    pub expected_allowed_updates: Vec<String>,
    pub allowed_updates_match: Option<bool>,
    pub ip_address: Option<String>,
    /// Whether Telegram sends the tenant's current secret token (see [`SecretToken`]).
    pub secret_token: SecretToken,
    /// This router's `WEBHOOK_SECRET` mode: what an update without the token gets here.
    pub webhook_secret: SecretMode,
    /// Unix time this platform last registered the webhook (`None`: never, e.g. the Go platform did).
    pub registered_at: Option<i64>,
}

/// What the router knows of the secret token Telegram sends with the bot's updates. Telegram's
/// `getWebhookInfo` does not report it: the answer comes from the router's own registration record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretToken {
    /// Registered by this platform at this URL with the token of the current `WEBHOOK_SECRET`.
    Current,
    /// Registered by this platform at this URL under another `WEBHOOK_SECRET` (rotated since).
    OtherSecret,
    /// Registered by this platform at this URL without a token (no `WEBHOOK_SECRET` then).
    None,
    /// Not registered at this URL by this platform (the Go platform, a curl): assume no token.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretMode {
    /// No `WEBHOOK_SECRET`: any update is accepted.
    Off,
    /// `WEBHOOK_SECRET` with `WEBHOOK_SECRET_OPTIONAL`: an update without a token is accepted.
    Optional,
    /// An update without the tenant's token gets 401.
    Enforced,
}

pub struct WebhookAdmin {
    pub orch: Arc<OrchestratorClient>,
    pub telegram: TelegramClient,
    pub public_base_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_optional: bool,
    /// What this platform registered, per tenant (shared by the replicas when Redis is).
    pub records: Arc<dyn WebhookRecords>,
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
        self.metrics
            .telegram_call(TelegramMethod::setWebhook, result.is_ok());
        result.map_err(AdminError::Telegram)?;
        tracing::info!(tenant = %id, url = %url, "webhook registered");
        let record = WebhookRecord {
            url: url.clone(),
            secret_fingerprint: self.fingerprint(id),
            registered_at: chrono::Utc::now().timestamp(),
        };
        // Telegram has the new webhook: a lost record only makes the report say "unknown".
        if let Err(e) = self.records.put(id, &record).await {
            tracing::warn!(tenant = %id, error = %e, "cannot record the webhook registration");
        }
        Ok(url)
    }

    pub async fn unregister(&self, id: &TenantId) -> Result<(), AdminError> {
        let token = self.orch.bot_token(id).await?;
        let result = self.telegram.delete_webhook(&token).await;
        self.metrics
            .telegram_call(TelegramMethod::deleteWebhook, result.is_ok());
        result.map_err(AdminError::Telegram)?;
        tracing::info!(tenant = %id, "webhook deleted");
        if let Err(e) = self.records.remove(id).await {
            tracing::warn!(tenant = %id, error = %e, "cannot remove the webhook record");
        }
        Ok(())
    }

    /// `getWebhookInfo` of the tenant's bot, compared with what the platform expects (the token
    /// stays here: the report carries none of it).
    pub async fn info(&self, id: &TenantId) -> Result<WebhookReport, AdminError> {
        let token = self.orch.bot_token(id).await?;
        let result = self.telegram.get_webhook_info(&token).await;
        self.metrics
            .telegram_call(TelegramMethod::getWebhookInfo, result.is_ok());
        let info = result.map_err(AdminError::Telegram)?;
        let record = self.records.get(id).await.map_err(AdminError::Records)?;
        let registered_at = record.as_ref().map(|r| r.registered_at);
        let secret_token = match record.filter(|r| r.url == info.url && !info.url.is_empty()) {
            None => SecretToken::Unknown,
            Some(r) => match (r.secret_fingerprint, self.fingerprint(id)) {
                (None, _) => SecretToken::None,
                (Some(had), Some(now)) if had == now => SecretToken::Current,
                (Some(_), _) => SecretToken::OtherSecret,
            },
        };
        let expected_url = self
            .public_base_url
            .as_ref()
            .map(|base| format!("{}/tg/{id}", base.trim_end_matches('/')));
        let now = chrono::Utc::now().timestamp();
        let expected_updates: Vec<String> = common::telegram::ALLOWED_UPDATES
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(WebhookReport {
            tenant_id: id.to_string(),
            url_matches: expected_url.as_ref().map(|e| *e == info.url),
            expected_url,
            last_error_age_s: info.last_error_date.map(|d| (now - d).max(0)),
            allowed_updates_match: info.allowed_updates.as_ref().map(|a| {
                let mut a = a.clone();
                a.sort();
                let mut e = expected_updates.clone();
                e.sort();
                a == e
            }),
            expected_allowed_updates: expected_updates,
            url: info.url,
            pending_update_count: info.pending_update_count,
            last_error_message: info.last_error_message,
            last_error_date: info.last_error_date,
            max_connections: info.max_connections,
            allowed_updates: info.allowed_updates,
            ip_address: info.ip_address,
            secret_token,
            webhook_secret: match (&self.webhook_secret, self.webhook_secret_optional) {
                (None, _) => SecretMode::Off,
                (Some(_), true) => SecretMode::Optional,
                (Some(_), false) => SecretMode::Enforced,
            },
            registered_at,
        })
    }

    fn fingerprint(&self, id: &TenantId) -> Option<String> {
        self.webhook_secret
            .as_ref()
            .map(|s| common::webhook::secret_fingerprint(s.expose(), id))
    }
}
