//! Fail closed: on Kubernetes both services refuse to start without `API_TOKEN` or `WEBHOOK_SECRET`
//! (empty counts as missing) unless `ALLOW_INSECURE=true`, with one line naming the variable; locally
//! they start and warn.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use platform_tests::platform::{bin_path, free_port};

/// Runs `bin` with only `env` (plus PATH) until it exits or `timeout`; (exit code, stderr+stdout).
fn run(bin: &str, env: &[(&str, &str)], timeout: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin_path(bin));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir.path())
        .env("PORT", free_port().to_string())
        .env("NO_COLOR", "1")
        .env("LOG_FORMAT", "text")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let end = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

const CLUSTER: (&str, &str) = ("KUBERNETES_SERVICE_HOST", "10.96.0.1");

#[test]
fn on_kubernetes_a_missing_or_empty_secret_stops_both_services() {
    for bin in ["orchestrator", "router"] {
        for (env, var) in [
            (vec![CLUSTER, ("WEBHOOK_SECRET", "w")], "API_TOKEN"),
            (
                vec![CLUSTER, ("API_TOKEN", ""), ("WEBHOOK_SECRET", "w")],
                "API_TOKEN",
            ),
            (
                vec![CLUSTER, ("API_TOKEN", "t"), ("WEBHOOK_SECRET", "  ")],
                "WEBHOOK_SECRET",
            ),
            (
                vec![("RUNTIME", "kubernetes"), ("API_TOKEN", "t")],
                "WEBHOOK_SECRET",
            ),
        ] {
            let (code, out) = run(bin, &env, Duration::from_secs(20));
            assert_eq!(code, Some(1), "{bin} {env:?}: {out}");
            let lines: Vec<&str> = out.lines().filter(|l| l.contains(var)).collect();
            assert_eq!(
                lines.len(),
                1,
                "{bin} {env:?}: one line naming {var}:\n{out}"
            );
            assert!(
                lines[0].contains("missing or empty") && lines[0].contains("ALLOW_INSECURE"),
                "{bin}: {out}"
            );
        }
    }
}

#[test]
fn allow_insecure_or_running_locally_starts_with_a_warning() {
    // The router starts fully; the orchestrator gets past the check to connecting to Kubernetes.
    let (code, out) = run(
        "router",
        &[CLUSTER, ("ALLOW_INSECURE", "true"), ("API_TOKEN", "")],
        Duration::from_secs(3),
    );
    assert_eq!(code, None, "still running: {out}");
    assert!(out.contains("API_TOKEN is not set"), "{out}");
    assert!(out.contains("WEBHOOK_SECRET is not set"), "{out}");

    let (code, out) = run(
        "orchestrator",
        &[
            CLUSTER,
            ("ALLOW_INSECURE", "true"),
            ("ALLOW_SQLITE_REGISTRY", "true"),
            ("REDIS_ADDR", "redis://127.0.0.1:1"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        !out.contains("ALLOW_INSECURE"),
        "past the secrets check: {out}"
    );
    assert!(out.contains("Kubernetes"), "{out}");

    for bin in ["orchestrator", "router"] {
        let (code, out) = run(
            bin,
            &[
                ("RUNTIME", "local"),
                ("API_TOKEN", ""),
                ("WEBHOOK_SECRET", ""),
            ],
            Duration::from_secs(3),
        );
        if bin == "router" {
            assert_eq!(code, None, "{bin} runs locally: {out}");
        }
        assert!(out.contains("API_TOKEN is not set"), "{bin}: {out}");
    }
}
