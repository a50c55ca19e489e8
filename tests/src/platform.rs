//! Starts the real `orchestrator` and `router` binaries (embedded defaults, local runtime) against a
//! fake Telegram, each with its own temp `DATA_DIR`, free ports and a log file; everything they started,
//! agents included, is killed when the `Platform` is dropped.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::TenantId;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::telegram::FakeTelegram;

/// How long a service may take to answer `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a test wants different from the defaults.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `API_TOKEN` of both services; `None` leaves it unset.
    pub api_token: Option<String>,
    /// `WEBHOOK_SECRET` of both services; `None` leaves it unset.
    pub webhook_secret: Option<String>,
    /// Env of both services (after the defaults, so it overrides them).
    pub env: Vec<(String, String)>,
    pub orchestrator_env: Vec<(String, String)>,
    pub router_env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string();
        Opts {
            api_token: Some(format!("api-{run}")),
            webhook_secret: Some(format!("whsec-{run}")),
            env: Vec::new(),
            orchestrator_env: Vec::new(),
            router_env: Vec::new(),
        }
    }
}

impl Opts {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn orchestrator_env(mut self, key: &str, value: impl ToString) -> Self {
        self.orchestrator_env
            .push((key.to_owned(), value.to_string()));
        self
    }

    pub fn router_env(mut self, key: &str, value: impl ToString) -> Self {
        self.router_env.push((key.to_owned(), value.to_string()));
        self
    }
}

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    if dir.join("orchestrator").exists() {
        return dir;
    }
    if let Ok(target) = std::env::var("CARGO_TARGET_DIR") {
        let profile = PathBuf::from(target).join("debug");
        if profile.join("orchestrator").exists() {
            return profile;
        }
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    if workspace.join("orchestrator").exists() {
        return workspace;
    }
    dir
}

/// Path of one of the workspace's binaries; panics with the command to build it.
pub fn bin_path(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Telegram text-message update.
pub fn text_update(update_id: i64, chat_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": chrono::Utc::now().timestamp(),
            "chat": {"id": chat_id, "type": "private", "first_name": "Test"},
            "from": {"id": chat_id, "is_bot": false, "first_name": "Test"},
            "text": text,
        }
    })
}

/// A token shaped like Telegram's (`<digits>:<35 chars>`), unique so leaks are unambiguous.
pub fn bot_token() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}:AA{}",
        100_000_000 + rand::random::<u32>() % 899_999_999,
        &id[..30]
    )
}

/// One service process: restartable on the same port, data directory and log file.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
    http: reqwest::Client,
}

impl Service {
    /// A service `name` (also its binary) with its data dir and log under `root`; not started yet.
    pub fn new(name: &'static str, root: &Path, env: Vec<(String, String)>, port: u16) -> Service {
        let data_dir = root.join(name);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        Service {
            name,
            port,
            log_path: root.join(format!("{name}.log")),
            data_dir,
            bin: bin_path(name),
            env,
            child: None,
            starts: 0,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the process and waits until it answers `GET /readyz` with 200.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        writeln!(
            log,
            "=== test harness: start #{} of {} ===",
            self.starts, self.name
        )
        .unwrap();
        let err = log.try_clone().expect("log file");
        let mut cmd = Command::new(&self.bin);
        for var in [
            "REDIS_ADDR",
            "DYNAMODB_TABLE",
            "DYNAMODB_ENDPOINT",
            "S3_ENDPOINT",
            "STATE_STORE",
            "KUBERNETES_SERVICE_HOST",
            "AGENT_COMMAND",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        // If the test process dies without running Drop (a nextest timeout), the services die with it.
        // SAFETY: prctl(2) only, between fork and exec; no allocation.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name)),
        );
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let url = format!("{}/readyz", self.url());
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Ok(resp) = self.http.get(&url).send().await {
                if resp.status() == StatusCode::OK {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to clean up, like a crashed node or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit (graceful shutdown); panics if it takes longer than `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("service not running");
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                signal(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
                panic!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop, then start again on the same port and data.
    pub async fn restart(&mut self) {
        self.terminate(Duration::from_secs(40)).await;
        self.start().await;
    }

    /// Everything the process wrote so far, all starts included.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle` at least `count` times.
    pub async fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let what = format!("{count}× {needle:?} in the {} log", self.name);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= count {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is shared.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Orchestrator + router + fake Telegram, wired together.
pub use crate::ztm::ZtmRun;

pub struct Platform {
    pub telegram: FakeTelegram,
    pub orchestrator: Service,
    pub router: Service,
    pub api_token: Option<String>,
    pub webhook_secret: Option<String>,
    http: reqwest::Client,
    root: tempfile::TempDir,
}

impl Platform {
    pub async fn start() -> Platform {
        Platform::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> Platform {
        let telegram = FakeTelegram::start().await;
        let root = tempfile::Builder::new()
            .prefix("zt-e2e-")
            .tempdir()
            .expect("temp dir");
        let (orch_port, router_port) = (free_port(), free_port());
        let router_url = format!("http://127.0.0.1:{router_port}");
        let orch_url = format!("http://127.0.0.1:{orch_port}");

        let mut common_env = vec![
            ("TELEGRAM_API_URL".to_owned(), telegram.url().to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("LOG_FORMAT".to_owned(), "text".to_owned()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        if let Some(t) = &opts.api_token {
            common_env.push(("API_TOKEN".to_owned(), t.clone()));
        }
        if let Some(s) = &opts.webhook_secret {
            common_env.push(("WEBHOOK_SECRET".to_owned(), s.clone()));
        }
        let mut orch_env = common_env.clone();
        orch_env.extend(
            [
                ("PORT", orch_port.to_string()),
                (
                    "DATA_DIR",
                    root.path().join("orchestrator").display().to_string(),
                ),
                ("RUNTIME", "local".to_owned()),
                ("LOCAL_MODE", "true".to_owned()),
                ("ROUTER_PUBLIC_URL", router_url.clone()),
                ("IDLE_CHECK_INTERVAL_S", "1".to_owned()),
                ("RECONCILE_INTERVAL_S", "1".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        let mut router_env = common_env;
        router_env.extend(
            [
                ("PORT", router_port.to_string()),
                ("DATA_DIR", root.path().join("router").display().to_string()),
                ("ORCHESTRATOR_ADDR", orch_url),
                ("PUBLIC_BASE_URL", router_url),
                ("INBOX_SCAN_INTERVAL_MS", "200".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        orch_env.extend(opts.env.iter().cloned());
        orch_env.extend(opts.orchestrator_env.iter().cloned());
        router_env.extend(opts.env.iter().cloned());
        router_env.extend(opts.router_env.iter().cloned());

        let mut platform = Platform {
            telegram,
            orchestrator: Service::new("orchestrator", root.path(), orch_env, orch_port),
            router: Service::new("router", root.path(), router_env, router_port),
            api_token: opts.api_token,
            webhook_secret: opts.webhook_secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            root,
        };
        platform.orchestrator.start().await;
        platform.router.start().await;
        platform
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn orch_url(&self, path: &str) -> String {
        format!("{}{path}", self.orchestrator.url())
    }

    pub fn router_url(&self, path: &str) -> String {
        format!("{}{path}", self.router.url())
    }

    /// A request carrying the API token (when the platform has one).
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.api_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The body of an authenticated `GET url`, as text.
    pub async fn get_text(&self, url: &str) -> String {
        self.request(Method::GET, url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// `POST /tenants`; panics unless 201. Returns the TenantView.
    pub async fn create_tenant(&self, id: &str, token: &str, idle_timeout_s: Option<u64>) -> Value {
        let mut body = json!({"tenant_id": id, "bot_token": token});
        if let Some(t) = idle_timeout_s {
            body["idle_timeout_s"] = json!(t);
        }
        let resp = self
            .request(Method::POST, &self.orch_url("/tenants"))
            .json(&body)
            .send()
            .await
            .expect("POST /tenants");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "create {id}: {text}");
        serde_json::from_str(&text).expect("TenantView JSON")
    }

    /// `GET /tenants/{id}`: the view, or `None` on 404.
    pub async fn get_tenant(&self, id: &str) -> Option<Value> {
        let resp = self
            .request(Method::GET, &self.orch_url(&format!("/tenants/{id}")))
            .send()
            .await
            .expect("GET /tenants/{id}");
        match resp.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(resp.json().await.expect("TenantView JSON")),
            other => panic!(
                "GET /tenants/{id}: {other} {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }

    pub async fn tenant_status(&self, id: &str) -> String {
        let view = self.get_tenant(id).await.expect("tenant exists");
        view["status"].as_str().unwrap_or_default().to_owned()
    }

    /// `POST /tenants/{id}/sleep`; panics unless 204.
    pub async fn sleep_tenant(&self, id: &str) {
        let resp = self
            .request(
                Method::POST,
                &self.orch_url(&format!("/tenants/{id}/sleep")),
            )
            .send()
            .await
            .expect("POST sleep");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "sleep {id}");
    }

    /// The secret token Telegram would send for this tenant (empty when no `WEBHOOK_SECRET`).
    pub fn secret_for(&self, tenant: &str) -> String {
        match (&self.webhook_secret, TenantId::parse(tenant)) {
            (Some(s), Ok(id)) => common::webhook::secret_token(s, &id),
            _ => String::new(),
        }
    }

    /// Posts a raw body to `/tg/{tenant}` as Telegram does (secret header, JSON content type).
    pub async fn post_tg_raw(&self, tenant: &str, body: impl Into<reqwest::Body>) -> StatusCode {
        let mut req = self
            .http
            .post(self.router_url(&format!("/tg/{tenant}")))
            .header("Content-Type", "application/json")
            .body(body);
        if self.webhook_secret.is_some() {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", self.secret_for(tenant));
        }
        req.send().await.expect("POST /tg").status()
    }

    /// Posts an update and asserts the router acknowledged it.
    pub async fn post_update(&self, tenant: &str, update: &Value) {
        let status = self.post_tg_raw(tenant, update.to_string()).await;
        assert_eq!(status, StatusCode::OK, "POST /tg/{tenant} {update}");
    }

    pub async fn send_text(&self, tenant: &str, update_id: i64, chat_id: i64, text: &str) {
        self.post_update(tenant, &text_update(update_id, chat_id, text))
            .await;
    }

    /// Pids of live `tenant-agent` processes started for `tenant` by this platform (found in /proc by
    /// their `TENANT_ID` and a `DATA_DIR` under this platform's temp dir).
    pub fn agent_pids(&self, tenant: &str) -> Vec<i32> {
        agent_pids_under(self.root(), tenant)
    }

    /// The agent pid the orchestrator recorded in `agents/{id}/agent.pid` (`pid port`), if any.
    pub fn agent_pid_file(&self, tenant: &str) -> Option<(i32, u16)> {
        let path = self
            .orchestrator
            .data_dir
            .join("agents")
            .join(tenant)
            .join("agent.pid");
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.split_whitespace();
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }

    /// Waits until exactly `n` agent processes run for `tenant`.
    pub async fn wait_for_agents(&self, tenant: &str, n: usize, timeout: Duration) {
        wait_until(
            &format!("{n} agent process(es) for {tenant}"),
            timeout,
            || async { self.agent_pids(tenant).len() == n },
        )
        .await;
    }

    pub async fn wait_for_status(&self, tenant: &str, status: &str, timeout: Duration) {
        wait_until(
            &format!("tenant {tenant} status {status}"),
            timeout,
            || async { self.tenant_status(tenant).await == status },
        )
        .await;
    }

    /// What the local runtime kept of `tenant`'s agent output (`agents/{id}/agent.log`).
    pub fn agent_log(&self, tenant: &str) -> String {
        let path = self
            .orchestrator
            .data_dir
            .join("agents")
            .join(tenant)
            .join("agent.log");
        std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `ztm` over HTTP against this platform: its URLs and token in the env.
    pub fn ztm_cmd(&self) -> crate::ztm::Ztm {
        crate::ztm::Ztm::new()
            .orchestrator(&self.orchestrator.url())
            .router(&self.router.url())
            .token(self.api_token.as_deref().unwrap_or_default())
    }

    /// Runs `ztm` against this platform, within 30 s.
    pub async fn ztm(&self, args: &[&str]) -> ZtmRun {
        self.ztm_cmd().run(args).await
    }

    /// Both services' logs.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.orchestrator.log(), self.router.log())
    }

    /// Every file under the temp dir whose name ends in `.log` (service and agent logs) that contains `secret`.
    pub fn logs_containing(&self, secret: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "log")
                    && std::fs::read(&path)
                        .map(|b| String::from_utf8_lossy(&b).contains(secret))
                        .unwrap_or(false)
                {
                    found.push(path);
                }
            }
        }
        found
    }

    /// Kills every process this platform started: services first, then agents (also orphaned ones).
    pub fn kill_all(&mut self) {
        self.router.kill();
        self.orchestrator.kill();
        let own = std::process::id() as i32;
        for p in processes_under(self.root()) {
            if p.pid != own {
                signal(p.pid, libc::SIGKILL);
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.orchestrator.data_dir.join("agents")) {
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path().join("agent.pid")) {
                    if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                        if is_agent_process(pid) {
                            signal(pid, libc::SIGKILL);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            eprintln!(
                "--- orchestrator log ---\n{}\n--- router log ---\n{}",
                tail(&self.orchestrator.log(), 150),
                tail(&self.router.log(), 150)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A live process seen in /proc.
#[derive(Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub is_agent: bool,
    pub environ: Vec<String>,
}

fn read_nul_separated(path: PathBuf) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn is_agent_process(pid: i32) -> bool {
    let cmdline = read_nul_separated(PathBuf::from(format!("/proc/{pid}/cmdline")));
    !is_zombie(pid) && cmdline.iter().any(|a| a.contains("tenant-agent"))
}

/// Live `tenant-agent` processes of `tenant` whose `DATA_DIR` lies under `root`.
pub fn agent_pids_under(root: &Path, tenant: &str) -> Vec<i32> {
    let tenant_env = format!("TENANT_ID={tenant}");
    processes_under(root)
        .into_iter()
        .filter(|p| p.is_agent && p.environ.contains(&tenant_env))
        .map(|p| p.pid)
        .collect()
}

/// Live processes whose `DATA_DIR` lies under `root`: the services and the agents of one platform.
pub fn processes_under(root: &Path) -> Vec<ProcInfo> {
    let prefix = format!("DATA_DIR={}", root.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let environ = read_nul_separated(PathBuf::from(format!("/proc/{pid}/environ")));
            if !environ.iter().any(|e| e.starts_with(&prefix)) || is_zombie(pid) {
                return None;
            }
            let cmdline = read_nul_separated(PathBuf::from(format!("/proc/{pid}/cmdline")));
            Some(ProcInfo {
                pid,
                is_agent: cmdline.iter().any(|a| a.contains("tenant-agent")),
                environ,
            })
        })
        .collect()
}
