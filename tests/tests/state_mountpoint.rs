//! State on the S3 CSI driver's rules (issue 14, point 5): the state directory is a FUSE mount that
//! refuses what Mountpoint for S3 refuses (`platform_tests::mountpoint`), and the agent's memory
//! survives sleep and wake on it, through the reference agent, the local runtime and the fake
//! cluster's kubelet; a save killed or failed midway never replaces the good one. Needs `/dev/fuse`
//! and root (the CI machine has both); without them these tests fail and say so.

mod k8s_support;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::state_file;
use platform_tests::mountpoint::{fuse_available, Fault, Mount, MountOptions};
use platform_tests::platform::{bin_path, bot_token, free_port, Platform};
use serde_json::{json, Value};
use tenant_agent::brain::{self, Brain, BRAIN_FILE};

use k8s_support::*;

const T: Duration = Duration::from_secs(30);
const STARTING: &str = "⏳ Starting up...";

/// The PV's options (`common::k8s::tenant_pv`): deletes allowed, overwrites not.
fn pv_options() -> MountOptions {
    MountOptions {
        allow_delete: true,
        ..MountOptions::default()
    }
}

/// A mount over a fresh backing directory; fails the test loudly when FUSE is unavailable.
fn mount(root: &Path, options: MountOptions) -> Mount {
    if let Err(why) = fuse_available() {
        panic!("this test needs FUSE: {why}");
    }
    Mount::at(&root.join("mnt"), &root.join("bucket"), options).expect("FUSE mount")
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

/// The enforcement is real: each rule of Mountpoint's is refused with the errno Mountpoint returns.
#[test]
fn the_mount_refuses_rename_overwrite_random_writes_deletes_and_early_reads_like_mountpoint() {
    let root = tempfile::tempdir().unwrap();
    let m = mount(root.path(), MountOptions::default());
    let at = |n: &str| m.path().join(n);

    fs::write(at("a"), b"hello").unwrap();
    assert_eq!(fs::read(m.backing().join("a")).unwrap(), b"hello");

    // No rename, whatever the target (Mountpoint: "Function not implemented").
    assert_eq!(errno(fs::rename(at("a"), at("b"))), libc::ENOSYS);
    assert_eq!(names(m.backing()), ["a"]);

    // No overwrite without allow-overwrite, truncating or not; no delete without allow-delete.
    assert_eq!(errno(File::create(at("a"))), libc::EPERM);
    assert_eq!(
        errno(OpenOptions::new().write(true).open(at("a"))),
        libc::EPERM
    );
    assert_eq!(
        errno(OpenOptions::new().append(true).open(at("a"))),
        libc::EPERM
    );
    assert_eq!(errno(fs::remove_file(at("a"))), libc::EPERM);
    assert_eq!(fs::read(at("a")).unwrap(), b"hello");
    // create_new on an existing file is EEXIST, as everywhere.
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(at("a"))
        ),
        libc::EEXIST
    );

    // A file being written is not in the bucket and not readable until it is closed.
    let mut w = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(at("c"))
        .unwrap();
    w.write_all(b"part").unwrap();
    assert!(!m.backing().join("c").exists());
    assert_eq!(errno(File::open(at("c"))), libc::EPERM);
    assert_eq!(errno(fs::remove_file(at("c"))), libc::EPERM);
    // Seek-then-write is refused and aborts the upload: nothing reaches the bucket.
    w.seek(SeekFrom::Start(100)).unwrap();
    assert_eq!(errno(w.write_all(b"x")), libc::EINVAL);
    drop(w);
    assert!(!m.backing().join("c").exists());

    // fsync completes the upload; no write after it.
    let mut w = File::create(at("d")).unwrap();
    w.write_all(b"done").unwrap();
    w.sync_all().unwrap();
    assert_eq!(fs::read(m.backing().join("d")).unwrap(), b"done");
    assert_eq!(errno(w.write_all(b"more")), libc::EINVAL);
    drop(w);

    let ops: Vec<&str> = m.refusals().iter().map(|r| r.op).collect();
    assert!(
        ops.contains(&"rename") && ops.contains(&"out-of-order write"),
        "{ops:?}"
    );

    // The mount options change exactly what they name.
    let root2 = tempfile::tempdir().unwrap();
    let m2 = mount(
        root2.path(),
        MountOptions {
            allow_overwrite: true,
            allow_delete: true,
            ..MountOptions::default()
        },
    );
    fs::write(m2.path().join("a"), b"one").unwrap();
    assert_eq!(
        errno(OpenOptions::new().write(true).open(m2.path().join("a"))),
        libc::EPERM,
        "allow-overwrite still needs O_TRUNC"
    );
    fs::write(m2.path().join("a"), b"two").unwrap();
    assert_eq!(fs::read(m2.backing().join("a")).unwrap(), b"two");
    fs::remove_file(m2.path().join("a")).unwrap();
    assert!(!m2.backing().join("a").exists());
}

/// The save before this fix: `VACUUM INTO` a temp file in the state directory, then rename.
fn old_save(brain_db: &Path, state_dir: &Path) -> Result<(), String> {
    let tmp = state_dir.join(".brain.db.tmp");
    let conn = rusqlite::Connection::open(brain_db).map_err(|e| e.to_string())?;
    conn.execute("VACUUM INTO ?1", [tmp.to_str().unwrap()])
        .map_err(|e| format!("VACUUM INTO: {e}"))?;
    fs::rename(&tmp, state_dir.join(BRAIN_FILE)).map_err(|e| format!("rename: {e}"))
}

/// The reference agent's save and restore work under the rules, where its old save failed.
#[test]
fn the_agents_save_and_restore_work_on_the_mount_where_the_old_rename_save_fails() {
    let root = tempfile::tempdir().unwrap();
    let m = mount(root.path(), pv_options());
    let data = tempfile::tempdir().unwrap();
    let mut b = Brain::open(data.path()).unwrap();
    b.reply(Some("k1"), "one").unwrap();
    b.reply(None, "two").unwrap();
    assert_eq!(b.save(m.path()).unwrap(), 1);
    b.reply(None, "three").unwrap();
    assert_eq!(b.save(m.path()).unwrap(), 2);
    assert_eq!(
        names(m.backing()),
        ["brain.db.0000000002", "brain.db.0000000002.sha256"],
        "one generation and its marker in the bucket, the older one deleted"
    );
    assert!(m.refusals().is_empty(), "{:?}", m.refusals());

    let fresh = tempfile::tempdir().unwrap();
    assert!(brain::restore(m.path(), fresh.path()).unwrap());
    let mut b2 = Brain::open(fresh.path()).unwrap();
    assert_eq!(b2.reply(None, "four").unwrap(), "echo: four (#4)");
    assert_eq!(b2.reply(Some("k1"), "one").unwrap(), "echo: one (#1)");

    drop(b);
    let err = old_save(&data.path().join(BRAIN_FILE), m.path()).unwrap_err();
    assert!(
        !m.refusals().is_empty(),
        "the old save broke no rule? {err}"
    );
    assert!(!m.backing().join(BRAIN_FILE).exists(), "{err}");
    assert_eq!(
        state_file::newest(m.path(), BRAIN_FILE)
            .unwrap()
            .unwrap()
            .generation,
        2,
        "the good generation is still the one restored"
    );
}

/// The real `tenant-agent` on 127.0.0.1 with `STATE_DIR` on the mount.
struct Agent {
    child: Child,
    port: u16,
    http: reqwest::Client,
    log: tempfile::NamedTempFile,
}

const AGENT_TOKEN: &str = "state-mountpoint-agent-token";

impl Agent {
    async fn start(data: &Path, state: &Path) -> Agent {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(bin_path("tenant-agent"))
            .env("TENANT_ID", "memo")
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", port.to_string())
            .env("AGENT_TOKEN", AGENT_TOKEN)
            .env("DATA_DIR", data)
            .env("STATE_DIR", state)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("run tenant-agent (cargo build -p tenant-agent)");
        let agent = Agent {
            child,
            port,
            http: reqwest::Client::new(),
            log,
        };
        let deadline = Instant::now() + T;
        loop {
            let up = agent
                .http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return agent;
            }
            assert!(Instant::now() < deadline, "agent not healthy within {T:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn chat(&self, text: &str) -> String {
        let r: Value = self
            .http
            .post(format!("http://127.0.0.1:{}/webhook", self.port))
            .bearer_auth(AGENT_TOKEN)
            .header("X-Tenant-Id", "memo")
            .json(&json!({ "message": text }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["response"].as_str().unwrap_or_default().to_owned()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit; returns whether it succeeded and what it logged.
    async fn exit(mut self) -> (bool, String) {
        let status = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().unwrap();
            let log = fs::read_to_string(self.log.path()).unwrap_or_default();
            (status.success(), log)
        });
        tokio::time::timeout(T, status)
            .await
            .expect("agent exits")
            .unwrap()
    }
}

/// Gives a good generation 1 holding two messages.
async fn first_life(m: &Mount) {
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(data.path(), m.path()).await;
    assert_eq!(agent.chat("one").await, "echo: one (#1)");
    assert_eq!(agent.chat("two").await, "echo: two (#2)");
    agent.signal(libc::SIGTERM);
    let (ok, log) = agent.exit().await;
    assert!(ok, "{log}");
    assert_eq!(
        state_file::newest(m.backing(), BRAIN_FILE)
            .unwrap()
            .map(|s| s.generation),
        Some(1)
    );
}

/// A second life that grows brain.db past one 64 KiB write, so its save takes several writes; the
/// agent and its data directory.
async fn second_life(m: &Mount) -> (Agent, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(data.path(), m.path()).await;
    let big = "m".repeat(4000);
    for i in 3..=40 {
        assert_eq!(agent.chat(&big).await, format!("echo: {big} (#{i})"));
    }
    (agent, data)
}

/// A save cut by SIGKILL after its first write leaves a partial file in the bucket (the kernel
/// closes it, Mountpoint uploads what it got); the next start restores the previous generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_midway_through_its_save_leaves_the_previous_generation_in_force() {
    let root = tempfile::tempdir().unwrap();
    let m = mount(root.path(), pv_options());
    first_life(&m).await;
    let (agent, _data) = second_life(&m).await;

    m.on_write(|name, offset| {
        if name == "brain.db.0000000002" && offset >= 64 * 1024 {
            Fault::Freeze
        } else {
            Fault::Pass
        }
    });
    agent.signal(libc::SIGTERM);
    assert!(
        tokio::task::block_in_place(|| m.wait_frozen(T)),
        "the save reached its second write"
    );
    agent.signal(libc::SIGKILL);
    m.thaw();
    let (ok, _) = agent.exit().await;
    assert!(!ok, "killed");

    let partial = m.backing().join("brain.db.0000000002");
    assert!(
        partial.exists(),
        "the cut upload landed: {:?}",
        names(m.backing())
    );
    assert!(!m.backing().join("brain.db.0000000002.sha256").exists());
    assert!(fs::metadata(&partial).unwrap().len() < 160 * 1024);

    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(data.path(), m.path()).await;
    assert_eq!(
        agent.chat("after").await,
        "echo: after (#3)",
        "the first life's memory, not the torn second save"
    );
    agent.signal(libc::SIGTERM);
    let (ok, log) = agent.exit().await;
    assert!(ok, "{log}");
    assert_eq!(
        state_file::newest(m.path(), BRAIN_FILE)
            .unwrap()
            .map(|s| s.generation),
        Some(3),
        "the next save goes past the torn generation"
    );
}

/// An upload that fails (the bucket refuses it midway) fails the save and the agent's exit; the
/// previous generation stays the one restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_whose_upload_fails_keeps_the_previous_generation_and_the_agent_exits_non_zero() {
    let root = tempfile::tempdir().unwrap();
    let m = mount(root.path(), pv_options());
    first_life(&m).await;
    let (agent, _data) = second_life(&m).await;

    m.on_write(|name, offset| {
        if name.starts_with("brain.db.") && offset >= 64 * 1024 {
            Fault::Fail(libc::EIO)
        } else {
            Fault::Pass
        }
    });
    agent.signal(libc::SIGTERM);
    let (ok, log) = agent.exit().await;
    assert!(!ok, "a failed save is a failed exit: {log}");
    assert!(
        log.contains("saving brain.db to the state directory"),
        "{log}"
    );
    m.thaw();
    assert_eq!(
        names(m.backing()),
        ["brain.db.0000000001", "brain.db.0000000001.sha256"],
        "nothing of the failed save reached the bucket"
    );

    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(data.path(), m.path()).await;
    assert_eq!(agent.chat("after").await, "echo: after (#3)");
    agent.signal(libc::SIGTERM);
    assert!(agent.exit().await.0);
}

/// The whole platform with the real binaries and the local runtime, the agent's state directory on
/// the enforced mount: memory survives sleep and wake, and nothing the platform did was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_survives_sleep_and_wake_through_the_local_runtime_on_the_enforced_mount() {
    let p = Platform::start().await;
    p.create_tenant("memo", &bot_token(), None).await;
    let bucket = tempfile::tempdir().unwrap();
    let state_dir = p.orchestrator.data_dir.join("agents/memo/state");
    if let Err(why) = fuse_available() {
        panic!("this test needs FUSE: {why}");
    }
    let m = Mount::at(&state_dir, bucket.path(), pv_options()).expect("FUSE mount");

    p.send_text("memo", 1, 9, "one").await;
    p.telegram.wait_for_messages(9, 2, T).await;
    p.sleep_tenant("memo").await;
    p.wait_for_agents("memo", 0, T).await;
    assert!(
        state_file::newest(m.backing(), BRAIN_FILE)
            .unwrap()
            .is_some_and(|s| s.generation > 0),
        "the agent saved through the mount: {:?}",
        names(m.backing())
    );

    p.send_text("memo", 2, 9, "two").await;
    let msgs = p.telegram.wait_for_messages(9, 4, T).await;
    assert_eq!(
        msgs,
        [STARTING, "echo: one (#1)", STARTING, "echo: two (#2)"],
        "the counter goes on after sleep and wake"
    );
    assert!(m.refusals().is_empty(), "{:?}", m.refusals());
    drop(p);
    drop(m);
}

async fn k8s_chat(endpoint: &str, text: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("http://{endpoint}/webhook"))
        .json(&json!({ "message": text }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["response"].as_str().unwrap_or_default().to_owned()
}

/// The fake cluster's kubelet mounts the `s3-state` volume through the enforced filesystem with the
/// PV's mount options: memory survives sleep and wake there, and no rule was broken.
#[tokio::test]
async fn memory_survives_sleep_and_wake_in_the_fake_cluster_on_the_enforced_s3_state_mount() {
    use orchestrator::wake::wake;
    use platform_tests::fake_k8s::FakeK8s;

    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let app = replica(&fake, &shared, T).await;
    let id = shared.add_tenant("kmount").await;

    let first = wake(&app, &id).await.unwrap();
    let mounts = fake.s3_mount_paths(NS, "zeroclaw-kmount");
    assert_eq!(mounts.len(), 1, "s3-state is an enforced mount");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(mounts[0].to_str().unwrap()) && l.contains("fuse")),
        "{} is not a FUSE mount",
        mounts[0].display()
    );
    assert_eq!(k8s_chat(&first.endpoint, "one").await, "echo: one (#1)");

    orchestrator::tenants::sleep(&app, &id).await.unwrap();
    assert!(
        eventually(T, || fake.get("pods", NS, "zeroclaw-kmount").is_none()).await,
        "pod removed after its agent exited"
    );
    let bucket = fake.s3_dir("zeroclaw-tenant-state", "tenants/kmount/");
    assert_eq!(
        names(&bucket),
        ["brain.db.0000000001", "brain.db.0000000001.sha256"]
    );

    let second = wake(&app, &id).await.unwrap();
    assert_eq!(k8s_chat(&second.endpoint, "two").await, "echo: two (#2)");
    assert!(fake.s3_refusals().is_empty(), "{:?}", fake.s3_refusals());
    app.runtime.stop(&id).await.unwrap();
    app.runtime.remove(&id).await.unwrap();
}
