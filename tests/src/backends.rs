//! Real backends for tests: a `redis-server` and the AWS emulator `moto_server` on free ports,
//! killed when dropped. `scripts/ensure-test-deps.sh` installs both (`make test` runs it).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::platform::{free_port, wait_until};

/// How long a backend may take to answer after its start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Region and dummy credentials of the emulator.
pub const AWS_REGION: &str = "us-east-1";

/// The workspace root (where `.venv` and `scripts/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Spawns `cmd` so that it also dies with the test process if a `Drop` never runs. Linux sends
/// the signal when the spawning *thread* exits: keep a backend owned by the test that started it.
fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start {what}: {e} (run scripts/ensure-test-deps.sh to install it)")
    })
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A `redis-server` without persistence in a temp dir; `stop`/`restart` keep its port. It requires
/// a password (`--requirepass`), as in production, so every client must authenticate.
pub struct Redis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Append-only file fsynced on every write: a kill and restart loses nothing (production set-up).
    aof: bool,
    password: String,
    /// `--maxmemory` with `noeviction`: a full server refuses writes instead of growing.
    maxmemory: Option<String>,
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_with(false, None).await
    }

    /// A server whose data survives `stop`/`restart` (AOF, `appendfsync always`).
    pub async fn start_persistent() -> Redis {
        Redis::start_with(true, None).await
    }

    /// A server that refuses writes (`OOM`) once it holds `limit` (e.g. `"4mb"`), as deployed.
    pub async fn start_with_maxmemory(limit: &str) -> Redis {
        Redis::start_with(false, Some(limit.to_owned())).await
    }

    async fn start_with(aof: bool, maxmemory: Option<String>) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            aof,
            password: format!("redis-pw-{}", uuid::Uuid::new_v4().simple()),
            maxmemory,
        };
        r.restart().await;
        r
    }

    /// The value of `REDIS_ADDR`: a `redis://` URL carrying the password.
    pub fn addr(&self) -> String {
        self.url()
    }

    pub fn url(&self) -> String {
        format!("redis://:{}@{}", self.password, self.host_port())
    }

    /// `host:port` without credentials.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// A client of its own (not the services' pool), for tests that poke at the server.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// A pool as the services build it.
    pub fn pool(&self) -> common::redis_pool::Pool {
        common::redis_pool::pool(&self.addr()).expect("redis pool")
    }

    /// Kills the server (an outage); its data is gone, as with a crash without AOF.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port and waits until it answers `PING`.
    pub async fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(["--requirepass", &self.password])
            .current_dir(self.dir.path());
        if let Some(limit) = &self.maxmemory {
            cmd.args(["--maxmemory", limit, "--maxmemory-policy", "noeviction"]);
        }
        self.child = Some(spawn(&mut cmd, "redis-server"));
        let (addr, password) = (self.host_port(), self.password.clone());
        wait_until("redis-server to answer PING", START_TIMEOUT, || {
            redis_pings(addr.clone(), password.clone())
        })
        .await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn redis_pings(addr: String, password: String) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return false;
    };
    let cmds = format!("AUTH {password}\r\nPING\r\n");
    if s.write_all(cmds.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.is_ok() && &buf == b"+OK\r\n+PONG\r\n"
}

/// `moto_server` (DynamoDB and S3 emulator) from `.venv`. Use unique table and bucket names per test.
pub struct Moto {
    port: u16,
    child: Option<Child>,
}

impl Moto {
    pub async fn start() -> Moto {
        set_aws_env();
        let mut moto = Moto {
            port: free_port(),
            child: None,
        };
        moto.spawn().await;
        moto
    }

    async fn spawn(&mut self) {
        let bin = workspace_root().join(".venv/bin/moto_server");
        self.child = Some(spawn(
            Command::new(&bin).args(["-H", "127.0.0.1", "-p", &self.port.to_string()]),
            &bin.display().to_string(),
        ));
        let url = self.endpoint();
        let http = reqwest::Client::new();
        wait_until("moto_server to answer", START_TIMEOUT, || {
            let req = http.get(format!("{url}/moto-api/")).send();
            async move { req.await.is_ok() }
        })
        .await;
    }

    /// Kills the emulator (an outage); its tables and buckets are gone with it.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts an empty emulator on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// The endpoint URL for `DYNAMODB_ENDPOINT` and `S3_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Env for a service that should use this emulator for both DynamoDB and S3.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = aws_env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("DYNAMODB_ENDPOINT".into(), self.endpoint()));
        env.push(("S3_ENDPOINT".into(), self.endpoint()));
        env
    }

    /// A registry on a new table `name`, created and ACTIVE.
    pub async fn registry(&self, table: &str) -> common::registry::dynamodb::DynamoRegistry {
        let r = common::registry::dynamodb::DynamoRegistry::connect(
            table,
            Some(&self.endpoint()),
            Some(AWS_REGION),
        )
        .await
        .expect("dynamodb client");
        r.ensure_table().await.expect("create table");
        r
    }

    /// A state store on a new bucket `name`, created.
    pub async fn state_store(&self, bucket: &str) -> common::state::s3::S3StateStore {
        let s = common::state::s3::S3StateStore::connect(
            bucket,
            Some(&self.endpoint()),
            Some(AWS_REGION),
        )
        .await
        .expect("s3 client");
        s.ensure_bucket().await.expect("create bucket");
        s
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Dummy credentials the emulator accepts.
pub fn aws_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", AWS_REGION),
    ]
}

/// Puts the dummy credentials into this process's env, for clients built in the test itself.
pub fn set_aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in aws_env() {
            std::env::set_var(k, v);
        }
    });
}

/// Environment that makes a process (and what it starts) see its wall clock shifted by `offset`
/// (libfaketime syntax: `"-10m"`, `"+2h"`), its monotonic clock untouched: two hosts whose clocks
/// disagree. libfaketime is preloaded directly: `faketime(1)` forks and waits, so the service's pid
/// would be the wrapper's and its signals and parent-death signal would miss the service.
pub fn faketime_env(offset: &str) -> Vec<(String, String)> {
    let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu", ""]
        .iter()
        .map(|arch| {
            PathBuf::from("/usr/lib")
                .join(arch)
                .join("faketime/libfaketimeMT.so.1")
        })
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("libfaketime not found (run scripts/ensure-test-deps.sh to install faketime)")
        });
    [
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into()
}

/// A unique lowercase name for a table, bucket or key prefix.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Outage figures of one adapter: how long a call took to fail, and to work again after the restart.
#[derive(Debug)]
pub struct Outage {
    pub failed_after: Duration,
    pub recovered_after: Duration,
}

/// Stops Redis under `op` (which must succeed before), asserts it fails with `Unavailable` within
/// `bound`, restarts Redis and asserts the same adapter recovers without being rebuilt.
pub async fn redis_outage<F, Fut>(redis: &mut Redis, bound: Duration, mut op: F) -> Outage
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), common::StoreError>>,
{
    op().await.expect("works before the outage");
    redis.stop();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(bound * 2, op())
            .await
            .expect("a call during the outage hangs");
        let failed_after = started.elapsed();
        assert!(
            matches!(res, Err(common::StoreError::Unavailable { .. })),
            "during the outage: {res:?}"
        );
        assert!(failed_after < bound, "failing took {failed_after:?}");
    }
    let started = std::time::Instant::now();
    let res = op().await;
    let failed_after = started.elapsed();
    assert!(res.is_err());
    redis.restart().await;
    let started = std::time::Instant::now();
    wait_until("the adapter to work again", Duration::from_secs(15), || {
        let f = op();
        async move { f.await.is_ok() }
    })
    .await;
    Outage {
        failed_after,
        recovered_after: started.elapsed(),
    }
}
