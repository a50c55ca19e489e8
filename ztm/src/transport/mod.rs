//! How ztm reaches the services: plain HTTP, `kubectl port-forward`, or `kubectl exec ... call`.

mod exec;
mod http;
pub mod kubectl;
mod port_forward;

use std::fmt;

use async_trait::async_trait;
use thiserror::Error;

pub use exec::ExecTransport;
pub use http::HttpTransport;
pub use kubectl::Kubectl;
pub use port_forward::PortForwardTransport;

use crate::cli::{Global, TransportKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Orchestrator,
    Router,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Orchestrator => "orchestrator",
            Service::Router => "router",
        }
    }

    /// The port the service listens on (and its Kubernetes Service exposes).
    pub fn port(self) -> u16 {
        match self {
            Service::Orchestrator => 8080,
            Service::Router => 9090,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A service's answer: status and raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// The service could not be asked at all; the text says where and why, never a secret.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("{service} unreachable at {url}: {reason}")]
    Unreachable {
        service: Service,
        url: String,
        /// The innermost cause, as a person reads it (`connection refused`).
        reason: String,
        /// The HTTP client's error (its URL removed); none through `kubectl exec`.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// kubectl refused or failed; the text explains what to do (from its stderr).
    #[error("{0}")]
    Kubectl(String),
    /// kubectl could not be run, or a local port not found, for `what`.
    #[error("{what}: {source}")]
    Local {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no URL set for {service}: pass --{service}-url or set ZTM_{upper}_URL", upper = service.name().to_uppercase())]
    NoUrl { service: Service },
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends `method path` with an optional JSON body to `service`.
    async fn request(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, TransportError>;

    /// Releases what the transport holds (port-forward children); also done on drop.
    async fn close(&self) {}
}

/// Picks a transport per service: for `auto`, HTTP when the service's URL is set, else port-forward.
pub struct Selected {
    http: HttpTransport,
    port_forward: Option<PortForwardTransport>,
    exec: Option<ExecTransport>,
    kind: TransportKind,
}

impl Selected {
    pub fn new(g: &Global) -> Self {
        let kubectl = Kubectl::new(g.context.clone(), g.namespace.clone());
        Selected {
            http: HttpTransport::new(
                g.orchestrator_url.clone(),
                g.router_url.clone(),
                g.api_token.clone(),
            ),
            port_forward: matches!(
                g.transport,
                TransportKind::Auto | TransportKind::PortForward
            )
            .then(|| PortForwardTransport::new(kubectl.clone(), g.api_token.clone())),
            exec: (g.transport == TransportKind::Exec).then(|| ExecTransport::new(kubectl)),
            kind: g.transport,
        }
    }

    fn pick(&self, service: Service) -> &dyn Transport {
        match (self.kind, &self.port_forward, &self.exec) {
            (TransportKind::Exec, _, Some(exec)) => exec,
            (TransportKind::PortForward, Some(pf), _) => pf,
            (TransportKind::Auto, Some(pf), _) if !self.http.has_url(service) => pf,
            _ => &self.http,
        }
    }
}

#[async_trait]
impl Transport for Selected {
    async fn request(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, TransportError> {
        self.pick(service)
            .request(service, method, path, body)
            .await
    }

    async fn close(&self) {
        if let Some(pf) = &self.port_forward {
            pf.close().await;
        }
    }
}

/// The root cause of an error chain in lower case, e.g. `connection refused`.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    // "Connection refused" → "connection refused", but "URL ..." stays as it is.
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if !second.is_uppercase() => {
            first.to_lowercase().chain(text.chars().skip(1)).collect()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cause_is_the_innermost_error() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let outer = std::io::Error::other(io);
        assert_eq!(root_cause(&outer), "connection refused");
        let url = std::io::Error::other("URL scheme is not allowed");
        assert_eq!(root_cause(&url), "URL scheme is not allowed");
    }
}
