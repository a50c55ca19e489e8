//! A warm launcher (`AGENT_WARM=1`) assigned over `POST /assign`, with a stand-in ZeroClaw and a
//! stand-in for presigned S3 URLs (`fake_zeroclaw.py`): only the pool credential, only once, the
//! assignment answered once ZeroClaw serves the tenant's credential, memory restored from and saved
//! to the grants, and nothing saved by a pod that served nothing.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::stub::free_port;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::memories;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POOL: &str = "pool-credential-0123456789";
const TOKEN: &str = "alice-agent-credential-0123";
const DEADLINE: Duration = Duration::from_secs(30);

fn fake() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_zeroclaw.py")
}

/// A child in its own process group, killed with its children (the stand-in ZeroClaw) on drop.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store's root, a saved generation 1 (`["remembered"]`) with its marker, and the store.
fn store(root: &Path) -> (Kill, u16) {
    let brain = root.join("brain.db.0000000001");
    let db = rusqlite::Connection::open(&brain).unwrap();
    db.execute_batch(
        "CREATE TABLE memories (content TEXT NOT NULL);
         INSERT INTO memories (content) VALUES ('remembered');",
    )
    .unwrap();
    drop(db);
    let digest = hex::encode(Sha256::digest(std::fs::read(&brain).unwrap()));
    std::fs::write(root.join("brain.db.0000000001.sha256"), digest).unwrap();
    let port = free_port();
    let child = Command::new(fake())
        .args(["store", root.to_str().unwrap(), &port.to_string()])
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the store did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Kill(child), port)
}

struct Launcher {
    child: Kill,
    port: u16,
    data: tempfile::TempDir,
}

fn launcher() -> Launcher {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_zeroclaw-launcher"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TENANT_ID", "warm-pool")
        .env("AGENT_WARM", "1")
        .env("ASSIGN_TOKEN", POOL)
        .env("AGENT_HOST", "127.0.0.1")
        .env("AGENT_PORT", port.to_string())
        .env("DATA_DIR", data.path())
        .env("STATE_DIR", data.path().join("no-state-volume"))
        .env("ZEROCLAW_BIN", fake())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    Launcher {
        child: Kill(child),
        port,
        data,
    }
}

impl Launcher {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn warm(&self) {
        let http = reqwest::Client::new();
        until("the warm /health", async || {
            match http.get(self.url("/health")).send().await {
                Ok(r) => r.json::<Value>().await.unwrap()["warm"] == true,
                Err(_) => false,
            }
        })
        .await;
    }

    fn sigterm_and_wait(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "launcher did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assignment(store: u16) -> Value {
    let url = |name: &str| format!("http://127.0.0.1:{store}/{name}");
    json!({
        "tenant_id": "alice",
        "agent_token": TOKEN,
        "config": {"tenant_id": "alice", "provider": "llamacpp", "model": "alice-model",
                   "temperature": 0.2, "files": {"SOUL.md": "calm"}},
        "state": {
            "restore": [{"generation": 1, "data_url": url("brain.db.0000000001"),
                         "marker_url": url("brain.db.0000000001.sha256")}],
            "save": {"generation": 2, "data_url": url("brain.db.0000000002"),
                     "marker_url": url("brain.db.0000000002.sha256")},
            "delete": [url("brain.db.0000000001.sha256"), url("brain.db.0000000001")],
        },
    })
}

#[tokio::test]
async fn a_warm_launcher_takes_one_assignment_restores_serves_and_saves_through_the_grants() {
    let root = tempfile::tempdir().unwrap();
    let (_store, store_port) = store(root.path());
    let agent = launcher();
    agent.warm().await;
    let http = reqwest::Client::new();
    let body = assignment(store_port);

    // Before the assignment: nobody is served, and only the pool credential opens /assign.
    for path in ["/api/health"] {
        let r = http
            .get(agent.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    for auth in [None, Some(TOKEN), Some("wrong")] {
        let mut req = http.post(agent.url("/assign")).json(&body);
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        assert_eq!(req.send().await.unwrap().status(), 401, "{auth:?}");
    }
    let mut bad = body.clone();
    bad["config"]["tenant_id"] = json!("bob");
    let r = http
        .post(agent.url("/assign"))
        .bearer_auth(POOL)
        .json(&bad)
        .send()
        .await;
    assert_eq!(
        r.unwrap().status(),
        400,
        "a config for another tenant is refused"
    );

    // A second assignment already on its way when the first is admitted gets 409.
    let second = serde_json::to_vec(&body).unwrap();
    let mut racer = tokio::net::TcpStream::connect(("127.0.0.1", agent.port))
        .await
        .unwrap();
    let head = format!(
        "POST /assign HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {POOL}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        second.len()
    );
    racer.write_all(head.as_bytes()).await.unwrap();
    racer.write_all(&second[..10]).await.unwrap();

    let r = http
        .post(agent.url("/assign"))
        .bearer_auth(POOL)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"tenant_id": "alice", "restored_generation": 1})
    );

    racer.write_all(&second[10..]).await.unwrap();
    let mut reply = String::new();
    racer.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 409"), "{reply}");

    // Answered only once ZeroClaw serves: the identity probe right after it passes, with the
    // tenant's credential only, and ZeroClaw runs the assigned configuration and memory.
    let r = http
        .get(agent.url("/api/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["model"], "alice-model");
    let r = http
        .get(agent.url("/api/health"))
        .bearer_auth(POOL)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the pool credential opens nothing of the tenant's"
    );
    let zc = agent.data.path().join("zeroclaw");
    assert_eq!(
        std::fs::read_to_string(zc.join("workspace/SOUL.md"))
            .unwrap()
            .trim(),
        "calm"
    );
    let config = std::fs::read_to_string(zc.join("config.toml")).unwrap();
    assert!(
        !config.contains(TOKEN),
        "the credential itself is never written"
    );
    let r = http
        .post(agent.url("/webhook"))
        .bearer_auth(TOKEN)
        .json(&json!({"message": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["response"],
        "remembered | new",
        "the memory restored through the grant"
    );

    let status = agent.sigterm_and_wait();
    assert!(status.success(), "{status}");
    let saved = root.path().join("brain.db.0000000002");
    assert_eq!(memories(&saved), ["remembered", "new"]);
    let marker = std::fs::read_to_string(root.path().join("brain.db.0000000002.sha256")).unwrap();
    assert_eq!(
        marker,
        hex::encode(Sha256::digest(std::fs::read(&saved).unwrap()))
    );
    assert!(
        !root.path().join("brain.db.0000000001").exists(),
        "what the save replaced is deleted"
    );
}

/// A pod assigned but never used (its claim interrupted, swept later) must not write over the
/// save of the tenant's next pod: it saves nothing.
#[tokio::test]
async fn an_assigned_launcher_that_served_nothing_saves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (_store, store_port) = store(root.path());
    let agent = launcher();
    agent.warm().await;
    let r = reqwest::Client::new()
        .post(agent.url("/assign"))
        .bearer_auth(POOL)
        .json(&assignment(store_port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = agent.sigterm_and_wait();
    assert!(status.success(), "{status}");
    assert!(!root.path().join("brain.db.0000000002").exists());
    assert!(root.path().join("brain.db.0000000001").exists());
}

/// A restore that fails answers the assignment 500 (the orchestrator deletes the pod and
/// cold-starts) and the launcher exits with an error; ZeroClaw never starts.
#[tokio::test]
async fn a_failed_restore_fails_the_assignment() {
    let agent = launcher();
    agent.warm().await;
    let dead = free_port();
    let r = reqwest::Client::new()
        .post(agent.url("/assign"))
        .bearer_auth(POOL)
        .json(&assignment(dead))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let mut child = agent.child;
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "launcher did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(1));
    drop(agent.data);
}
