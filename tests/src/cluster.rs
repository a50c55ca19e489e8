//! Several orchestrator and router replicas sharing real Redis and the AWS emulator (DynamoDB + S3),
//! local runtime, against a fake Telegram. Routers reach the orchestrators through a round-robin TCP
//! balancer standing in for the Kubernetes Service; replicas are added, SIGTERMed or SIGKILLed one at a
//! time like a rolling update or a crash. A `Traffic` generator plays Telegram (retrying refused
//! updates on any router) and `Traffic::report` matches every acknowledged update with its replies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::backends::{unique_name, Moto, Redis};
use crate::platform::{
    agent_pids_under, bot_token, free_port, processes_under, text_update, Service,
};
use crate::telegram::FakeTelegram;

/// Log line of the local runtime for every agent process it starts.
pub const AGENT_STARTED: &str = "local runtime: agent started";

/// A TCP load balancer on 127.0.0.1: each connection goes to the next backend that accepts it.
pub struct Balancer {
    port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
    task: JoinHandle<()>,
}

impl Balancer {
    pub async fn start() -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("balancer bind");
        let port = listener.local_addr().expect("balancer addr").port();
        let backends: Arc<Mutex<Vec<u16>>> = Arc::default();
        let task = tokio::spawn(accept(listener, backends.clone()));
        Balancer {
            port,
            backends,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn add(&self, port: u16) {
        self.backends.lock().unwrap().push(port);
    }

    /// Takes a backend out of rotation (endpoint removal before a pod is stopped).
    pub fn remove(&self, port: u16) {
        self.backends.lock().unwrap().retain(|p| *p != port);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, backends: Arc<Mutex<Vec<u16>>>) {
    // Owned here: aborting the accept loop drops the set and ends every proxied connection.
    let mut conns = JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let (backends, next) = (backends.clone(), next.clone());
        conns.spawn(async move {
            let ports = backends.lock().unwrap().clone();
            let start = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..ports.len() {
                let port = ports[(start + i) % ports.len()];
                if let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
        });
    }
}

#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub orchestrators: usize,
    pub routers: usize,
    /// Redis with an fsynced append-only file, so that `stop`/`restart` loses nothing stored.
    pub persistent_redis: bool,
    pub orchestrator_env: Vec<(String, String)>,
    pub router_env: Vec<(String, String)>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            orchestrators: 2,
            routers: 2,
            persistent_redis: false,
            orchestrator_env: Vec::new(),
            router_env: Vec::new(),
        }
    }
}

impl ClusterOpts {
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

/// N orchestrators + M routers on shared backends. Killed or stopped replicas stay in `retired` so
/// their logs can still be read.
pub struct Cluster {
    pub telegram: FakeTelegram,
    pub redis: Redis,
    pub moto: Moto,
    pub orchestrators: Vec<Service>,
    pub routers: Vec<Service>,
    pub retired: Vec<Service>,
    pub balancer: Balancer,
    pub api_token: String,
    pub webhook_secret: String,
    /// URLs of the routers that take traffic now (what the ingress would send to).
    router_targets: Arc<Mutex<Vec<String>>>,
    orch_env: Vec<(String, String)>,
    router_env: Vec<(String, String)>,
    started: usize,
    http: reqwest::Client,
    root: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(opts: ClusterOpts) -> Cluster {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let (api_token, webhook_secret) = (format!("api-{run}"), format!("whsec-{run}"));
        let telegram = FakeTelegram::start().await;
        let redis = if opts.persistent_redis {
            Redis::start_persistent().await
        } else {
            Redis::start().await
        };
        let moto = Moto::start().await;
        let balancer = Balancer::start().await;
        let root = tempfile::Builder::new()
            .prefix("zt-cluster-")
            .tempdir()
            .expect("temp dir");

        let mut common_env: Vec<(String, String)> = [
            ("TELEGRAM_API_URL", telegram.url().to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("LOG_FORMAT", "text".to_owned()),
            ("NO_COLOR", "1".to_owned()),
            ("API_TOKEN", api_token.clone()),
            ("WEBHOOK_SECRET", webhook_secret.clone()),
            ("REDIS_ADDR", redis.addr()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        let mut orch_env = common_env.clone();
        orch_env.extend(moto.env());
        orch_env.extend(
            [
                ("DYNAMODB_TABLE", unique_name("tenants")),
                ("S3_BUCKET", unique_name("state")),
                ("RUNTIME", "local".to_owned()),
                ("LOCAL_MODE", "true".to_owned()),
                ("IDLE_CHECK_INTERVAL_S", "2".to_owned()),
                ("RECONCILE_INTERVAL_S", "2".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        orch_env.extend(opts.orchestrator_env);
        common_env.extend(
            [
                ("ORCHESTRATOR_ADDR", balancer.url()),
                ("INBOX_SCAN_INTERVAL_MS", "200".to_owned()),
                ("INBOX_CLAIM_TTL_S", "3".to_owned()),
                ("RETRY_BACKOFF_MS", "200".to_owned()),
                ("RETRY_BACKOFF_MAX_MS", "2000".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        let mut router_env = common_env;
        router_env.extend(opts.router_env);

        let mut cluster = Cluster {
            telegram,
            redis,
            moto,
            orchestrators: Vec::new(),
            routers: Vec::new(),
            retired: Vec::new(),
            balancer,
            api_token,
            webhook_secret,
            router_targets: Arc::default(),
            orch_env,
            router_env,
            started: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            root,
        };
        for _ in 0..opts.orchestrators {
            cluster.add_orchestrator().await;
        }
        for _ in 0..opts.routers {
            cluster.add_router().await;
        }
        cluster
    }

    fn new_service(&mut self, name: &'static str, env: &[(String, String)]) -> Service {
        self.started += 1;
        let port = free_port();
        let dir = self.root.path().join(format!("{name}-{}", self.started));
        let mut env = env.to_vec();
        env.push(("PORT".into(), port.to_string()));
        env.push(("DATA_DIR".into(), dir.join(name).display().to_string()));
        env.push(("POD_NAME".into(), format!("{name}-{}", self.started)));
        Service::new(name, &dir, env, port)
    }

    /// Starts one more orchestrator, waits for `/readyz`, puts it behind the balancer; its index.
    pub async fn add_orchestrator(&mut self) -> usize {
        self.add_orchestrator_with(Vec::new()).await
    }

    /// `add_orchestrator` with `extra` environment for this replica only (it overrides the
    /// cluster's): a replica configured or clocked unlike the others.
    pub async fn add_orchestrator_with(&mut self, extra: Vec<(String, String)>) -> usize {
        let mut env = self.orch_env.clone();
        env.extend(extra);
        let mut s = self.new_service("orchestrator", &env);
        s.start().await;
        self.balancer.add(s.port);
        self.orchestrators.push(s);
        self.orchestrators.len() - 1
    }

    /// Starts one more router, waits for `/readyz`, sends traffic to it; its index.
    pub async fn add_router(&mut self) -> usize {
        let env = self.router_env.clone();
        let mut s = self.new_service("router", &env);
        s.start().await;
        self.router_targets.lock().unwrap().push(s.url());
        self.routers.push(s);
        self.routers.len() - 1
    }

    /// SIGKILL, as a crash: no endpoint removal first.
    pub fn kill_orchestrator(&mut self, i: usize) {
        let mut s = self.orchestrators.remove(i);
        s.kill();
        self.balancer.remove(s.port);
        self.retired.push(s);
    }

    pub fn kill_router(&mut self, i: usize) {
        let mut s = self.routers.remove(i);
        s.kill();
        self.router_targets
            .lock()
            .unwrap()
            .retain(|u| *u != s.url());
        self.retired.push(s);
    }

    /// A rolling update's stop: out of rotation first, then SIGTERM and wait for the exit.
    pub async fn terminate_orchestrator(&mut self, i: usize) {
        let mut s = self.orchestrators.remove(i);
        self.balancer.remove(s.port);
        let status = s.terminate(Duration::from_secs(45)).await;
        assert!(
            status.success(),
            "orchestrator exit after SIGTERM: {status}"
        );
        self.retired.push(s);
    }

    pub async fn terminate_router(&mut self, i: usize) {
        let mut s = self.routers.remove(i);
        self.router_targets
            .lock()
            .unwrap()
            .retain(|u| *u != s.url());
        let status = s.terminate(Duration::from_secs(45)).await;
        assert!(status.success(), "router exit after SIGTERM: {status}");
        self.retired.push(s);
    }

    /// URL of the orchestrators' Service (the balancer).
    pub fn orch_url(&self, path: &str) -> String {
        format!("{}{path}", self.balancer.url())
    }

    /// Creates `n` tenants `{prefix}-{i}` (idle, default idle timeout); returns id → bot token.
    pub async fn create_tenants(&self, prefix: &str, n: usize) -> HashMap<String, String> {
        let mut tenants = HashMap::new();
        for i in 0..n {
            let (id, token) = (format!("{prefix}-{i}"), bot_token());
            let resp = self
                .http
                .post(self.orch_url("/tenants"))
                .bearer_auth(&self.api_token)
                .json(&json!({"tenant_id": id, "bot_token": token}))
                .send()
                .await
                .expect("POST /tenants");
            assert_eq!(resp.status(), StatusCode::CREATED, "create {id}");
            tenants.insert(id, token);
        }
        tenants
    }

    pub async fn tenant(&self, id: &str) -> Value {
        self.http
            .request(Method::GET, self.orch_url(&format!("/tenants/{id}")))
            .bearer_auth(&self.api_token)
            .send()
            .await
            .expect("GET /tenants/{id}")
            .json()
            .await
            .expect("TenantView")
    }

    /// Posts an update to one router as Telegram does; `Err` when the connection failed.
    pub async fn post_update(
        &self,
        router_url: &str,
        tenant: &str,
        update: &Value,
    ) -> Result<StatusCode, reqwest::Error> {
        post_tg(&self.http, router_url, &self.webhook_secret, tenant, update).await
    }

    /// `GET {url}/readyz` status; `None` when it does not answer.
    pub async fn readyz(&self, url: &str) -> Option<StatusCode> {
        self.http
            .get(format!("{url}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    /// Agent processes this cluster started, found by their `AGENT_STARTED` log lines across every
    /// orchestrator, killed ones included.
    pub fn agent_starts(&self, tenant: &str) -> usize {
        let field = format!("tenant={tenant} ");
        self.all_services()
            .filter(|s| s.name == "orchestrator")
            .map(|s| {
                s.log()
                    .lines()
                    .filter(|l| l.contains(AGENT_STARTED) && l.contains(&field))
                    .count()
            })
            .sum()
    }

    /// Live `tenant-agent` processes of `tenant`, whoever started them.
    pub fn agent_pids(&self, tenant: &str) -> Vec<i32> {
        agent_pids_under(self.root.path(), tenant)
    }

    /// Index of the live orchestrator whose runtime runs an agent process for `tenant`.
    pub fn orchestrator_running(&self, tenant: &str) -> Option<usize> {
        self.orchestrators
            .iter()
            .position(|s| !agent_pids_under(&s.data_dir, tenant).is_empty())
    }

    /// A traffic generator playing Telegram against the routers in rotation.
    pub fn traffic(&self, tenants: &HashMap<String, String>) -> Traffic {
        let mut ids: Vec<String> = tenants.keys().cloned().collect();
        ids.sort();
        Traffic {
            inner: Arc::new(TrafficInner {
                http: self.http.clone(),
                targets: self.router_targets.clone(),
                secret: self.webhook_secret.clone(),
                tenants: ids,
                tokens: tenants
                    .iter()
                    .map(|(k, v)| (v.clone(), k.clone()))
                    .collect(),
                sent: Mutex::default(),
            }),
            tasks: JoinSet::new(),
        }
    }

    fn all_services(&self) -> impl Iterator<Item = &Service> {
        self.orchestrators
            .iter()
            .chain(&self.routers)
            .chain(&self.retired)
    }

    /// Every service's log, for a failure message.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.all_services()
            .map(|s| {
                let log = s.log();
                let all: Vec<&str> = log.lines().collect();
                format!(
                    "--- {} ({}) ---\n{}",
                    s.name,
                    s.data_dir.display(),
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.routers.iter_mut().chain(&mut self.orchestrators) {
            s.kill();
        }
        let own = std::process::id() as i32;
        for p in processes_under(self.root.path()) {
            if p.pid != own {
                // SAFETY: kill(2) on a process this cluster started (its DATA_DIR is under our root).
                unsafe {
                    libc::kill(p.pid, libc::SIGKILL);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail(80));
        }
    }
}

async fn post_tg(
    http: &reqwest::Client,
    router_url: &str,
    secret: &str,
    tenant: &str,
    update: &Value,
) -> Result<StatusCode, reqwest::Error> {
    let token = common::TenantId::parse(tenant)
        .map(|id| common::webhook::secret_token(secret, &id))
        .unwrap_or_default();
    http.post(format!("{router_url}/tg/{tenant}"))
        .header("Content-Type", "application/json")
        .header("X-Telegram-Bot-Api-Secret-Token", token)
        .body(update.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map(|r| r.status())
}

/// One update Telegram delivered (or tried to).
#[derive(Debug, Clone)]
pub struct Sent {
    pub tenant: String,
    pub update_id: i64,
    pub chat_id: i64,
    pub text: String,
    pub first_try: Instant,
    pub acked_at: Option<Instant>,
    /// Answers other than 200 (503 during an outage) and connection failures before the 200.
    pub refused: u32,
    pub failed_connections: u32,
}

struct TrafficInner {
    http: reqwest::Client,
    targets: Arc<Mutex<Vec<String>>>,
    secret: String,
    tenants: Vec<String>,
    /// Bot token → tenant, to attribute `sendMessage` calls.
    tokens: HashMap<String, String>,
    sent: Mutex<Vec<Sent>>,
}

/// Plays Telegram: sends updates, retries refused ones on the next router until a 200 (as Telegram
/// retries a webhook), and records everything.
pub struct Traffic {
    inner: Arc<TrafficInner>,
    tasks: JoinSet<()>,
}

/// Update ids unique across every `Traffic` of the process, so replies match one update.
static NEXT_UPDATE: AtomicI64 = AtomicI64::new(1);

/// How long Telegram keeps retrying one update in these tests.
const RETRY_FOR: Duration = Duration::from_secs(90);

impl Traffic {
    /// Sends one update to the `i`-th tenant (round robin over the sorted ids) in the background.
    pub fn send(&mut self, i: usize) {
        let inner = self.inner.clone();
        let tenant = inner.tenants[i % inner.tenants.len()].clone();
        let update_id = NEXT_UPDATE.fetch_add(1, Ordering::Relaxed);
        self.tasks
            .spawn(deliver(inner, tenant, update_id, 1_000_000 + update_id));
    }

    /// Sends one update from chat `chat_id` to `tenant` in the background.
    pub fn send_as(&mut self, tenant: &str, chat_id: i64) {
        let inner = self.inner.clone();
        let update_id = NEXT_UPDATE.fetch_add(1, Ordering::Relaxed);
        self.tasks
            .spawn(deliver(inner, tenant.to_owned(), update_id, chat_id));
    }

    /// Sends `per_second` updates a second, round robin over the tenants, until `stop` resolves.
    pub async fn steady<F: std::future::Future>(&mut self, per_second: u32, stop: F) -> F::Output {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
        tokio::pin!(stop);
        let mut i = 0;
        loop {
            tokio::select! {
                out = &mut stop => return out,
                _ = tick.tick() => { self.send(i); i += 1; }
            }
        }
    }

    /// Waits until every update got its 200 (Telegram's retries included).
    pub async fn all_acked(&mut self) {
        while let Some(r) = self.tasks.join_next().await {
            r.expect("sender task");
        }
        let sent = self.sent();
        let lost: Vec<_> = sent.iter().filter(|s| s.acked_at.is_none()).collect();
        assert!(lost.is_empty(), "never acknowledged: {lost:?}");
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.inner.sent.lock().unwrap().clone()
    }

    /// Replies per update, found by the echoed text; waits until every acknowledged update has one.
    pub async fn wait_answered(&self, telegram: &FakeTelegram, timeout: Duration) -> Report {
        let sent = self.sent();
        let wanted: HashMap<String, usize> = sent
            .iter()
            .enumerate()
            .filter(|(_, s)| s.acked_at.is_some())
            .map(|(i, s)| (s.text.clone(), i))
            .collect();
        telegram
            .wait_for("a reply to every acknowledged update", timeout, |calls| {
                let mut seen = std::collections::HashSet::new();
                for c in calls {
                    if let Some(t) = c.text().and_then(echoed) {
                        if wanted.contains_key(t) {
                            seen.insert(t.to_owned());
                        }
                    }
                }
                seen.len() == wanted.len()
            })
            .await;
        // Late duplicates would arrive just after the last reply: give them a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let calls = telegram.calls();
        let mut replies: HashMap<usize, Vec<(String, Instant)>> = HashMap::new();
        let mut failures = Vec::new();
        for c in calls.iter().filter(|c| c.method == "sendMessage") {
            let text = c.text().unwrap_or_default();
            if text.starts_with('❌') {
                failures.push(format!("{} {text}", c.chat_id().unwrap_or_default()));
            }
            let Some(i) = echoed(text).and_then(|t| wanted.get(t)) else {
                continue;
            };
            let s = &sent[*i];
            assert_eq!(
                c.chat_id(),
                Some(s.chat_id),
                "reply to the wrong chat: {text}"
            );
            assert_eq!(
                self.inner.tokens.get(&c.token),
                Some(&s.tenant),
                "reply from the wrong bot: {text}"
            );
            replies.entry(*i).or_default().push((text.to_owned(), c.at));
        }
        let mut latencies: Vec<Duration> = replies
            .iter()
            .map(|(i, r)| r[0].1.duration_since(sent[*i].first_try))
            .collect();
        latencies.sort();
        let duplicates: Vec<Vec<String>> = replies
            .values()
            .filter(|r| r.len() > 1)
            .map(|r| r.iter().map(|(t, _)| t.clone()).collect())
            .collect();
        Report {
            updates: sent.len(),
            acked: wanted.len(),
            answered: replies.len(),
            refused: sent.iter().map(|s| s.refused).sum(),
            failed_connections: sent.iter().map(|s| s.failed_connections).sum(),
            duplicates,
            failures,
            median: latencies
                .get(latencies.len() / 2)
                .copied()
                .unwrap_or_default(),
            p99: latencies
                .get(latencies.len() * 99 / 100)
                .copied()
                .unwrap_or_default(),
            worst: latencies.last().copied().unwrap_or_default(),
        }
    }
}

/// The text an `echo: <text> (#N)` reply echoes.
fn echoed(reply: &str) -> Option<&str> {
    let rest = reply.strip_prefix("echo: ")?;
    Some(rest.rsplit_once(" (#").map_or(rest, |(t, _)| t))
}

async fn deliver(inner: Arc<TrafficInner>, tenant: String, update_id: i64, chat_id: i64) {
    let text = format!("m{update_id}-{tenant}");
    let update = text_update(update_id, chat_id, &text);
    let first_try = Instant::now();
    let (mut refused, mut failed_connections, mut acked_at) = (0, 0, None);
    let mut attempt = update_id as usize;
    while first_try.elapsed() < RETRY_FOR {
        let target = {
            let t = inner.targets.lock().unwrap();
            (!t.is_empty()).then(|| t[attempt % t.len()].clone())
        };
        attempt += 1;
        if let Some(url) = target {
            match post_tg(&inner.http, &url, &inner.secret, &tenant, &update).await {
                Ok(StatusCode::OK) => {
                    acked_at = Some(Instant::now());
                    break;
                }
                Ok(_) => refused += 1,
                Err(_) => failed_connections += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    inner.sent.lock().unwrap().push(Sent {
        tenant,
        update_id,
        chat_id,
        text,
        first_try,
        acked_at,
        refused,
        failed_connections,
    });
}

/// What the users saw, per acknowledged update.
#[derive(Debug)]
pub struct Report {
    pub updates: usize,
    pub acked: usize,
    pub answered: usize,
    pub refused: u32,
    pub failed_connections: u32,
    /// The reply texts of every update answered more than once.
    pub duplicates: Vec<Vec<String>>,
    /// `❌ ...` messages users got.
    pub failures: Vec<String>,
    pub median: Duration,
    pub p99: Duration,
    pub worst: Duration,
}

impl Report {
    /// The worst delay beyond the typical one.
    pub fn worst_extra(&self) -> Duration {
        self.worst.saturating_sub(self.median)
    }

    /// Duplicates whose replies differ: the agent handled the update twice (not the same key).
    pub fn reprocessed(&self) -> Vec<&Vec<String>> {
        self.duplicates
            .iter()
            .filter(|r| r.iter().any(|t| *t != r[0]))
            .collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "updates {} · acknowledged {} · answered {} · refused (non-200) {} · connection failures {} · \
             duplicate replies {} (reprocessed {}) · failure messages {} · latency median {:?} p99 {:?} worst {:?} · worst extra delay {:?}",
            self.updates,
            self.acked,
            self.answered,
            self.refused,
            self.failed_connections,
            self.duplicates.len(),
            self.reprocessed().len(),
            self.failures.len(),
            self.median,
            self.p99,
            self.worst,
            self.worst_extra()
        )
    }
}
