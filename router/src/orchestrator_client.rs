//! The router's calls to the orchestrator: wake, the bot token (cached briefly) and activity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Secret, TenantId};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OrchestratorError {
    #[error("tenant not found")]
    NotFound,
    /// The orchestrator answered but could not do it (a wake whose start failed: 503 with its reason).
    #[error("orchestrator failed ({status}): {reason}")]
    Failed { status: u16, reason: String },
    #[error("orchestrator unreachable: {0}")]
    Unreachable(String),
}

pub struct OrchestratorClient {
    base: String,
    api_token: Option<Secret>,
    http: reqwest::Client,
    wake_timeout: Duration,
    token_ttl: Duration,
    tokens: Mutex<HashMap<TenantId, (Secret, Instant)>>,
    go_agent_port: u16,
}

/// `endpoint` from this platform; only `pod_ip` from a Go orchestrator (router swapped first).
#[derive(Deserialize)]
struct WakeResponse {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    pod_ip: Option<String>,
}

/// The Go orchestrator answered `{"BotToken": ...}`.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(alias = "BotToken")]
    bot_token: Secret,
}

/// The port a Go orchestrator's pods listen on (the Go router always forwarded to `:3000`).
pub const GO_AGENT_PORT: u16 = 3000;

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl OrchestratorClient {
    pub fn new(
        base: &str,
        api_token: Option<Secret>,
        wake_timeout: Duration,
        token_ttl: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        OrchestratorClient {
            base: base.trim_end_matches('/').to_owned(),
            api_token,
            http,
            wake_timeout,
            token_ttl,
            tokens: Mutex::new(HashMap::new()),
            go_agent_port: GO_AGENT_PORT,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb =
            common::telemetry::inject(self.http.request(method, format!("{}{path}", self.base)));
        match &self.api_token {
            Some(t) => rb.bearer_auth(t.expose()),
            None => rb,
        }
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OrchestratorError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| OrchestratorError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(OrchestratorError::NotFound);
        }
        let text = resp.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.chars().take(200).collect());
        Err(OrchestratorError::Failed {
            status: status.as_u16(),
            reason,
        })
    }

    /// Wakes the tenant's agent (or finds it running) and returns its `host:port`.
    pub async fn wake(&self, id: &TenantId) -> Result<String, OrchestratorError> {
        let rb = self
            .request(reqwest::Method::POST, &format!("/wake/{id}"))
            .timeout(self.wake_timeout);
        let resp = self.send(rb).await?;
        let body: WakeResponse = resp.json().await.map_err(|e| OrchestratorError::Failed {
            status: 200,
            reason: format!("bad wake response: {}", e.without_url()),
        })?;
        match (body.endpoint, body.pod_ip) {
            (Some(ep), _) if !ep.is_empty() => Ok(ep),
            (_, Some(ip)) if !ip.is_empty() => {
                Ok(common::cache::endpoint_from_cached(&ip, self.go_agent_port))
            }
            _ => Err(OrchestratorError::Failed {
                status: 200,
                reason: "wake response without endpoint or pod_ip".into(),
            }),
        }
    }

    /// Sets the port a bare `pod_ip` wake answer (a Go orchestrator's) means; `AGENT_PORT` in pods.
    pub fn with_go_agent_port(mut self, port: u16) -> Self {
        self.go_agent_port = port;
        self
    }

    /// The tenant's bot token, from memory when fetched in the last `token_ttl`.
    pub async fn bot_token(&self, id: &TenantId) -> Result<Secret, OrchestratorError> {
        if let Some((t, at)) = self.lock_tokens().get(id) {
            if at.elapsed() < self.token_ttl {
                return Ok(t.clone());
            }
        }
        let rb = self
            .request(reqwest::Method::GET, &format!("/tenants/{id}/bot_token"))
            .timeout(Duration::from_secs(10));
        let resp = self.send(rb).await?;
        let body: TokenResponse = resp.json().await.map_err(|e| OrchestratorError::Failed {
            status: 200,
            reason: format!("bad bot_token response: {}", e.without_url()),
        })?;
        self.lock_tokens()
            .insert(id.clone(), (body.bot_token.clone(), Instant::now()));
        Ok(body.bot_token)
    }

    /// Forgets a cached token, e.g. after Telegram rejected it.
    pub fn forget_token(&self, id: &TenantId) {
        self.lock_tokens().remove(id);
    }

    pub async fn activity(&self, id: &TenantId) -> Result<(), OrchestratorError> {
        let rb = self
            .request(reqwest::Method::PUT, &format!("/tenants/{id}/activity"))
            .timeout(Duration::from_secs(5));
        self.send(rb).await.map(|_| ())
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (Secret, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}
