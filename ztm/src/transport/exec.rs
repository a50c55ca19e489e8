//! `kubectl exec deploy/<service> -- <service> call METHOD PATH [-]`: the service binary's own client
//! inside the pod (see `common::call`), the body passed on stdin so it never shows in a process list.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{Kubectl, Method, Response, Service, Transport, TransportError};

pub struct ExecTransport {
    kubectl: Kubectl,
}

impl ExecTransport {
    pub fn new(kubectl: Kubectl) -> Self {
        ExecTransport { kubectl }
    }
}

#[async_trait]
impl Transport for ExecTransport {
    async fn request(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, TransportError> {
        let target = format!("deploy/{}", service.name());
        let mut args = vec!["exec"];
        if body.is_some() {
            args.push("-i");
        }
        args.extend([
            target.as_str(),
            "--",
            service.name(),
            "call",
            method.as_str(),
            path,
        ]);
        if body.is_some() {
            args.push("-");
        }
        let mut child = self
            .kubectl
            .command(&args)?
            .stdin(if body.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TransportError::Local {
                what: "starting kubectl exec",
                source,
            })?;
        if let (Some(b), Some(mut stdin)) = (body, child.stdin.take()) {
            // A write error shows up as the command's own failure below.
            let _ = stdin.write_all(b.as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| TransportError::Local {
                what: "running kubectl exec",
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return Ok(Response {
                status: 200,
                body: stdout,
            });
        }
        parse_failure(&stderr, stdout).ok_or_else(|| {
            if let Some(reason) = stderr.lines().find_map(|l| l.strip_prefix("call: ")) {
                TransportError::Unreachable {
                    service,
                    url: format!("{target} (inside the pod)"),
                    reason: reason.to_owned(),
                    source: None,
                }
            } else {
                TransportError::Kubectl(self.kubectl.explain(
                    "exec",
                    "deployment",
                    service.name(),
                    &stderr,
                ))
            }
        })
    }
}

/// `call: HTTP <code> ...` on stderr means the service answered with that status.
fn parse_failure(stderr: &str, body: String) -> Option<Response> {
    let status = stderr.lines().find_map(|l| {
        l.trim()
            .strip_prefix("call: HTTP ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|code| code.parse::<u16>().ok())
    })?;
    Some(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_of_a_failed_call() {
        let r = parse_failure("call: HTTP 404 Not Found\n", "{\"error\":\"x\"}".into()).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, "{\"error\":\"x\"}");
        assert!(parse_failure("error: unable to upgrade connection\n", String::new()).is_none());
    }
}
