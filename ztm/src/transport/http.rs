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
        source: Some(e.without_url()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A service nobody answers for: the CLI's line names it and the innermost cause, and the
    /// client's error is kept as the source, without the URL it was sent to.
    #[tokio::test]
    async fn an_unreachable_service_keeps_the_client_error_without_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let err = send(
            &reqwest::Client::new(),
            Service::Orchestrator,
            &base,
            Some("api-token-secret"),
            Method::Get,
            "/tenants/bob",
            None,
        )
        .await
        .expect_err("nothing listens there");
        assert_eq!(
            err.to_string(),
            format!("orchestrator unreachable at {base}: connection refused")
        );
        let source = std::error::Error::source(&err).expect("the client error is kept");
        let client_err = source.downcast_ref::<reqwest::Error>().expect("reqwest");
        assert!(client_err.url().is_none(), "{client_err:?}");
        assert!(!format!("{err:?}").contains("api-token-secret"));
    }
}
