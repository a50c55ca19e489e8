//! The launcher binary with a stand-in for ZeroClaw (a shell script): what the child gets at
//! start, signal forwarding, the save after a stop or a crash, and the exit codes.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::state_file;
use rusqlite::Connection;
use support::memories;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_zeroclaw-launcher");
const AGENT_TOKEN: &str = "agent-cred-7f1e";
const BOT_TOKEN: &str = "123456:bot-secret";
const LLM_KEY: &str = "sk-llm-key-91";

struct Agent {
    _root: tempfile::TempDir,
    data: PathBuf,
    state: PathBuf,
    config: PathBuf,
    script: PathBuf,
}

impl Agent {
    /// Directories for one agent and the stand-in `zeroclaw` running `body`.
    fn new(body: &str) -> Agent {
        let root = tempfile::tempdir().unwrap();
        let (data, state, config) = (
            root.path().join("data"),
            root.path().join("state"),
            root.path().join("config"),
        );
        fs::create_dir_all(&config).unwrap();
        let script = root.path().join("zeroclaw");
        fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        Agent {
            _root: root,
            data,
            state,
            config,
            script,
        }
    }

    fn zeroclaw_dir(&self) -> PathBuf {
        self.data.join("zeroclaw")
    }

    fn brain(&self) -> PathBuf {
        self.zeroclaw_dir().join("workspace/memory/brain.db")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(LAUNCHER);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("TENANT_ID", "bob")
            .env("AGENT_PORT", "3999")
            .env("AGENT_TOKEN", AGENT_TOKEN)
            .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
            .env("LLM_API_KEY", LLM_KEY)
            .env("DATA_DIR", &self.data)
            .env("STATE_DIR", &self.state)
            .env("AGENT_CONFIG_DIR", &self.config)
            .env("ZEROCLAW_BIN", &self.script)
            // Names ZeroClaw would let override its config; the launcher must not pass them on.
            .env("HOST", "203.0.113.9")
            .env("PORT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn start(&self) -> Child {
        self.command().spawn().unwrap()
    }
}

/// Polls `cond` until it holds or `limit` passes.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &Child) {
    // SAFETY: kill(2) on the pid of our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn finish(child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < limit,
        "launcher took {:?}",
        started.elapsed()
    );
    out
}

fn seed_state(state: &Path, content: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("seed.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE memories (content TEXT NOT NULL);")
        .unwrap();
    conn.execute("INSERT INTO memories (content) VALUES (?1)", [content])
        .unwrap();
    drop(conn);
    state_file::save(state, "brain.db", &db).unwrap();
}

fn assert_no_secret(text: &str) {
    for secret in [AGENT_TOKEN, BOT_TOKEN, LLM_KEY] {
        assert!(!text.contains(secret), "a secret leaked:\n{text}");
    }
}

const STAND_IN: &str = r#"
cd "$ZEROCLAW_CONFIG_DIR"
cp workspace/memory/brain.db at-start.db 2>/dev/null
echo "$@" > child.args
env > child.env.tmp && mv child.env.tmp child.env
trap 'echo TERM > child.term; exit 0' TERM
while :; do sleep 0.02; done
"#;

#[test]
fn the_child_starts_configured_and_restored_and_a_sigterm_saves_what_is_still_in_the_wal() {
    let agent = Agent::new(STAND_IN);
    fs::write(
        agent.config.join("tenant.json"),
        r#"{"tenant_id":"bob","provider":"llamacpp","api_url":"http://127.0.0.1:9/v1",
            "model":"m1","temperature":0.4,"files":{"SOUL.md":"You are Bob's helper."}}"#,
    )
    .unwrap();
    seed_state(&agent.state, "saved before");
    let child = agent.start();
    let zc = agent.zeroclaw_dir();
    wait_for("the stand-in to start", Duration::from_secs(20), || {
        zc.join("child.env").exists()
    });

    // Everything ZeroClaw reads was in place when it started.
    assert_eq!(memories(&zc.join("at-start.db")), ["saved before"]);
    assert_eq!(
        fs::read_to_string(zc.join("workspace/SOUL.md")).unwrap(),
        "You are Bob's helper."
    );
    let config: toml::Table = fs::read_to_string(zc.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(config["default_model"].as_str(), Some("m1"));
    assert_eq!(config["gateway"]["port"].as_integer(), Some(3999));
    assert_eq!(
        fs::read_to_string(zc.join("child.args")).unwrap().trim(),
        "gateway --host 0.0.0.0 --port 3999"
    );
    let env = fs::read_to_string(zc.join("child.env")).unwrap();
    assert!(
        env.contains(&format!("ZEROCLAW_CONFIG_DIR={}", zc.display())),
        "{env}"
    );
    assert!(
        env.contains(&format!("ZEROCLAW_API_KEY={LLM_KEY}")),
        "{env}"
    );
    for name in [
        "AGENT_TOKEN=",
        "TELEGRAM_BOT_TOKEN=",
        "HOST=",
        "PORT=",
        "LLM_API_KEY=",
    ] {
        assert!(
            !env.lines().any(|l| l.starts_with(name)),
            "{name} reached zeroclaw"
        );
    }
    assert!(!env.contains(AGENT_TOKEN) && !env.contains(BOT_TOKEN));

    // ZeroClaw's writes, all still in brain.db-wal when it is stopped (it never checkpoints).
    let writer = Connection::open(agent.brain()).unwrap();
    writer
        .execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;")
        .unwrap();
    writer
        .execute(
            "INSERT INTO memories (content) VALUES ('said just now')",
            [],
        )
        .unwrap();

    stop(&child);
    let out = finish(child, Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(zc.join("child.term").exists(), "SIGTERM was not forwarded");
    assert_no_secret(&log);
    assert_no_secret(&String::from_utf8_lossy(&out.stdout));
    assert_no_secret(&fs::read_to_string(zc.join("config.toml")).unwrap());

    let saved = state_file::newest(&agent.state, "brain.db")
        .unwrap()
        .unwrap();
    assert_eq!(saved.generation, 2);
    assert_eq!(memories(&saved.path), ["saved before", "said just now"]);
    drop(writer);
}

#[test]
fn zeroclaw_dying_on_its_own_is_a_non_zero_exit_after_a_save() {
    let agent = Agent::new("exit 3");
    // A local memory (nothing saved yet) that the crash must not lose.
    fs::create_dir_all(agent.brain().parent().unwrap()).unwrap();
    let conn = Connection::open(agent.brain()).unwrap();
    conn.execute_batch(
        "CREATE TABLE memories (content TEXT NOT NULL); INSERT INTO memories VALUES ('kept');",
    )
    .unwrap();
    drop(conn);
    let out = finish(agent.start(), Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("exited on its own"), "{log}");
    assert!(log.contains("exit status: 3"), "{log}");
    let saved = state_file::newest(&agent.state, "brain.db")
        .unwrap()
        .unwrap();
    assert_eq!(memories(&saved.path), ["kept"]);
    assert_no_secret(&log);
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_and_the_save_still_happens() {
    let agent = Agent::new(
        r#"cd "$ZEROCLAW_CONFIG_DIR"; trap '' TERM; touch started
while :; do sleep 0.02; done"#,
    );
    seed_state(&agent.state, "memory");
    let child = agent
        .command()
        .env("LAUNCHER_STOP_TIMEOUT_MS", "300")
        .spawn()
        .unwrap();
    let started = agent.zeroclaw_dir().join("started");
    wait_for("the stand-in to start", Duration::from_secs(20), || {
        started.exists()
    });
    stop(&child);
    let out = finish(child, Duration::from_secs(10));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("killing it"), "{log}");
    let saved = state_file::newest(&agent.state, "brain.db")
        .unwrap()
        .unwrap();
    assert_eq!(saved.generation, 2);
    assert_eq!(memories(&saved.path), ["memory"]);
}

#[test]
fn a_bad_environment_or_configuration_never_starts_zeroclaw() {
    let agent = Agent::new(r#"touch "$ZEROCLAW_CONFIG_DIR/started""#);
    let out = agent.command().env_remove("AGENT_TOKEN").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("AGENT_TOKEN is required"), "{log}");

    // A configuration mounted for another tenant.
    fs::write(
        agent.config.join("tenant.json"),
        r#"{"tenant_id":"alice","provider":"llamacpp","model":"m","temperature":0.7}"#,
    )
    .unwrap();
    let out = agent.command().output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("alice"), "{log}");
    assert!(!agent.zeroclaw_dir().join("started").exists());

    // A binary that is not there.
    fs::remove_file(agent.config.join("tenant.json")).unwrap();
    let out = agent
        .command()
        .env("ZEROCLAW_BIN", "/nonexistent/zeroclaw")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("/nonexistent/zeroclaw"), "{log}");
    assert_no_secret(&log);
}
