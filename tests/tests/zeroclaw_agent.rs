//! Real ZeroClaw (the pinned release, found through `ZEROCLAW_BIN`) run by `zeroclaw-launcher`
//! against the stand-in model server: answers, persona in the system prompt, memory across sleep
//! and wake, and the agent credential. Opt-in: `make test-zeroclaw` installs ZeroClaw and runs
//! these; `make test` skips them.
//!
//! The launcher is driven directly (the env and `tenant.json` the runtime gives it), so these
//! tests do not depend on the orchestrator's credential and config API.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::state_file;
use platform_tests::model::{messages_with_role, reply_to, StandInModel};
use platform_tests::platform::{bin_path, free_port};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// ZeroClaw reaches `/health` about 60 ms after start; a debug build on a busy machine is slower.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The pod's grace period: ZeroClaw's stop and the save must both fit.
const GRACE: Duration = Duration::from_secs(30);

fn zeroclaw_bin() -> PathBuf {
    let bin = std::env::var_os("ZEROCLAW_BIN")
        .map(PathBuf::from)
        .expect("ZEROCLAW_BIN is not set: run `make test-zeroclaw`, which installs zeroclaw");
    assert!(
        bin.is_file(),
        "ZEROCLAW_BIN={} is not a file",
        bin.display()
    );
    bin
}

/// One tenant's agent: the launcher with real ZeroClaw under it.
struct Agent {
    tenant: String,
    token: String,
    port: u16,
    data: PathBuf,
    state: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// An agent for `tenant` in `root` whose `tenant.json` is `config` (or none).
    fn new(root: &Path, tenant: &str, config: Option<Value>) -> Agent {
        let dir = root.join(tenant);
        let agent = Agent {
            tenant: tenant.to_owned(),
            token: format!("agent-token-{tenant}-{}", uuid::Uuid::new_v4().simple()),
            port: 0,
            data: dir.join("data"),
            state: dir.join("state"),
            config: dir.join("config"),
            log: dir.join("launcher.log"),
            child: None,
        };
        fs::create_dir_all(&agent.config).unwrap();
        if let Some(config) = config {
            fs::write(
                agent.config.join("tenant.json"),
                serde_json::to_vec(&config).unwrap(),
            )
            .unwrap();
        }
        agent
    }

    /// The launcher on this agent's port, directories and log, with the real ZeroClaw.
    fn launcher(&self) -> Command {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(bin_path("zeroclaw-launcher"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.data.join("home"))
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", self.port.to_string())
            .env("DATA_DIR", &self.data)
            .env("STATE_DIR", &self.state)
            .env("ZEROCLAW_BIN", zeroclaw_bin())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts the launcher on a fresh port and waits for ZeroClaw's `/health`.
    async fn start(&mut self, model: &StandInModel) {
        assert!(self.child.is_none(), "already running");
        self.port = free_port();
        let child = self
            .launcher()
            .env("TENANT_ID", &self.tenant)
            .env("AGENT_TOKEN", &self.token)
            .env("AGENT_CONFIG_DIR", &self.config)
            .env("LLM_PROVIDER", "llamacpp")
            .env("LLM_API_URL", model.base_url())
            .env("LLM_MODEL", "platform-default-model")
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = reqwest::Client::new();
        let url = self.url("/health");
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("launcher exited ({status}) before /health:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no /health after {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{}: /health after {:?}", self.tenant, started.elapsed());
    }

    /// SIGTERM (what the kubelet and the local runtime send) and the launcher's exit.
    async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "launcher still running {GRACE:?} after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST /webhook` as the router sends it, with `token` as the bearer (`None`: no header).
    async fn webhook(&self, token: Option<&str>, message: &str) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new()
            .post(self.url("/webhook"))
            .header("X-Tenant-Id", &self.tenant)
            .json(&json!({ "message": message }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new().get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tenant_json(tenant: &str, model: &StandInModel, soul: &str) -> Value {
    json!({
        "tenant_id": tenant,
        "provider": "llamacpp",
        "api_url": model.base_url(),
        "model": format!("{tenant}-model"),
        "temperature": 0.25,
        "files": {
            "SOUL.md": soul,
            "IDENTITY.md": format!("Your name is {tenant}'s assistant."),
        },
    })
}

#[tokio::test]
#[ignore = "needs the real zeroclaw binary: make test-zeroclaw"]
async fn zeroclaw_answers_with_the_tenant_persona_in_the_system_prompt() {
    let root = tempfile::tempdir().unwrap();
    let model = StandInModel::start().await;
    let soul = "You are Captain Quillfeather-4417, a courteous pirate.";
    let mut agent = Agent::new(root.path(), "bob", Some(tenant_json("bob", &model, soul)));
    agent.start(&model).await;

    let token = agent.token.clone();
    let (status, body) = agent.webhook(Some(&token), "hello there").await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", agent.log());
    assert_eq!(body["response"], reply_to("hello there"), "{body}");

    let requests = model.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request["model"], "bob-model");
    assert_eq!(request["temperature"], 0.25);
    let system = messages_with_role(request, "system").join("\n");
    assert!(
        system.contains(soul),
        "persona missing from the system prompt:\n{system}"
    );
    assert!(system.contains("Your name is bob's assistant."), "{system}");
    assert_eq!(messages_with_role(request, "user"), ["hello there"]);

    let status = agent.stop().await;
    assert!(status.success(), "{status}\n{}", agent.log());
    let log = agent.log();
    assert!(
        !log.contains(&token),
        "the agent credential was logged:\n{log}"
    );
}

#[tokio::test]
#[ignore = "needs the real zeroclaw binary: make test-zeroclaw"]
async fn a_request_with_another_tenants_credential_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let model = StandInModel::start().await;
    let mut alice = Agent::new(root.path(), "alice", None);
    let mut bob = Agent::new(root.path(), "bob", None);
    alice.start(&model).await;
    bob.start(&model).await;
    let (a, b) = (alice.token.clone(), bob.token.clone());

    // Bob's credential (the router's, for a reused pod IP) reaches Alice's agent: refused.
    let (status, _) = alice.webhook(Some(&b), "for bob").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = alice.webhook(None, "no credential").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = alice.get(Some(&b), "/api/health").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        model.requests().is_empty(),
        "a refused message reached the model"
    );

    // The identity probe and a message with the right credential.
    let (status, _) = alice.get(Some(&a), "/api/health").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = bob.webhook(Some(&b), "for bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"], reply_to("for bob"));
    // Platform defaults (no tenant.json): the orchestrator's LLM_MODEL.
    assert_eq!(model.requests()[0]["model"], "platform-default-model");

    assert!(alice.stop().await.success(), "{}", alice.log());
    assert!(bob.stop().await.success(), "{}", bob.log());
}

#[tokio::test]
#[ignore = "needs the real zeroclaw binary: make test-zeroclaw"]
async fn memory_survives_sleep_and_wake_on_a_fresh_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let model = StandInModel::start().await;
    let mut agent = Agent::new(root.path(), "carol", None);
    agent.start(&model).await;
    let token = agent.token.clone();
    let (status, body) = agent
        .webhook(Some(&token), "my locker code is 4711-teal")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Sleep: ZeroClaw dies at once on SIGTERM, its last writes still in brain.db-wal.
    let stopped = Instant::now();
    let status = agent.stop().await;
    assert!(status.success(), "{status}\n{}", agent.log());
    eprintln!("stop and save took {:?}", stopped.elapsed());
    let saved = state_file::newest(&agent.state, "brain.db")
        .unwrap()
        .expect("a saved generation");
    let conn = rusqlite::Connection::open(&saved.path).unwrap();
    let remembered: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM memories WHERE content LIKE '%4711-teal%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(remembered, 1, "the message is not in the saved brain.db");
    drop(conn);

    // Wake on another node: an empty data directory, the same state directory.
    let old_data = agent.data.clone();
    agent.data = root.path().join("carol/data-after-wake");
    agent.start(&model).await;
    let (status, body) = agent.get(Some(&token), "/api/memory?query=4711").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e.to_string().contains("my locker code is 4711-teal")),
        "ZeroClaw does not recall the message after wake: {body}"
    );
    assert!(agent.stop().await.success(), "{}", agent.log());
    assert!(old_data.exists());
}

/// A warm launcher (`AGENT_WARM=1`, no tenant, no credential of the tenant's) waits for its
/// assignment; the answer to `POST /assign` comes once real ZeroClaw serves the tenant's
/// credential on the same port, so the orchestrator's single identity probe after it passes.
#[tokio::test]
#[ignore = "needs the real zeroclaw binary: make test-zeroclaw"]
async fn a_warm_launcher_assigned_a_tenant_answers_with_its_credential() {
    let root = tempfile::tempdir().unwrap();
    let model = StandInModel::start().await;
    let mut agent = Agent::new(root.path(), "carol", None);
    agent.port = free_port();
    let pool = format!("pool-{}", uuid::Uuid::new_v4().simple());
    let child = agent
        .launcher()
        .env("TENANT_ID", "warm-pool")
        .env("AGENT_WARM", "1")
        .env("ASSIGN_TOKEN", &pool)
        .spawn()
        .unwrap();
    agent.child = Some(child);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(r) = http.get(agent.url("/health")).send().await {
            if r.json::<Value>().await.unwrap_or_default()["warm"] == true {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no warm /health:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = agent.token.clone();
    let soul = "You are Navigator Brightwater-9021.";
    let assignment = json!({
        "tenant_id": "carol",
        "agent_token": token,
        "config": tenant_json("carol", &model, soul),
        "state": {},
    });
    let started = Instant::now();
    let r = http
        .post(agent.url("/assign"))
        .bearer_auth(&pool)
        .json(&assignment)
        .timeout(START_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", agent.log());
    eprintln!("carol: assigned and serving after {:?}", started.elapsed());
    // Right after the answer, as the orchestrator probes: ZeroClaw answers the tenant's credential.
    let (status, _) = agent.get(Some(&token), "/api/health").await;
    assert_eq!(status, StatusCode::OK, "{}", agent.log());
    let (status, _) = agent.get(Some(&pool), "/api/health").await;
    assert_ne!(status, StatusCode::OK, "the pool credential opens nothing");
    let (status, body) = agent.webhook(Some(&token), "hello there").await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", agent.log());
    assert_eq!(body["response"], reply_to("hello there"), "{body}");
    let system = messages_with_role(&model.requests()[0], "system").join("\n");
    assert!(system.contains(soul), "{system}");
    let log = agent.log();
    assert!(
        !log.contains(&token) && !log.contains(&pool),
        "a credential was logged:\n{log}"
    );
    // SIGTERM, so ZeroClaw is stopped with the launcher (this assignment has no save grant: the
    // launcher reports the refused save and exits 1).
    agent.stop().await;
}
