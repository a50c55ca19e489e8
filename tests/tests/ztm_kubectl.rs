//! `ztm` through kubectl (issue 6): a fake `kubectl` on PATH records its arguments and really does the
//! job — `port-forward` relays a local port to the test's service, `exec ... -- <svc> call ...` runs the
//! real service binary's `call` locally with the pod's env. Asserts the exact kubectl arguments, the
//! end result of every command over both transports, the error messages, and that no port-forward
//! child outlives ztm (after success, failure and SIGINT).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use platform_tests::platform::{bin_path, bot_token, Platform};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(30);

/// The fake kubectl (perl is part of every Debian/Ubuntu base system).
const FAKE_KUBECTL: &str = r#"#!/usr/bin/perl
use strict; use warnings; use IO::Socket::INET; use IO::Select;
open(my $log, '>>', $ENV{FAKE_KUBECTL_LOG}) or die "log: $!";
print $log join(' ', @ARGV), "\n"; close $log;
my @a = @ARGV;
while (@a && ($a[0] eq '--context' || $a[0] eq '-n')) { shift @a; shift @a; }
my $verb = shift @a // '';
my %port = (orchestrator => $ENV{FAKE_ORCH_PORT}, router => $ENV{FAKE_ROUTER_PORT});
my %missing = map { $_ => 1 } split /,/, ($ENV{FAKE_KUBECTL_MISSING} // '');
if ($verb eq 'port-forward') {
    my ($target, $ports) = @a;
    my (undef, $name) = split m{/}, $target;
    my ($local, $remote) = split /:/, $ports;
    if ($missing{$name}) { print STDERR qq{Error from server (NotFound): services "$name" not found\n}; exit 1; }
    open(my $p, '>>', "$ENV{FAKE_KUBECTL_LOG}.pids") or die; print $p "$$\n"; close $p;
    my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $local, Listen => 16, ReuseAddr => 1)
        or die "listen $local: $!";
    $| = 1; print "Forwarding from 127.0.0.1:$local -> $remote\n";
    my $sel = IO::Select->new($srv); my %peer;
    while (1) {
        for my $fh ($sel->can_read) {
            if ($fh == $srv) {
                my $c = $srv->accept or next;
                my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port{$name}) or do { close $c; next };
                $peer{$c} = $u; $peer{$u} = $c; $sel->add($c, $u);
                next;
            }
            my $o = $peer{$fh} or next;
            my $n = sysread($fh, my $buf, 65536);
            if (!$n) { for my $s ($fh, $o) { $sel->remove($s); delete $peer{$s}; close $s; } next; }
            my $off = 0;
            while ($off < $n) { my $w = syswrite($o, $buf, $n - $off, $off); last unless defined $w; $off += $w; }
        }
    }
} elsif ($verb eq 'exec') {
    shift @a if $a[0] eq '-i';
    my (undef, $name) = split m{/}, shift @a;
    shift @a if $a[0] eq '--';
    if ($missing{$name}) { print STDERR qq{Error from server (NotFound): deployments.apps "$name" not found\n}; exit 1; }
    my $bin = shift @a;
    $ENV{PORT} = $port{$bin}; $ENV{API_TOKEN} = $ENV{FAKE_POD_API_TOKEN} // '';
    exec("$ENV{FAKE_BIN_DIR}/$bin", @a) or die "exec: $!";
}
print STDERR "fake kubectl: unsupported: @ARGV\n"; exit 1;
"#;

struct Kube {
    dir: tempfile::TempDir,
}

impl Kube {
    fn new() -> Kube {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("kubectl");
        std::fs::write(&script, FAKE_KUBECTL).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Kube { dir }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// Every kubectl command line so far, then forgets them.
    fn take_calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let _ = std::fs::remove_file(self.log_path());
        text.lines().map(str::to_owned).collect()
    }

    fn port_forward_pids(&self) -> Vec<i32> {
        let path = PathBuf::from(format!("{}.pids", self.log_path().display()));
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ztm_cmd(
    p: &Platform,
    k: &Kube,
    transport: &str,
    args: &[&str],
    path: Option<&str>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_path("ztm"));
    let bin_dir = bin_path("orchestrator").parent().unwrap().to_owned();
    let sys_path = std::env::var("PATH").unwrap_or_default();
    cmd.args([
        "--context",
        "prod",
        "--namespace",
        "tenants",
        "--transport",
        transport,
    ])
    .args(args)
    .env_remove("ZTM_ORCHESTRATOR_URL")
    .env_remove("ZTM_ROUTER_URL")
    .env_remove("ZTM_KUBE_CONTEXT")
    .env_remove("ZTM_NAMESPACE")
    .env("ZTM_API_TOKEN", p.api_token.as_deref().unwrap_or_default())
    .env("NO_COLOR", "1")
    .env(
        "PATH",
        path.map(str::to_owned)
            .unwrap_or(format!("{}:{sys_path}", k.dir.path().display())),
    )
    .env("FAKE_KUBECTL_LOG", k.log_path())
    .env("FAKE_ORCH_PORT", port_of(&p.orchestrator.url()))
    .env("FAKE_ROUTER_PORT", port_of(&p.router.url()))
    .env(
        "FAKE_POD_API_TOKEN",
        p.api_token.as_deref().unwrap_or_default(),
    )
    .env("FAKE_BIN_DIR", bin_dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_owned()
}

async fn run(mut cmd: tokio::process::Command, stdin: &str) -> Run {
    let mut child = cmd.spawn().expect("spawn ztm");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("ztm hung")
        .unwrap();
    Run {
        code: out.status.code().expect("ztm exited by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(p: &Platform, k: &Kube, transport: &str, args: &[&str]) -> Run {
    let r = run(ztm_cmd(p, k, transport, args, None), "").await;
    assert_eq!(
        r.code, 0,
        "ztm --transport {transport} {args:?}: {} {}",
        r.stdout, r.stderr
    );
    r
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// Checks one port-forward call line: `--context prod -n tenants port-forward svc/<svc> <free>:<port>`.
fn assert_port_forward(line: &str, svc: &str, port: u16) {
    let prefix = format!("--context prod -n tenants port-forward svc/{svc} ");
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line:?}"));
    let (local, remote) = rest.split_once(':').unwrap();
    assert!(local.parse::<u16>().is_ok_and(|p| p > 0), "{line}");
    assert_eq!(remote, port.to_string(), "{line}");
}

/// Every command over `transport`; returns after asserting results and the kubectl calls.
async fn every_command(p: &Platform, k: &Kube, transport: &str, id: &str) {
    let token = bot_token();
    let is_exec = transport == "exec";
    let orch_call = |rest: &str| format!("--context prod -n tenants exec {rest}");
    k.take_calls();

    // create with the token from stdin
    let r = run(
        ztm_cmd(
            p,
            k,
            transport,
            &["tenant", "create", id, "-", "-o", "json"],
            None,
        ),
        &format!("{token}\n"),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json(&r)["tenant_id"], id);
    assert!(!r.stdout.contains(&token));
    let calls = k.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    if is_exec {
        assert_eq!(
            calls[0],
            orch_call("-i deploy/orchestrator -- orchestrator call POST /tenants -")
        );
    } else {
        assert_port_forward(&calls[0], "orchestrator", 8080);
    }
    assert!(
        !calls[0].contains(&token),
        "the token never goes on a command line"
    );

    let list = json(&ok(p, k, transport, &["tenant", "list", "-o", "json"]).await);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["tenant_id"] == id),
        "{list}"
    );
    let calls = k.take_calls();
    if is_exec {
        assert_eq!(
            calls,
            [orch_call(
                "deploy/orchestrator -- orchestrator call GET /tenants"
            )]
        );
    }
    let got = json(&ok(p, k, transport, &["tenant", "get", id, "-o", "json"]).await);
    assert_eq!(got["status"], "idle");
    let updated = json(
        &ok(
            p,
            k,
            transport,
            &[
                "tenant",
                "update",
                id,
                "--idle-timeout",
                "700",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(updated["idle_timeout_s"], 700);
    let woke = json(&ok(p, k, transport, &["tenant", "wake", id, "-o", "json"]).await);
    assert!(
        woke["endpoint"].as_str().is_some_and(|e| e.contains(':')),
        "{woke}"
    );
    k.take_calls();

    let chat = ok(p, k, transport, &["chat", id, "hello"]).await;
    assert_eq!(chat.stdout.trim(), "echo: hello (#1)");
    let calls = k.take_calls();
    if is_exec {
        assert_eq!(
            calls,
            [orch_call(&format!(
                "-i deploy/router -- router call POST /chat/{id} -"
            ))]
        );
    } else {
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_port_forward(&calls[0], "router", 9090);
    }
    ok(p, k, transport, &["tenant", "sleep", id]).await;
    assert_eq!(p.tenant_status(id).await, "idle");
    let reg = json(&ok(p, k, transport, &["webhook", "register", id, "-o", "json"]).await);
    assert_eq!(reg["ok"], true);
    ok(p, k, transport, &["webhook", "delete", id]).await;

    // status asks both services: one port-forward each, stopped afterwards
    k.take_calls();
    let status = json(&ok(p, k, transport, &["status", "-o", "json"]).await);
    assert_eq!(status["orchestrator"]["ready"], true, "{status}");
    assert_eq!(status["router"]["ready"], true, "{status}");
    let calls = k.take_calls();
    if !is_exec {
        assert_eq!(calls.len(), 2, "one port-forward per service: {calls:?}");
    }

    let missing = run(
        ztm_cmd(p, k, transport, &["tenant", "get", "nope"], None),
        "",
    )
    .await;
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stderr.trim(), r#"error: tenant "nope" not found"#);

    ok(p, k, transport, &["tenant", "delete", id, "--purge-state"]).await;
    assert!(p.get_tenant(id).await.is_none());
    for pid in k.port_forward_pids() {
        assert!(!alive(pid), "port-forward {pid} outlived ztm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztm_over_kubectl_port_forward_and_exec() {
    let p = Platform::start().await;
    let k = Kube::new();
    every_command(&p, &k, "port-forward", "kpf").await;
    every_command(&p, &k, "exec", "kex").await;
    // auto with no URL set means port-forward
    k.take_calls();
    ok(&p, &k, "auto", &["tenant", "list"]).await;
    let calls = k.take_calls();
    assert_eq!(calls.len(), 1);
    assert_port_forward(&calls[0], "orchestrator", 8080);
    assert!(!k.port_forward_pids().is_empty());
    for pid in k.port_forward_pids() {
        assert!(!alive(pid), "port-forward {pid} outlived ztm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_errors_are_one_clear_line() {
    let p = Platform::start().await;
    let k = Kube::new();
    let empty = tempfile::tempdir().unwrap();
    for transport in ["port-forward", "exec"] {
        let r = run(
            ztm_cmd(
                &p,
                &k,
                transport,
                &["tenant", "list"],
                Some(empty.path().to_str().unwrap()),
            ),
            "",
        )
        .await;
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.starts_with("error: kubectl not found in PATH"),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1);

        let mut cmd = ztm_cmd(&p, &k, transport, &["tenant", "list"], None);
        cmd.env("FAKE_KUBECTL_MISSING", "orchestrator");
        let r = run(cmd, "").await;
        assert_eq!(r.code, 1, "{}", r.stderr);
        let kind = if transport == "exec" {
            "deployment"
        } else {
            "service"
        };
        assert_eq!(
            r.stderr.trim(),
            format!("error: {kind} orchestrator not found in namespace tenants (context prod)")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_stops_on_sigint() {
    let p = Platform::start().await;
    let k = Kube::new();
    // An "orchestrator" that accepts and never answers keeps ztm waiting.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (accepted, mut accepts) = tokio::sync::mpsc::unbounded_channel();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
            let _ = accepted.send(());
        }
    });
    let mut cmd = ztm_cmd(&p, &k, "port-forward", &["tenant", "list"], None);
    cmd.env("FAKE_ORCH_PORT", silent_port.to_string());
    let child = cmd.spawn().unwrap();
    let ztm_pid = child.id().unwrap() as i32;
    // The relay connects upstream once for ztm's readiness probe, then once for the request itself.
    for _ in 0..2 {
        tokio::time::timeout(T, accepts.recv())
            .await
            .expect("ztm's request reaches the service");
    }
    assert!(!k.port_forward_pids().is_empty());
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(ztm_pid, libc::SIGINT) };
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in k.port_forward_pids() {
        assert!(!alive(pid), "port-forward {pid} outlived ztm after SIGINT");
    }
    held.abort();
}
