//! Forwarding a message to a tenant's agent (`POST http://{endpoint}/webhook`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::TenantId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// Nothing answers at the endpoint, or another tenant's agent does (421): the cached endpoint is stale.
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    /// The agent failed (5xx, timeout, unreadable reply); worth a bounded number of retries.
    #[error("agent failed: {0}")]
    Failed(String),
    /// The agent refused the message (4xx); retrying will not help.
    #[error("agent rejected the message ({0})")]
    Rejected(u16),
}

impl ForwardError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ForwardError::Rejected(_))
    }
}

#[derive(Serialize)]
struct AgentMessage<'a> {
    message: &'a str,
}

#[derive(Deserialize)]
struct AgentReply {
    response: String,
}

pub struct AgentClient {
    http: reqwest::Client,
    timeout: Duration,
    /// Parsed `/webhook` URLs by endpoint: parsing one costs more than the rest of a forward's
    /// request building.
    urls: Mutex<HashMap<String, reqwest::Url>>,
}

/// Endpoints remembered before the URL cache starts over (endpoints change only on wakes).
const MAX_CACHED_URLS: usize = 4096;

impl AgentClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .expect("reqwest client");
        AgentClient {
            http,
            timeout,
            urls: Mutex::default(),
        }
    }

    /// The same settings over a new connection pool.
    pub fn with_own_pool(&self) -> Self {
        AgentClient::new(self.timeout)
    }

    /// Sends `text`; returns the agent's reply and how long the call took.
    pub async fn forward(
        &self,
        endpoint: &str,
        tenant: &TenantId,
        idempotency_key: &str,
        text: &str,
    ) -> (Result<String, ForwardError>, Duration) {
        let started = Instant::now();
        let result = self.call(endpoint, tenant, idempotency_key, text).await;
        (result, started.elapsed())
    }

    fn webhook_url(&self, endpoint: &str) -> Result<reqwest::Url, ForwardError> {
        let mut urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(url) = urls.get(endpoint) {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(&format!("http://{endpoint}/webhook"))
            .map_err(|e| ForwardError::Unreachable(format!("bad endpoint {endpoint:?}: {e}")))?;
        if urls.len() >= MAX_CACHED_URLS {
            urls.clear();
        }
        urls.insert(endpoint.to_owned(), url.clone());
        Ok(url)
    }

    async fn call(
        &self,
        endpoint: &str,
        tenant: &TenantId,
        idempotency_key: &str,
        text: &str,
    ) -> Result<String, ForwardError> {
        let resp = common::telemetry::inject(self.http.post(self.webhook_url(endpoint)?))
            .timeout(self.timeout)
            .header("X-Idempotency-Key", idempotency_key)
            .header("X-Tenant-Id", tenant.as_str())
            .json(&AgentMessage { message: text })
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() && !e.is_connect() {
                    ForwardError::Failed(format!("timed out after {:?}", self.timeout))
                } else {
                    ForwardError::Unreachable(e.without_url().to_string())
                }
            })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => resp
                .json::<AgentReply>()
                .await
                .map(|r| r.response)
                .map_err(|e| ForwardError::Failed(format!("bad reply: {}", e.without_url()))),
            421 => Err(ForwardError::Unreachable(
                "endpoint serves another tenant (421)".into(),
            )),
            408 | 429 | 500..=599 => Err(ForwardError::Failed(format!("status {status}"))),
            _ => Err(ForwardError::Rejected(status)),
        }
    }
}
