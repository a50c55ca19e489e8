//! `<service> call METHOD PATH [BODY]`: a request to the service on this machine, for `kubectl exec`
//! (images need no curl or wget). `ztm --transport exec` relies on this exact behaviour:
//! the response body goes to stdout unchanged; exit 0 on 2xx; otherwise exit 1 with one stderr line
//! `call: HTTP <code> <reason>` (or `call: <METHOD> <url>: <error>` when there is no response);
//! exit 2 on a usage error. `BODY` `-` reads stdin. `PORT` (default 8080, 9090 for the router) and
//! `API_TOKEN` (sent as a Bearer token) come from the service's own environment.

use std::io::{Read, Write};

const USAGE: &str = "usage: <service> call METHOD PATH [BODY|-]";

#[derive(Debug, PartialEq, Eq)]
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<Body>,
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    Stdin,
    Text(String),
}

/// If the process was started as `<bin> call ...`, runs the call and returns the exit code.
pub fn from_args() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("call") {
        return None;
    }
    Some(run(&args))
}

fn run(args: &[String]) -> i32 {
    let call = match parse(&args[2..]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("call: {e}\n{USAGE}");
            return 2;
        }
    };
    let port = match port(args.first().map(String::as_str).unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("call: {e}");
            return 2;
        }
    };
    let body = match call.body {
        None => None,
        Some(Body::Text(t)) => Some(t.into_bytes()),
        Some(Body::Stdin) => {
            let mut buf = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                eprintln!("call: reading the body from stdin: {e}");
                return 1;
            }
            Some(buf)
        }
    };
    let url = format!("http://127.0.0.1:{port}{}", call.path);
    let token = crate::config::var("API_TOKEN");
    let method = call.method.clone();
    let target = url.clone();
    // A thread of its own, so this works whether or not the caller's `main` already runs a runtime.
    let answer = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?
            .block_on(send(method, &target, token.as_deref(), body))
    })
    .join()
    .unwrap_or_else(|_| Err("the request thread panicked".into()));
    match answer {
        Ok((status, body)) => {
            let mut out = std::io::stdout().lock();
            // A closed stdout cannot be reported anywhere more useful than the exit code.
            let written = out.write_all(&body).and_then(|()| out.flush()).is_ok();
            if !status.is_success() {
                eprintln!(
                    "call: HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                );
                return 1;
            }
            if written {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("call: {} {url}: {e}", call.method);
            1
        }
    }
}

fn parse(args: &[String]) -> Result<Call, String> {
    let (method, path, body) = match args {
        [m, p] => (m, p, None),
        [m, p, b] => (m, p, Some(b)),
        _ => return Err("expected METHOD PATH [BODY]".into()),
    };
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("bad method {method:?}"))?;
    if !path.starts_with('/') {
        return Err(format!("PATH must start with '/', got {path:?}"));
    }
    let body = body.map(|b| {
        if b == "-" {
            Body::Stdin
        } else {
            Body::Text(b.clone())
        }
    });
    Ok(Call {
        method,
        path: path.clone(),
        body,
    })
}

/// `PORT`, else the service's default port, told apart by the binary's name.
fn port(argv0: &str) -> Result<u16, String> {
    let default = if argv0.contains("router") { 9090 } else { 8080 };
    crate::config::parse("PORT", default).map_err(|e| e.to_string())
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(reqwest::StatusCode, bytes::Bytes), String> {
    let client = reqwest::Client::new();
    let mut req = client.request(method.clone(), url);
    if body.is_none() {
        req = crate::http_client::without_body(&method, req);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| crate::error::error_chain(&e))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| crate::error::error_chain(&e))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_method_path_and_body() {
        let c = parse(&args(&["post", "/tenants", r#"{"a":1}"#])).unwrap();
        assert_eq!(c.method, reqwest::Method::POST);
        assert_eq!(c.path, "/tenants");
        assert_eq!(c.body, Some(Body::Text(r#"{"a":1}"#.into())));
        assert_eq!(
            parse(&args(&["GET", "/tenants", "-"])).unwrap().body,
            Some(Body::Stdin)
        );
        assert!(parse(&args(&["GET"])).is_err());
        assert!(parse(&args(&["GET", "tenants"])).is_err());
        assert!(parse(&args(&["GET", "/a", "b", "c"])).is_err());
        assert!(parse(&args(&["G T", "/a"])).is_err());
    }

    #[test]
    fn default_port_follows_the_binary_name() {
        if std::env::var_os("PORT").is_none() {
            assert_eq!(port("/usr/local/bin/router"), Ok(9090));
            assert_eq!(port("orchestrator"), Ok(8080));
        }
    }

    #[tokio::test]
    async fn sends_token_and_body_and_returns_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("{\"x\":1}") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            let reply = "HTTP/1.1 404 Not Found\r\ncontent-length: 19\r\nconnection: close\r\n\r\n{\"error\":\"missing\"}";
            sock.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        let (status, body) = send(
            reqwest::Method::PATCH,
            &format!("http://{addr}/tenants/bob"),
            Some("tok"),
            Some(b"{\"x\":1}".to_vec()),
        )
        .await
        .unwrap();
        let request = server.await.unwrap().to_ascii_lowercase();
        assert_eq!(status.as_u16(), 404);
        assert_eq!(&body[..], b"{\"error\":\"missing\"}");
        assert!(
            request.starts_with("patch /tenants/bob http/1.1"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer tok"), "{request}");
    }

    /// Proxies forward a bodiless POST as HTTP/1.0 only with a length (issue 15, point 9).
    #[tokio::test]
    async fn a_bodiless_post_says_content_length_0_on_the_wire() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            let reply = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
            sock.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        let (status, _) = send(
            reqwest::Method::POST,
            &format!("http://{addr}/wake/bob"),
            None,
            None,
        )
        .await
        .unwrap();
        let request = server.await.unwrap().to_ascii_lowercase();
        assert_eq!(status.as_u16(), 204);
        assert!(request.contains("\r\ncontent-length: 0\r\n"), "{request}");
    }

    #[tokio::test]
    async fn unreachable_service_names_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = send(
            reqwest::Method::GET,
            &format!("http://{addr}/healthz"),
            None,
            None,
        )
        .await
        .unwrap_err();
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }
}
