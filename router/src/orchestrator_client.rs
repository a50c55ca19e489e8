//! The router's calls to the orchestrator: wake, the bot token (cached briefly) and activity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::wire::{AgentTokenAnswer, BotTokenAnswer, Endpoint, ErrorBody, WakeAnswer};
use common::{Secret, TenantId};
use serde::Deserialize;
use thiserror::Error;

/// What a call to the orchestrator failed with. A transport failure keeps the reqwest error (its URL
/// removed) as its source; an answer that cannot be read keeps only its top-level text, since a
/// decoder's error may quote the body, and a token answer's body is a secret.
#[derive(Debug, Error)]
pub enum OrchestratorError {
    #[error("tenant not found")]
    NotFound,
    /// The agent itself could not be started (the orchestrator's `code: agent_start_failed`):
    /// definitive, unlike every other failure here.
    #[error("agent could not be started: {0}")]
    AgentFailed(String),
    /// The orchestrator answered but could not do it now (a backend down, shutting down, a proxy's
    /// error page): an outage, worth retrying.
    #[error("orchestrator failed ({status}): {reason}")]
    Failed { status: u16, reason: String },
    #[error("orchestrator unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The tenant is suspended by an operator (423): it is not woken until resumed.
    #[error("tenant is suspended")]
    Suspended,
}

impl OrchestratorError {
    /// An outage of the orchestrator or its backends (neither the tenant's absence nor its agent's fault).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            OrchestratorError::Failed { .. } | OrchestratorError::Unreachable(_)
        )
    }
}

pub struct OrchestratorClient {
    base: String,
    api_token: Option<Secret>,
    http: reqwest::Client,
    wake_timeout: Duration,
    token_ttl: Duration,
    tokens: Mutex<HashMap<TenantId, (Secret, Instant)>>,
    go_agent_port: u16,
    /// Agent credentials: they never change once set, so kept until an agent refuses one.
    agent_tokens: Mutex<HashMap<TenantId, Secret>>,
}

/// The tenant's record as [`OrchestratorClient::glance`] reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Glance {
    pub suspended: bool,
    /// The record says `running`: a wake most likely finds the agent up and starts nothing.
    pub running: bool,
}

/// The port a Go orchestrator's pods listen on (the Go router always forwarded to `:3000`).
pub const GO_AGENT_PORT: u16 = 3000;

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
            agent_tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Every call to the orchestrator is bodiless, so each carries `Content-Length: 0` (proxies).
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        let rb = common::telemetry::inject(common::http_client::without_body(&method, rb));
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
            .map_err(|e| OrchestratorError::Unreachable(e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(OrchestratorError::NotFound);
        }
        if status == reqwest::StatusCode::LOCKED {
            return Err(OrchestratorError::Suspended);
        }
        let text = resp.text().await.unwrap_or_default();
        let (reason, code) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error, b.code),
            Err(_) => (text.chars().take(200).collect(), None),
        };
        if code.as_deref() == Some(common::error::AGENT_START_FAILED) {
            return Err(OrchestratorError::AgentFailed(reason));
        }
        Err(OrchestratorError::Failed {
            status: status.as_u16(),
            reason,
        })
    }

    /// Wakes the tenant's agent (or finds it running) and returns where it answers.
    pub async fn wake(&self, id: &TenantId) -> Result<Endpoint, OrchestratorError> {
        let rb = self
            .request(reqwest::Method::POST, &format!("/wake/{id}"))
            .timeout(self.wake_timeout);
        let resp = self.send(rb).await?;
        // `endpoint` from this platform; only `pod_ip` from a Go orchestrator (router swapped first).
        let body: WakeAnswer = resp.json().await.map_err(|e| OrchestratorError::Failed {
            status: 200,
            reason: format!("bad wake response: {}", e.without_url()),
        })?;
        match body.endpoint(self.go_agent_port) {
            Some(ep) => Ok(ep),
            None => Err(OrchestratorError::Failed {
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

    /// What the tenant's record says, asked before a wake: a suspended tenant's users are told so
    /// instead of "Starting up", and a running one's are told nothing unless the wake is slow. Any
    /// failure answers neither: the wake itself then says.
    pub async fn glance(&self, id: &TenantId) -> Glance {
        #[derive(Deserialize)]
        struct View {
            #[serde(default)]
            suspended: bool,
            #[serde(default)]
            status: String,
        }
        let rb = self
            .request(reqwest::Method::GET, &format!("/tenants/{id}"))
            .timeout(Duration::from_secs(5));
        let view = match self.send(rb).await {
            Ok(resp) => resp.json::<View>().await.ok(),
            Err(_) => None,
        };
        view.map_or(Glance::default(), |v| Glance {
            suspended: v.suspended,
            running: v.status == "running",
        })
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
        let body: BotTokenAnswer = resp.json().await.map_err(|e| OrchestratorError::Failed {
            status: 200,
            reason: format!("bad bot_token response: {}", e.without_url()),
        })?;
        self.lock_tokens()
            .insert(id.clone(), (body.bot_token.clone(), Instant::now()));
        Ok(body.bot_token)
    }

    /// Whether the orchestrator knows the tenant (`GET /tenants/{id}`: 200 or 404).
    pub async fn exists(&self, id: &TenantId) -> Result<bool, OrchestratorError> {
        let rb = self
            .request(reqwest::Method::GET, &format!("/tenants/{id}"))
            .timeout(Duration::from_secs(5));
        match self.send(rb).await {
            Ok(_) => Ok(true),
            Err(OrchestratorError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The tenant's current bot token from the orchestrator, bypassing (and refreshing) the cache:
    /// after Telegram refused the cached one, which a rotation revoked.
    pub async fn fresh_bot_token(&self, id: &TenantId) -> Result<Secret, OrchestratorError> {
        self.forget_token(id);
        self.bot_token(id).await
    }

    /// Forgets a cached token, e.g. after Telegram rejected it.
    pub fn forget_token(&self, id: &TenantId) {
        self.lock_tokens().remove(id);
    }

    /// The credential the tenant's agent accepts, from memory once fetched.
    pub async fn agent_token(&self, id: &TenantId) -> Result<Secret, OrchestratorError> {
        if let Some(t) = self.lock_agent_tokens().get(id) {
            return Ok(t.clone());
        }
        let rb = self
            .request(reqwest::Method::GET, &format!("/tenants/{id}/agent_token"))
            .timeout(Duration::from_secs(10));
        let resp = self.send(rb).await?;
        let body: AgentTokenAnswer = resp.json().await.map_err(|e| OrchestratorError::Failed {
            status: 200,
            reason: format!("bad agent_token response: {}", e.without_url()),
        })?;
        self.lock_agent_tokens()
            .insert(id.clone(), body.agent_token.clone());
        Ok(body.agent_token)
    }

    /// Forgets a cached agent credential: an agent refused it (401), so the next forward refetches.
    pub fn forget_agent_token(&self, id: &TenantId) {
        self.lock_agent_tokens().remove(id);
    }

    fn lock_agent_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Secret>> {
        self.agent_tokens.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An orchestrator nobody answers for: an outage whose source is the transport error, with
    /// neither the URL (it names the tenant) nor the API token anywhere in the chain.
    #[tokio::test]
    async fn an_unreachable_orchestrator_keeps_the_transport_error_without_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = OrchestratorClient::new(
            &format!("http://127.0.0.1:{port}"),
            Some(Secret::new("api-token-secret")),
            Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let err = client
            .wake(&TenantId::parse("bob").unwrap())
            .await
            .expect_err("nothing listens there");
        assert!(err.is_outage(), "{err:?}");
        let source = std::error::Error::source(&err).expect("the transport error is kept");
        let reqwest_err = common::error::find_source::<reqwest::Error>(source).expect("reqwest");
        assert!(reqwest_err.url().is_none(), "{reqwest_err:?}");
        let chain = common::error::error_chain(&err);
        assert!(chain.contains("orchestrator unreachable"), "{chain}");
        for secret in ["/wake/bob", "api-token-secret", &port.to_string()] {
            assert!(!chain.contains(secret), "{secret} in {chain}");
        }
    }
}
