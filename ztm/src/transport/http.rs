//! Plain HTTP to the URLs given by `--orchestrator-url` / `--router-url`.

use std::time::Duration;

use async_trait::async_trait;

use super::{root_cause, Method, Response, Service, Transport, TransportError};

pub struct HttpTransport {
    client: reqwest::Client,
    orchestrator_url: Option<String>,
    router_url: Option<String>,
    token: Option<String>,
}

impl HttpTransport {
    pub fn new(
        orchestrator_url: Option<String>,
        router_url: Option<String>,
        token: Option<String>,
    ) -> Self {
        let trim = |u: Option<String>| {
            u.filter(|u| !u.trim().is_empty())
                .map(|u| u.trim().trim_end_matches('/').to_owned())
        };
        HttpTransport {
            client: client(),
            orchestrator_url: trim(orchestrator_url),
            router_url: trim(router_url),
            token,
        }
    }

    pub fn has_url(&self, service: Service) -> bool {
        self.url(service).is_some()
    }

    fn url(&self, service: Service) -> Option<&str> {
        match service {
            Service::Orchestrator => self.orchestrator_url.as_deref(),
            Service::Router => self.router_url.as_deref(),
        }
    }
}

/// Long overall timeout: a cold wake may legitimately take minutes.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
        .expect("HTTP client")
}

/// Sends one request to `base` + `path`; shared with the port-forward transport.
pub(crate) async fn send(
    client: &reqwest::Client,
    service: Service,
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Response, TransportError> {
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("valid method");
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    if body.is_none() {
        req = common::http_client::without_body(&method, req);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let unreachable = |e: reqwest::Error| TransportError::Unreachable {
        service,
        url: base.to_owned(),
        reason: root_cause(&e),
    };
    let resp = req.send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(unreachable)?;
    Ok(Response { status, body })
}

#[async_trait]
impl Transport for HttpTransport {
    async fn request(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, TransportError> {
        let base = self.url(service).ok_or(TransportError::NoUrl { service })?;
        send(
            &self.client,
            service,
            base,
            self.token.as_deref(),
            method,
            path,
            body,
        )
        .await
    }
}
