//! Warm-pool mode (`AGENT_WARM=1`): before ZeroClaw starts, the launcher serves the shared
//! assignment protocol (`common::assignment`) on the agent port: `GET /health` (warm) and
//! `POST /assign`. The connection of the admitted assignment is kept open while the listener is
//! closed (ZeroClaw needs the port), the tenant is prepared and ZeroClaw started; it is answered
//! only once ZeroClaw accepts the tenant's credential, so the orchestrator's identity probe that
//! follows finds ZeroClaw serving.

use std::time::Duration;

use common::assignment::{AssignError, AssignGate, AssignResponse, Assignment};
use common::wire::{AgentHealth, ErrorBody, AGENT_HEALTH_PATH, AGENT_PAIRED_HEALTH_PATH};
use common::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::supervise::Stops;

/// Largest request head and body accepted (a `tenant.json` with persona files fits easily).
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An admitted assignment and the connection that waits for its answer.
pub struct Admitted {
    pub assignment: Assignment,
    pub conn: TcpStream,
    /// Requests still being read when it was admitted: a second assignment among them gets its
    /// 409. Dropped (aborted) with the launcher's warm phase.
    pub others: JoinSet<()>,
}

/// Serves `listener` until an assignment is admitted (`Some`) or a stop signal arrives (`None`).
/// The listener is closed on return (ZeroClaw binds the port next).
pub async fn wait_for_assignment(
    listener: TcpListener,
    pool_token: Secret,
    stops: &mut Stops,
) -> Option<Admitted> {
    let gate = std::sync::Arc::new(AssignGate::new(pool_token));
    let (tx, mut rx) = mpsc::channel(1);
    let mut conns = JoinSet::new();
    let admitted: Option<(Assignment, TcpStream)> = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    let (gate, tx) = (gate.clone(), tx.clone());
                    conns.spawn(async move {
                        if let Some(admitted) = serve(conn, &gate).await {
                            let _ = tx.send(admitted).await;
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accepting a connection failed"),
            },
            Some(admitted) = rx.recv() => break Some(admitted),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            signal = stops.recv() => {
                tracing::info!(signal, "warm launcher stopped unassigned");
                break None;
            }
        }
    };
    drop(listener);
    admitted.map(|(assignment, conn)| Admitted {
        assignment,
        conn,
        others: conns,
    })
}

/// One request per connection; `Some` when it was the admitted assignment.
async fn serve(mut conn: TcpStream, gate: &AssignGate) -> Option<(Assignment, TcpStream)> {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(status)) => {
            respond(&mut conn, status, &ErrorBody::new("malformed request")).await;
            return None;
        }
        Err(_) => return None,
    };
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", AGENT_HEALTH_PATH) => {
            let health = AgentHealth {
                status: "ok".into(),
                warm: Some(true),
                tenant_id: None,
                paired: None,
            };
            respond(&mut conn, 200, &health).await;
            None
        }
        ("POST", common::assignment::ASSIGN_PATH) => {
            match gate.admit(request.authorization.as_deref(), &request.body) {
                Ok(assignment) => Some((assignment, conn)),
                Err(e) => {
                    respond(&mut conn, e.status(), &ErrorBody::new(e.to_string())).await;
                    None
                }
            }
        }
        // Nobody is served before the assignment: the agent routes answer 401, as on an agent
        // that does not know the caller's credential.
        (_, AGENT_PAIRED_HEALTH_PATH | common::wire::AGENT_WEBHOOK_PATH) => {
            let body = ErrorBody::new("missing or invalid agent credential");
            respond(&mut conn, 401, &body).await;
            None
        }
        _ => {
            respond(&mut conn, 404, &ErrorBody::new("not found")).await;
            None
        }
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head parsed by `httparse`, body by `Content-Length`); the error
/// is the status to answer.
async fn read_request(conn: &mut TcpStream) -> Result<Request, u16> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                let length: usize = match header("content-length") {
                    None => 0,
                    Some(v) => v.trim().parse().map_err(|_| 400u16)?,
                };
                if length > MAX_BODY {
                    return Err(413);
                }
                let request = Request {
                    method: req.method.unwrap_or_default().to_owned(),
                    path: req
                        .path
                        .unwrap_or_default()
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    authorization: header("authorization").map(str::to_owned),
                    body: Vec::new(),
                };
                let mut body = buf.split_off(head);
                while body.len() < length {
                    let n = conn.read(&mut chunk).await.map_err(|_| 400u16)?;
                    if n == 0 {
                        return Err(400);
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok(Request { body, ..request });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

/// Writes a JSON response and closes the connection.
pub async fn respond(conn: &mut TcpStream, status: u16, body: &impl serde::Serialize) {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(&body).await;
    let _ = conn.shutdown().await;
}

/// Answers the admitted assignment: its [`AssignResponse`], or the failure (the pod is spent).
pub async fn answer(conn: &mut TcpStream, result: Result<AssignResponse, AssignError>) {
    match result {
        Ok(response) => respond(conn, 200, &response).await,
        Err(e) => respond(conn, e.status(), &ErrorBody::new(e.to_string())).await,
    }
}

/// Polls ZeroClaw's `/api/health` with the tenant's credential until it answers 200.
pub async fn until_paired(http: &reqwest::Client, url: &str, token: &Secret) {
    loop {
        if let Ok(r) = http.get(url).bearer_auth(token.expose()).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
