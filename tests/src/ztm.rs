//! The one way tests run the `ztm` binary: against any orchestrator and router URLs, with a token,
//! extra environment and stdin, bounded in time (a hung ztm fails the test instead of stalling it).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::platform::bin_path;

/// What a `ztm` run printed and how it exited.
#[derive(Debug)]
pub struct ZtmRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ZtmRun {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "ztm failed: {self:?}");
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("ztm stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Parses stdout whatever the exit code (`-o json` reports of failed operations).
    pub fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("ztm stdout is not JSON ({e}): {self:?}"))
    }

    /// stdout then stderr, as a terminal shows them.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A `ztm` invocation being set up; [`Ztm::run`] runs it (any number of times).
#[derive(Debug, Clone)]
pub struct Ztm {
    env: Vec<(String, String)>,
    stdin: String,
    timeout: Duration,
}

impl Default for Ztm {
    fn default() -> Self {
        Ztm {
            env: vec![("NO_COLOR".into(), "1".into())],
            stdin: String::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Ztm {
    /// No URLs, no token (the test's own `ZTM_*` variables are not inherited), `NO_COLOR=1`.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn orchestrator(self, url: &str) -> Self {
        self.env("ZTM_ORCHESTRATOR_URL", url)
    }

    pub fn router(self, url: &str) -> Self {
        self.env("ZTM_ROUTER_URL", url)
    }

    pub fn token(self, token: &str) -> Self {
        self.env("ZTM_API_TOKEN", token)
    }

    /// Sets one variable (a later call for the same name wins).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |z, (k, v)| z.env(k, *v))
    }

    /// Fed to ztm's stdin (closed at once when empty).
    pub fn stdin(mut self, input: &str) -> Self {
        self.stdin = input.to_owned();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn run(&self, args: &[&str]) -> ZtmRun {
        let mut cmd = tokio::process::Command::new(bin_path("ztm"));
        cmd.args(args)
            .env_remove("ZTM_ORCHESTRATOR_URL")
            .env_remove("ZTM_ROUTER_URL")
            .env_remove("ZTM_API_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn ztm");
        let mut input = child.stdin.take().expect("ztm stdin");
        if !self.stdin.is_empty() {
            input
                .write_all(self.stdin.as_bytes())
                .await
                .expect("write ztm stdin");
        }
        drop(input);
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("ztm {args:?} hung"))
            .expect("ztm output");
        ZtmRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
