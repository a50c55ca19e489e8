//! Forwarding a message to a tenant's agent (`POST http://{endpoint}/webhook`).
//!
//! A plain hyper client rather than reqwest: this is the router's hot path, and reqwest's URL
//! parsing, redirect and proxy layers cost more CPU than the forward itself (bench/results/profile.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::error::BoxError;
use common::wire::{
    AgentMessage, AgentReply, Endpoint, AGENT_WEBHOOK_PATH, IDEMPOTENCY_KEY_HEADER,
    TENANT_ID_HEADER,
};
use common::{Secret, TenantId};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

/// Why a forward did not bring a reply. The text says it all (with its cause's, which nothing
/// here holds a secret in); the cause itself is the `source`.
#[derive(Debug, Error)]
pub enum ForwardError {
    /// Nothing answers at the endpoint, or another tenant's agent does (421, or 401: it refused this
    /// tenant's credential): the cached endpoint is stale. Never a reply to deliver.
    #[error("agent unreachable: {reason}")]
    Unreachable {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The agent failed (5xx, timeout, unreadable reply); worth a bounded number of retries.
    #[error("agent failed: {reason}")]
    Failed {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The agent refused the message (4xx); retrying will not help.
    #[error("agent rejected the message ({0})")]
    Rejected(u16),
}

impl ForwardError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ForwardError::Rejected(_))
    }

    fn unreachable(reason: impl Into<String>) -> Self {
        ForwardError::Unreachable {
            reason: reason.into(),
            source: None,
        }
    }

    /// Unreachable because of `e` (a connect error): the text carries `e`'s whole chain.
    fn unreachable_by(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ForwardError::Unreachable {
            reason: common::error::error_chain(&e),
            source: Some(Box::new(e)),
        }
    }

    fn failed(reason: impl Into<String>) -> Self {
        ForwardError::Failed {
            reason: reason.into(),
            source: None,
        }
    }

    /// Failed while doing `what`, because of `e`: `{what}: {e}`.
    fn failed_by(what: &str, e: impl Into<BoxError>) -> Self {
        let e = e.into();
        ForwardError::Failed {
            reason: format!("{what}: {e}"),
            source: Some(e),
        }
    }
}

/// Largest agent reply read (Telegram messages are split at 4,096 characters anyway).
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Endpoints remembered before the URI cache starts over (endpoints change only on wakes).
const MAX_CACHED_URIS: usize = 4096;

pub struct AgentClient {
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// `/webhook` URIs, built once per endpoint (and per worker: each has its own client).
    uris: Mutex<HashMap<Endpoint, Uri>>,
}

impl AgentClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        AgentClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            uris: Mutex::default(),
        }
    }

    /// The same settings over a new connection pool.
    pub fn with_own_pool(&self) -> Self {
        AgentClient::new(self.timeout)
    }

    /// Sends `text` with the tenant's agent credential (`None`: a Go-era agent, which takes none);
    /// returns the agent's reply and how long the call took.
    pub async fn forward(
        &self,
        endpoint: &Endpoint,
        tenant: &TenantId,
        agent_token: Option<&Secret>,
        idempotency_key: &str,
        text: &str,
    ) -> (Result<String, ForwardError>, Duration) {
        let started = Instant::now();
        let call = async {
            let uri = self.webhook_uri(endpoint)?;
            let body = serde_json::to_vec(&AgentMessage {
                message: text.into(),
            })
            .map_err(|e| ForwardError::failed_by("cannot encode the message", e))?;
            let mut req = Request::post(uri)
                .header(CONTENT_TYPE, "application/json")
                .header(IDEMPOTENCY_KEY_HEADER, idempotency_key)
                .header(TENANT_ID_HEADER, tenant.as_str());
            if let Some(token) = agent_token {
                req = req.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
            }
            let mut req = req
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| ForwardError::failed_by("cannot build the request", e))?;
            common::telemetry::inject_headers(req.headers_mut());
            self.exchange(req).await
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ForwardError::failed(format!(
                "timed out after {:?}",
                self.timeout
            ))),
        };
        let took = started.elapsed();
        if result.is_ok() {
            // The Go router's line for a delivered message, which its operators grep for.
            tracing::info!(tenant = %tenant, endpoint = %endpoint, took_ms = took.as_millis() as u64, "forwarded to pod");
        }
        (result, took)
    }

    fn webhook_uri(&self, endpoint: &Endpoint) -> Result<Uri, ForwardError> {
        let mut uris = self.uris.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(uri) = uris.get(endpoint) {
            return Ok(uri.clone());
        }
        let uri: Uri = format!("http://{endpoint}{AGENT_WEBHOOK_PATH}")
            .parse()
            .map_err(|e| ForwardError::unreachable(format!("bad endpoint {endpoint}: {e}")))?;
        if uris.len() >= MAX_CACHED_URIS {
            uris.clear();
        }
        uris.insert(endpoint.clone(), uri.clone());
        Ok(uri)
    }

    /// Sends the request and reads the agent's answer.
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<String, ForwardError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(ForwardError::unreachable_by)?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {
                let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| ForwardError::failed_by("bad reply", e))?
                    .to_bytes();
                serde_json::from_slice::<AgentReply>(&body)
                    .map(|r| r.response)
                    .map_err(|e| ForwardError::failed_by("bad reply", e))
            }
            421 => Err(ForwardError::unreachable(
                "endpoint serves another tenant (421)",
            )),
            401 => Err(ForwardError::unreachable(
                "agent refused the tenant's credential (401): another tenant's agent",
            )),
            408 | 429 | 500..=599 => Err(ForwardError::failed(format!("status {status}"))),
            _ => Err(ForwardError::Rejected(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nobody listens on: the forward is `Unreachable` (the cached endpoint is stale), its
    /// text says why, and the HTTP client's own error is reachable as its source.
    #[tokio::test]
    async fn a_refused_forward_is_unreachable_and_keeps_the_client_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = AgentClient::new(Duration::from_secs(5));
        let tenant = TenantId::parse("bob").unwrap();
        let (result, _) = client
            .forward(&Endpoint::new("127.0.0.1", port), &tenant, None, "k", "hi")
            .await;
        let err = result.expect_err("nothing listens there");
        assert!(matches!(err, ForwardError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("onnect"), "{err}");
        let source = std::error::Error::source(&err).expect("the client error is kept");
        assert!(
            source
                .downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some(),
            "{source:?}"
        );
        assert!(
            common::error::find_source::<std::io::Error>(source).is_some(),
            "the connect error's io::Error is reachable: {source:?}"
        );
    }
}
