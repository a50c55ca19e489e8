//! The real binary: SIGTERM while a slow reply is in flight → the reply is still sent, brain.db is
//! saved to STATE_DIR, exit 0; the next start restores it and the counter goes on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::stub::free_port;

fn start(port: u16, data: &Path, state: &Path, delay_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tenant-agent"))
        .env("TENANT_ID", "bob")
        .env("TELEGRAM_BOT_TOKEN", "123:NEVER-LOGGED")
        .env("AGENT_TOKEN", "agent-credential")
        .env("AGENT_HOST", "127.0.0.1")
        .env("AGENT_PORT", port.to_string())
        .env("DATA_DIR", data)
        .env("STATE_DIR", state)
        .env("AGENT_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A raw HTTP/1.1 request; returns the status code and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer agent-credential\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Posts `message` to the agent's webhook; the answer's body.
fn ask(port: u16, message: &str) -> String {
    let body = serde_json::json!({ "message": message }).to_string();
    http(port, "POST", "/webhook", &body).unwrap().1
}

fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/health", "").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "agent did not become healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_the_reply_in_flight_then_saves() {
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = start(port, data.path(), state.path(), 1500);
    wait_healthy(port);
    assert_eq!(ask(port, "one"), r#"{"response":"echo: one (#1)"}"#);

    let in_flight =
        std::thread::spawn(move || http(port, "POST", "/webhook", r#"{"message":"two"}"#));
    // The reply takes 1.5 s; the signal arrives while it is being produced.
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let reply = in_flight
        .join()
        .unwrap()
        .expect("the reply in flight is sent");
    assert_eq!(reply, (200, r#"{"response":"echo: two (#2)"}"#.to_owned()));
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    agent
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        !log.contains("NEVER-LOGGED"),
        "the bot token is never logged"
    );

    let mut names: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["brain.db.0000000001", "brain.db.0000000001.sha256"],
        "one generation and its marker, no temp file left behind"
    );

    // A new node: empty local disk, memory restored from the state directory.
    let fresh = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agent = start(port, fresh.path(), state.path(), 0);
    wait_healthy(port);
    assert_eq!(ask(port, "three"), r#"{"response":"echo: three (#3)"}"#);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGINT) };
    assert!(agent.wait().unwrap().success());
}
