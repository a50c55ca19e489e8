//! `kubectl port-forward svc/<service> LOCAL:PORT` on a free local port, one per service, stopped on close.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::Mutex;

use super::http::{client, send};
use super::{Kubectl, Method, Response, Service, Transport, TransportError};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

struct Forward {
    child: Child,
    base: String,
}

pub struct PortForwardTransport {
    kubectl: Kubectl,
    token: Option<String>,
    client: reqwest::Client,
    forwards: Mutex<HashMap<Service, Forward>>,
}

impl PortForwardTransport {
    pub fn new(kubectl: Kubectl, token: Option<String>) -> Self {
        PortForwardTransport {
            kubectl,
            token,
            client: client(),
            forwards: Mutex::new(HashMap::new()),
        }
    }

    /// Starts kubectl on a free port and waits until the port accepts connections.
    async fn start(&self, service: Service) -> Result<Forward, TransportError> {
        let local = free_port()?;
        let target = format!("svc/{}", service.name());
        let ports = format!("{local}:{}", service.port());
        let mut child = self
            .kubectl
            .command(&["port-forward", &target, &ports])?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TransportError::Local {
                what: "starting kubectl port-forward",
                source,
            })?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr).await;
                }
                return Err(TransportError::Kubectl(self.kubectl.explain(
                    "port-forward",
                    "service",
                    service.name(),
                    &stderr,
                )));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", local))
                .await
                .is_ok()
            {
                return Ok(Forward {
                    child,
                    base: format!("http://127.0.0.1:{local}"),
                });
            }
            if tokio::time::Instant::now() > deadline {
                stop(&mut child).await;
                return Err(TransportError::Kubectl(format!(
                    "kubectl port-forward to svc/{} did not open local port {local} within {}s",
                    service.name(),
                    READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> Result<u16, TransportError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| TransportError::Local {
            what: "no free local port",
            source,
        })
}

async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[async_trait]
impl Transport for PortForwardTransport {
    async fn request(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, TransportError> {
        let base = {
            let mut forwards = self.forwards.lock().await;
            match forwards.entry(service) {
                Entry::Occupied(e) => e.get().base.clone(),
                Entry::Vacant(e) => e.insert(self.start(service).await?).base.clone(),
            }
        };
        send(
            &self.client,
            service,
            &base,
            self.token.as_deref(),
            method,
            path,
            body,
        )
        .await
    }

    async fn close(&self) {
        for (_, mut fw) in self.forwards.lock().await.drain() {
            stop(&mut fw.child).await;
        }
    }
}
