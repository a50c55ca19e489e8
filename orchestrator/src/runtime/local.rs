//! Local runtime: agents as child processes on 127.0.0.1.
//!
//! Each agent gets `$DATA_DIR/agents/{id}/` with `data/`, `state/` (its `brain.db` restored from and
//! saved to the state store) and `agent.pid` (`pid port`), so an orchestrator restarted after a crash
//! adopts the agents it left running.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use common::agent_config::{PlatformDefaults, CONFIG_FILE};
use common::state::{StateStore, BRAIN_FILE};
use common::state_file;
use common::wire::{AgentHealth, AGENT_HEALTH_PATH, AGENT_PAIRED_HEALTH_PATH};
use common::{Secret, TenantId, TenantRecord};
use tokio::process::Child;
use tokio::time::Instant;

use super::local_logs;
use super::{AgentAddress, AgentInfo, LogQuery, Runtime, RuntimeError};

const HOST: &str = "127.0.0.1";
const PID_FILE: &str = "agent.pid";
/// Grace between SIGTERM and SIGKILL (the pod's termination grace period).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Starts retried when the agent exits this soon (typically its port was taken meanwhile).
const EARLY_EXIT: Duration = Duration::from_secs(2);
const START_ATTEMPTS: u32 = 3;
const POLL: Duration = Duration::from_millis(50);
/// How long an agent that runs but does not answer its health check is given before a wake replaces it.
const SLOW_AGENT_GRACE: Duration = Duration::from_secs(10);
/// Longest pause between health probes while an agent starts (each is a refused connect until it
/// listens, which costs microseconds).
const READY_POLL_MAX: Duration = Duration::from_millis(2);

struct LocalAgent {
    pid: i32,
    port: u16,
    /// `None` for an agent adopted from a pid file (not our child).
    child: Option<Child>,
    started: SystemTime,
}

impl LocalAgent {
    fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => pid_alive(self.pid),
        }
    }
}

pub struct LocalRuntime {
    agents_dir: PathBuf,
    command: Vec<String>,
    state: Arc<dyn StateStore>,
    agents: Mutex<HashMap<TenantId, LocalAgent>>,
    http: reqwest::Client,
    grace: Duration,
    defaults: PlatformDefaults,
    llm_api_key: Option<Secret>,
    /// Given to agents as `ORCHESTRATOR_URL` (where they report their own activity).
    orchestrator_url: Option<String>,
}

/// Why waiting for an agent's health failed.
enum NotReady {
    Exited(String),
    Timeout,
}

/// Health of the agent on a port.
enum Health {
    Ok,
    Down,
    /// Someone else answers there (a port clash).
    OtherTenant(String),
}

impl LocalRuntime {
    /// `command` is the agent program and its arguments (see [`agent_command`]).
    pub fn new(
        data_dir: &Path,
        command: Vec<String>,
        state: Arc<dyn StateStore>,
        grace: Duration,
    ) -> Self {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        LocalRuntime {
            agents_dir: data_dir.join("agents"),
            command,
            state,
            agents: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("reqwest client"),
            grace,
            defaults: PlatformDefaults::default(),
            llm_api_key: None,
            orchestrator_url: None,
        }
    }

    /// The orchestrator's URL as its agents reach it, given to them as `ORCHESTRATOR_URL`.
    pub fn with_orchestrator_url(mut self, url: String) -> Self {
        self.orchestrator_url = Some(url);
        self
    }

    /// Platform defaults rendered into every agent's `tenant.json`, and the LLM key its agents get
    /// as `LLM_API_KEY` (the orchestrator's own, passed through; never written to a file).
    pub fn with_agent_config(
        mut self,
        defaults: PlatformDefaults,
        llm_api_key: Option<Secret>,
    ) -> Self {
        self.defaults = defaults;
        self.llm_api_key = llm_api_key;
        self
    }

    fn dir(&self, id: &TenantId) -> PathBuf {
        self.agents_dir.join(id.as_str())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, LocalAgent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts agents a previous orchestrator left running (pid alive and `/health` names the
    /// tenant); forgets stale pid files. Returns how many were adopted.
    pub async fn adopt_running(&self) -> usize {
        let Ok(mut dirs) = tokio::fs::read_dir(&self.agents_dir).await else {
            return 0;
        };
        let mut adopted = 0;
        while let Ok(Some(entry)) = dirs.next_entry().await {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| TenantId::parse(n).ok())
            else {
                continue;
            };
            let pid_file = entry.path().join(PID_FILE);
            let Ok(text) = tokio::fs::read_to_string(&pid_file).await else {
                continue;
            };
            let mut parts = text.split_whitespace().map(str::parse::<i64>);
            let (Some(Ok(pid)), Some(Ok(port))) = (parts.next(), parts.next()) else {
                let _ = tokio::fs::remove_file(&pid_file).await;
                continue;
            };
            let (Ok(pid), Ok(port)) = (i32::try_from(pid), u16::try_from(port)) else {
                let _ = tokio::fs::remove_file(&pid_file).await;
                continue;
            };
            if pid > 1 && pid_alive(pid) && matches!(self.health(port, &id, None).await, Health::Ok)
            {
                tracing::info!(tenant = %id, pid, port, "local runtime: adopted running agent");
                let started = tokio::fs::metadata(&pid_file)
                    .await
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                self.table().insert(
                    id,
                    LocalAgent {
                        pid,
                        port,
                        child: None,
                        started,
                    },
                );
                adopted += 1;
            } else {
                let _ = tokio::fs::remove_file(&pid_file).await;
            }
        }
        adopted
    }

    /// With `credential`, the agent must also accept it on `GET /api/health`: one that refuses it
    /// (401) is another tenant's.
    async fn health(&self, port: u16, id: &TenantId, credential: Option<&Secret>) -> Health {
        // A bare connect first: while the agent starts, a refused connect is far cheaper than an
        // HTTP client's failed request.
        if tokio::net::TcpStream::connect((HOST, port)).await.is_err() {
            return Health::Down;
        }
        let Ok(resp) = self
            .http
            .get(format!("http://{HOST}:{port}{AGENT_HEALTH_PATH}"))
            .send()
            .await
        else {
            return Health::Down;
        };
        if !resp.status().is_success() {
            return Health::Down;
        }
        // An agent that names no tenant (e.g. the ZeroClaw gateway) is taken at its word.
        let body: AgentHealth = resp.json().await.unwrap_or_default();
        if let Some(t) = body.tenant_id {
            if t != id.as_str() {
                return Health::OtherTenant(t);
            }
        }
        let Some(credential) = credential else {
            return Health::Ok;
        };
        match self
            .http
            .get(format!("http://{HOST}:{port}{AGENT_PAIRED_HEALTH_PATH}"))
            .bearer_auth(credential.expose())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Health::Ok,
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                Health::OtherTenant("an agent that refuses this tenant's credential".into())
            }
            _ => Health::Down,
        }
    }

    /// Fills the agent's directory for a start: the saved `brain.db` (from the state store) where
    /// the agent restores it from, and `tenant.json`.
    async fn prepare(&self, record: &TenantRecord, dir: PathBuf) -> Result<(), RuntimeError> {
        let saved = self
            .state
            .load(&record.tenant_id)
            .await
            .map_err(|e| RuntimeError::unavailable("state store load", e))?;
        let config = super::rendered_config(record, &self.defaults)?;
        tokio::task::spawn_blocking(move || prepare_dir(&dir, saved.as_deref(), &config))
            .await
            .map_err(|e| RuntimeError::unavailable("prepare task", e))?
    }

    /// Saves the agent's newest complete `brain.db` to the state store, if it wrote one since `since`.
    async fn save_state(
        &self,
        id: &TenantId,
        since: Option<SystemTime>,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir(id).join("state");
        let newest = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let Some(saved) = state_file::newest(&dir, BRAIN_FILE)? else {
                return Ok(None);
            };
            let modified = std::fs::metadata(&saved.path)?.modified().ok();
            Ok(Some((std::fs::read(&saved.path)?, modified)))
        })
        .await
        .map_err(|e| RuntimeError::unavailable("save task", e))?
        .map_err(|e| io_failed("read agent state", e))?;
        let Some((bytes, modified)) = newest else {
            return Ok(());
        };
        if let (Some(since), Some(modified)) = (since, modified) {
            if modified < since {
                return Ok(());
            }
        }
        self.state
            .save(id, &bytes)
            .await
            .map_err(|e| RuntimeError::unavailable("state store save", e))?;
        tracing::info!(tenant = %id, bytes = bytes.len(), "local runtime: state saved");
        Ok(())
    }

    /// Spawns the agent on a free port and records it.
    fn spawn(&self, record: &TenantRecord, port: u16) -> Result<(), RuntimeError> {
        let id = &record.tenant_id;
        let dir = self.dir(id);
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| RuntimeError::start_failed("AGENT_COMMAND is empty"))?;
        let log = local_logs::open_for_start(&dir).map_err(|e| io_failed("open agent log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| io_failed("open agent log", e))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdout(log)
            .stderr(log_err)
            .env("TENANT_ID", id.as_str())
            .env("TELEGRAM_BOT_TOKEN", record.bot_token.expose())
            .env("AGENT_HOST", HOST)
            .env("AGENT_PORT", port.to_string())
            .env("DATA_DIR", dir.join("data"))
            .env("STATE_DIR", dir.join("state"))
            .env("AGENT_CONFIG_DIR", dir.join("config"))
            .env("AGENT_TOKEN", record.agent_token.expose())
            .stdin(std::process::Stdio::null())
            // Its own process group: a Ctrl-C in the terminal reaches only the orchestrator, which
            // then stops the agent cleanly.
            .process_group(0);
        match &self.llm_api_key {
            Some(key) => cmd.env("LLM_API_KEY", key.expose()),
            None => cmd.env_remove("LLM_API_KEY"),
        };
        match &self.orchestrator_url {
            Some(url) => cmd.env("ORCHESTRATOR_URL", url),
            None => cmd.env_remove("ORCHESTRATOR_URL"),
        };
        let child = cmd
            .spawn()
            .map_err(|e| RuntimeError::start_failed_by(format!("cannot run {program:?}"), e))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| RuntimeError::start_failed("agent exited at once"))?;
        let pid_file = dir.join(PID_FILE);
        let tmp = dir.join(format!("{PID_FILE}.tmp"));
        if let Err(e) = std::fs::write(&tmp, format!("{pid} {port}\n"))
            .and_then(|()| std::fs::rename(&tmp, &pid_file))
        {
            tracing::warn!(tenant = %id, error = %e, "local runtime: cannot write pid file; a restarted orchestrator will not adopt this agent");
        }
        tracing::info!(tenant = %id, pid, port, "local runtime: agent started");
        self.table().insert(
            id.clone(),
            LocalAgent {
                pid,
                port,
                child: Some(child),
                started: SystemTime::now(),
            },
        );
        Ok(())
    }

    /// Whether our running agent answers its health check before `until`: one that is alive but slow
    /// (a storm of starts on a small machine) is waited for, not replaced by a second start.
    async fn healthy_within(
        &self,
        id: &TenantId,
        port: u16,
        credential: &Secret,
        until: Instant,
    ) -> bool {
        loop {
            match self.health(port, id, Some(credential)).await {
                Health::Ok => return true,
                Health::OtherTenant(_) => return false,
                Health::Down => {}
            }
            let alive = self.table().get_mut(id).is_some_and(|a| a.alive());
            if !alive || Instant::now() + POLL > until {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the recorded agent answers its health check for this tenant.
    async fn wait_ready(
        &self,
        id: &TenantId,
        port: u16,
        credential: &Secret,
        deadline: Instant,
    ) -> Result<(), NotReady> {
        // Short polls: readiness is seen within ~2 ms of the agent listening.
        let mut pause = Duration::from_millis(1);
        loop {
            let exited = {
                let mut table = self.table();
                match table.get_mut(id).and_then(|a| a.child.as_mut()) {
                    Some(c) => c.try_wait().ok().flatten(),
                    None => {
                        return Err(NotReady::Exited("agent was stopped during start-up".into()))
                    }
                }
            };
            if let Some(status) = exited {
                return Err(NotReady::Exited(format!(
                    "agent exited during start-up ({status})"
                )));
            }
            match self.health(port, id, Some(credential)).await {
                Health::Ok => return Ok(()),
                Health::OtherTenant(t) => {
                    return Err(NotReady::Exited(format!(
                        "port {port} answers for tenant {t:?}, not this one"
                    )))
                }
                Health::Down => {}
            }
            if Instant::now() + pause > deadline {
                return Err(NotReady::Timeout);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(READY_POLL_MAX);
        }
    }

    /// Ports of agents we run, so two starts never get the same one.
    fn ports_in_use(&self) -> HashSet<u16> {
        self.table().values().map(|a| a.port).collect()
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    async fn start(
        &self,
        record: &TenantRecord,
        deadline: Duration,
    ) -> Result<AgentAddress, RuntimeError> {
        let id = &record.tenant_id;
        if record.agent_token.is_empty() {
            return Err(RuntimeError::start_failed(
                "the tenant has no agent credential yet",
            ));
        }
        let address = |port| AgentAddress {
            pod_name: id.pod_name(),
            pod_ip: HOST.into(),
            agent_port: Some(port),
            warm: None,
        };
        let running = {
            let mut table = self.table();
            table.get_mut(id).and_then(|a| a.alive().then_some(a.port))
        };
        if let Some(port) = running {
            let grace = Instant::now() + deadline.min(SLOW_AGENT_GRACE);
            if self
                .healthy_within(id, port, &record.agent_token, grace)
                .await
            {
                tracing::info!(tenant = %id, port, "local runtime: agent already running, adopting it");
                return Ok(address(port));
            }
            tracing::warn!(tenant = %id, port, "local runtime: agent not healthy, restarting it");
            self.stop(id).await?;
        }

        let deadline_at = Instant::now() + deadline;
        self.prepare(record, self.dir(id)).await?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port(&self.ports_in_use())?;
            let spawned = Instant::now();
            self.spawn(record, port)?;
            match self
                .wait_ready(id, port, &record.agent_token, deadline_at)
                .await
            {
                Ok(()) => return Ok(address(port)),
                Err(NotReady::Timeout) => {
                    self.stop(id).await?;
                    return Err(RuntimeError::Timeout(deadline));
                }
                Err(NotReady::Exited(why)) => {
                    self.stop(id).await?;
                    if attempt >= START_ATTEMPTS || spawned.elapsed() > EARLY_EXIT {
                        return Err(RuntimeError::start_failed(why));
                    }
                    tracing::warn!(tenant = %id, reason = %why, attempt, "local runtime: start failed early, retrying on another port");
                }
            }
        }
    }

    async fn stop(&self, id: &TenantId) -> Result<(), RuntimeError> {
        let Some(agent) = self.table().remove(id) else {
            return Ok(());
        };
        let (pid, child) = (agent.pid, agent.child);
        terminate(pid, child, self.grace).await;
        tracing::info!(tenant = %id, pid, "local runtime: agent stopped");
        let _ = tokio::fs::remove_file(self.dir(id).join(PID_FILE)).await;
        self.save_state(id, None).await
    }

    async fn list(&self) -> Result<Vec<AgentInfo>, RuntimeError> {
        let mut exited = Vec::new();
        let live: Vec<AgentInfo> = {
            let mut table = self.table();
            table.retain(|id, a| {
                let alive = a.alive();
                if !alive {
                    exited.push((id.clone(), a.pid, a.started));
                }
                alive
            });
            table
                .iter()
                .map(|(id, a)| AgentInfo {
                    tenant: id.clone(),
                    address: Some(AgentAddress {
                        pod_name: id.pod_name(),
                        pod_ip: HOST.into(),
                        agent_port: Some(a.port),
                        warm: None,
                    }),
                    instance: None,
                })
                .collect()
        };
        for a in &live {
            if let Err(e) = local_logs::bound(&self.dir(&a.tenant)) {
                tracing::warn!(tenant = %a.tenant, error = %e, "local runtime: bounding agent log failed");
            }
        }
        for (id, pid, started) in exited {
            tracing::warn!(tenant = %id, pid, "local runtime: agent exited on its own");
            let _ = tokio::fs::remove_file(self.dir(&id).join(PID_FILE)).await;
            // It may have saved on a SIGTERM from elsewhere; a killed one left the old file.
            if let Err(e) = self.save_state(&id, Some(started)).await {
                tracing::warn!(tenant = %id, error = %e, "local runtime: saving state of exited agent failed");
            }
        }
        Ok(live)
    }

    async fn remove(&self, id: &TenantId) -> Result<(), RuntimeError> {
        match tokio::fs::remove_dir_all(self.dir(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_failed("remove agent directory", e))
            }
            _ => Ok(()),
        }
    }

    async fn logs(&self, id: &TenantId, query: &LogQuery) -> Result<Option<String>, RuntimeError> {
        if query.since_s.is_some() {
            return Err(RuntimeError::Unsupported(
                "the local runtime's agent logs carry no timestamps: use tail instead of since"
                    .into(),
            ));
        }
        let dir = self.dir(id);
        let query = query.clone();
        let text = tokio::task::spawn_blocking(move || local_logs::read(&dir, &query))
            .await
            .map_err(|e| RuntimeError::unavailable("read agent log", e))?
            .map_err(|e| RuntimeError::unavailable("read agent log", e))?;
        Ok(Some(text.unwrap_or_default()))
    }

    fn agent_port(&self) -> u16 {
        0
    }

    fn name(&self) -> &'static str {
        "local"
    }
}

/// The agent program: `AGENT_COMMAND` split on whitespace, else `tenant-agent` next to this
/// executable (or next to its `deps/` directory, for tests), else `tenant-agent` on `PATH`.
pub fn agent_command(configured: Option<Vec<String>>) -> Vec<String> {
    if let Some(c) = configured.filter(|c| !c.is_empty()) {
        return c;
    }
    if let Ok(exe) = std::env::current_exe() {
        let dirs = exe.ancestors().skip(1).take(2);
        for dir in dirs {
            let candidate = dir.join("tenant-agent");
            if candidate.is_file() {
                return vec![candidate.to_string_lossy().into_owned()];
            }
        }
    }
    vec!["tenant-agent".into()]
}

/// A port that was free a moment ago (bind :0, read it, let it go), not one of `taken`.
/// Creates the agent's `data`, `state` and `config` directories, writes the restored `brain.db` as a
/// new generation ([`common::state_file`]: the state directory may enforce the S3 CSI driver's
/// rules) and replaces `tenant.json` whole. One blocking task: as six `tokio::fs` calls, each
/// queued in the blocking pool behind a storm's, they took 1.9 s of a 1,000-wake storm's median.
fn prepare_dir(dir: &Path, saved: Option<&[u8]>, config: &str) -> Result<(), RuntimeError> {
    for sub in ["data", "state", "config"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| io_failed("create agent directory", e))?;
    }
    if let Some(bytes) = saved {
        state_file::save_bytes(&dir.join("state"), BRAIN_FILE, bytes)
            .map_err(|e| io_failed("write restored state", e))?;
    }
    let tmp = dir.join("config").join(format!("{CONFIG_FILE}.tmp"));
    std::fs::write(&tmp, config.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, dir.join("config").join(CONFIG_FILE)))
        .map_err(|e| io_failed("write agent configuration", e))
}

fn free_port(taken: &HashSet<u16>) -> Result<u16, RuntimeError> {
    for _ in 0..20 {
        let listener =
            std::net::TcpListener::bind((HOST, 0)).map_err(|e| io_failed("find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| io_failed("find a free port", e))?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(RuntimeError::start_failed("no free port found"))
}

fn io_failed(what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::start_failed_by(what, e)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Signals the agent's process group (it leads one), or the process alone if that fails.
fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) calls on a pid we started or adopted.
    unsafe {
        if libc::kill(-pid, sig) != 0 {
            libc::kill(pid, sig);
        }
    }
}

/// SIGTERM, up to `grace` for the agent to save and exit, then SIGKILL.
async fn terminate(pid: i32, child: Option<Child>, grace: Duration) {
    signal(pid, libc::SIGTERM);
    match child {
        Some(mut child) => {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                tracing::warn!(pid, "local runtime: agent ignored SIGTERM, killing it");
                signal(pid, libc::SIGKILL);
                let _ = child.wait().await;
            }
        }
        None => {
            let until = Instant::now() + grace;
            while pid_alive(pid) && Instant::now() < until {
                tokio::time::sleep(POLL).await;
            }
            if pid_alive(pid) {
                tracing::warn!(pid, "local runtime: agent ignored SIGTERM, killing it");
                signal(pid, libc::SIGKILL);
                let until = Instant::now() + Duration::from_secs(5);
                while pid_alive(pid) && Instant::now() < until {
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use common::state::DirStateStore;
    use common::Secret;

    use super::*;

    /// A stand-in agent: answers `/health` with its tenant and, on SIGTERM, saves `brain.db` as the
    /// restored content plus "+", in `common::state_file`'s layout (generation file, then its
    /// sha256 marker).
    const PY_AGENT: &str = r#"
import hashlib, http.server, json, os, re, signal
tid = os.environ["TENANT_ID"]
port = int(os.environ["AGENT_PORT"])
state = os.environ["STATE_DIR"]
gens = sorted(int(m.group(1)) for m in (re.fullmatch(r"brain\.db\.(\d{10})(\.sha256)?", n) for n in os.listdir(state)) if m)
data = ""
for g in reversed(gens):
    try:
        body = open(os.path.join(state, "brain.db.%010d" % g), "rb").read()
        mark = open(os.path.join(state, "brain.db.%010d.sha256" % g)).read().strip()
    except OSError:
        continue
    if hashlib.sha256(body).hexdigest() == mark:
        data = body.decode()
        break
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/api/health" and self.headers.get("Authorization") != "Bearer " + os.environ["AGENT_TOKEN"]:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"status": "ok", "tenant_id": tid, "config_dir": os.environ.get("AGENT_CONFIG_DIR"), "llm_key": os.environ.get("LLM_API_KEY")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
def term(*_):
    g = (gens[-1] if gens else 0) + 1
    body = (data + "+").encode()
    with open(os.path.join(state, "brain.db.%010d" % g), "xb") as f:
        f.write(body)
    with open(os.path.join(state, "brain.db.%010d.sha256" % g), "x") as f:
        f.write(hashlib.sha256(body).hexdigest())
    os._exit(0)
signal.signal(signal.SIGTERM, term)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever(poll_interval=0.05)
"#;

    fn record(id: &str) -> TenantRecord {
        let mut r = TenantRecord::new(
            TenantId::parse(id).unwrap(),
            Secret::new("1:tok"),
            300,
            "tenants",
            Utc::now(),
        );
        r.agent_token = common::tenant::new_agent_token();
        r
    }

    /// The Python test agent written into `dir`, as an `AGENT_COMMAND`. python3 is a test
    /// dependency (scripts/ensure-test-deps.sh): without it the test fails and says so.
    fn py_agent(dir: &Path) -> Vec<String> {
        let ok = std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "these tests need python3 on PATH: run scripts/ensure-test-deps.sh"
        );
        let script = dir.join("agent.py");
        std::fs::write(&script, PY_AGENT).unwrap();
        vec!["python3".to_owned(), script.to_string_lossy().into_owned()]
    }

    fn runtime(dir: &Path, command: Vec<String>) -> (LocalRuntime, Arc<DirStateStore>) {
        let store = Arc::new(DirStateStore::new(dir.join("state")));
        let rt = LocalRuntime::new(dir, command, store.clone(), Duration::from_secs(5));
        (rt, store)
    }

    #[tokio::test]
    async fn starts_restores_stops_saves_and_adopts() {
        let dir = tempfile::tempdir().unwrap();
        let command = py_agent(dir.path());
        let (rt, store) = runtime(dir.path(), command.clone());
        let rec = record("bob");
        let id = &rec.tenant_id;
        store.save(id, b"memory").await.unwrap();

        let addr = rt.start(&rec, Duration::from_secs(10)).await.unwrap();
        assert_eq!(addr.pod_name, "zeroclaw-bob");
        assert_eq!(addr.pod_ip, "127.0.0.1");
        let port = addr.agent_port.unwrap();
        let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["tenant_id"], "bob");
        let listed = rt.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].address.as_ref().unwrap().agent_port, Some(port));
        // Starting again adopts the running agent.
        assert_eq!(rt.start(&rec, Duration::from_secs(10)).await.unwrap(), addr);

        // A new orchestrator (same DATA_DIR) adopts it from the pid file and can stop it.
        let (rt2, _) = runtime(dir.path(), command);
        assert_eq!(rt2.adopt_running().await, 1);
        drop(rt);
        rt2.stop(id).await.unwrap();
        assert!(rt2.list().await.unwrap().is_empty());
        assert!(reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_err());
        assert_eq!(
            store.load(id).await.unwrap().as_deref(),
            Some(&b"memory+"[..]),
            "restored before start, saved after stop"
        );
        rt2.stop(id).await.unwrap(); // idempotent
        rt2.remove(id).await.unwrap();
        assert!(!dir.path().join("agents/bob").exists());
    }

    /// A wake that finds our agent alive but not answering (a storm on a small machine) waits for
    /// it: a second start of the same tenant would replace a working agent.
    #[tokio::test]
    async fn a_running_agent_slower_than_a_health_probe_is_waited_for_not_started_twice() {
        let dir = tempfile::tempdir().unwrap();
        let command = py_agent(dir.path());
        let (rt, _) = runtime(dir.path(), command);
        let rec = record("slow");
        let id = &rec.tenant_id;
        let addr = rt.start(&rec, Duration::from_secs(10)).await.unwrap();
        let pid = rt.table().get(id).unwrap().pid;

        // Frozen for longer than one health probe's timeout (2 s), then running again.
        signal(pid, libc::SIGSTOP);
        let resume = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            signal(pid, libc::SIGCONT);
        });
        let again = rt.start(&rec, Duration::from_secs(30)).await.unwrap();
        resume.await.unwrap();
        assert_eq!(again, addr);
        assert_eq!(
            rt.table().get(id).unwrap().pid,
            pid,
            "the same process, not a second start"
        );
        rt.stop(id).await.unwrap();
    }

    #[tokio::test]
    async fn an_agent_that_exits_at_start_fails_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _) = runtime(dir.path(), vec!["false".into()]);
        let err = rt
            .start(&record("bob"), Duration::from_secs(10))
            .await
            .unwrap_err();
        match err {
            RuntimeError::StartFailed { reason, .. } => {
                assert!(reason.contains("exit status: 1"), "{reason}")
            }
            other => panic!("expected StartFailed, got {other:?}"),
        }
        assert!(rt.list().await.unwrap().is_empty());
        let (rt, _) = runtime(dir.path(), vec!["/nonexistent/agent".into()]);
        let err = rt
            .start(&record("bob"), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/agent"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_agent_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _) = runtime(dir.path(), vec!["sleep".into(), "60".into()]);
        let err = rt
            .start(&record("bob"), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Timeout(_)), "{err:?}");
        assert!(rt.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_agent_that_dies_is_no_longer_listed() {
        let dir = tempfile::tempdir().unwrap();
        let command = py_agent(dir.path());
        let (rt, _) = runtime(dir.path(), command);
        rt.start(&record("bob"), Duration::from_secs(10))
            .await
            .unwrap();
        let pid = rt
            .table()
            .get(&TenantId::parse("bob").unwrap())
            .unwrap()
            .pid;
        signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rt.list().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "dead agent still listed");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The agent gets its credential, its `tenant.json` (tenant settings over platform defaults)
    /// and the LLM key; an agent that refuses the tenant's credential is not taken for it.
    #[tokio::test]
    async fn the_agent_gets_its_credential_and_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let command = py_agent(dir.path());
        let (rt, _) = runtime(dir.path(), command);
        let defaults = PlatformDefaults {
            api_url: Some("http://127.0.0.1:9/v1".into()),
            model: "platform-model".into(),
            ..Default::default()
        };
        let rt = rt.with_agent_config(defaults, Some(Secret::new("llm-key-1")));
        let mut rec = record("bob");
        rec.agent_config = Some(r#"{"files":{"SOUL.md":"be brief"},"temperature":0.2}"#.into());
        let addr = rt.start(&rec, Duration::from_secs(10)).await.unwrap();
        let port = addr.agent_port.unwrap();
        let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let config_dir = PathBuf::from(health["config_dir"].as_str().unwrap());
        assert_eq!(config_dir, dir.path().join("agents/bob/config"));
        assert_eq!(health["llm_key"], "llm-key-1");
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(config_dir.join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(file["tenant_id"], "bob");
        assert_eq!(file["files"]["SOUL.md"], "be brief");
        assert_eq!(file["temperature"], 0.2);
        assert_eq!(file["model"], "platform-model");
        assert_eq!(file["api_url"], "http://127.0.0.1:9/v1");
        assert!(
            !file.to_string().contains("llm-key-1")
                && !file.to_string().contains(rec.agent_token.expose()),
            "no secret in the file"
        );

        // Same tenant, other credential (the agent there is not this record's): not adopted.
        let mut impostor = rec.clone();
        impostor.agent_token = common::tenant::new_agent_token();
        assert!(
            !rt.healthy_within(&rec.tenant_id, port, &impostor.agent_token, Instant::now())
                .await
        );
        assert!(
            rt.healthy_within(&rec.tenant_id, port, &rec.agent_token, Instant::now())
                .await
        );
        rt.stop(&rec.tenant_id).await.unwrap();
    }
}
