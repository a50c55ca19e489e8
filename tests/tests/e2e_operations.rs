//! Tenant lifecycle through the real binaries and `ztm` (issue 17): phase and last error, suspend
//! and resume with the users' notice, events, agent logs, describe, a deletion the reconciler ends.

use std::time::Duration;

use platform_tests::platform::{bot_token, wait_until, Opts, Platform};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const STARTING: &str = "⏳ Starting up...";
const PAUSED: &str = "paused by the operator (test notice)";

async fn wait_for_messages(p: &Platform, chat: i64, n: usize) -> Vec<String> {
    p.telegram
        .wait_for(&format!("{n} messages to chat {chat}"), T, |calls| {
            calls
                .iter()
                .filter(|c| c.method == "sendMessage" && c.chat_id() == Some(chat))
                .count()
                >= n
        })
        .await;
    p.telegram.messages_to(chat)
}

fn reasons(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenant_tells_its_users_is_never_woken_and_resume_wakes_it() {
    let p = Platform::start_with(Opts::default().router_env("SUSPENDED_MESSAGE", PAUSED)).await;
    p.create_tenant("pausy", &bot_token(), None).await;
    p.send_text("pausy", 1, 7, "hi").await;
    assert_eq!(
        wait_for_messages(&p, 7, 2).await,
        [STARTING, "echo: hi (#1)"]
    );

    let out = p.ztm(&["tenant", "suspend", "pausy"]).await;
    assert!(out.ok().contains("suspended"), "{out:?}");
    p.wait_for_agents("pausy", 0, Duration::from_secs(5)).await;
    let view = p
        .ztm(&["tenant", "get", "pausy", "-o", "json"])
        .await
        .json();
    assert_eq!(
        (
            &view["status"],
            &view["phase"],
            &view["runtime_status"],
            &view["suspended"]
        ),
        (
            &Value::from("idle"),
            &Value::from("Suspended"),
            &Value::from("suspended"),
            &Value::from(true)
        ),
        "{view}"
    );
    let table = p.ztm(&["tenant", "list"]).await;
    assert!(table.ok().contains("Suspended"), "{table:?}");

    // Its users get the notice, not silence and not "Starting up"; nothing reaches the agent.
    for (i, chat) in [(2, 7), (3, 7), (4, 8)] {
        p.send_text("pausy", i, chat, "anyone?").await;
    }
    let to7 = wait_for_messages(&p, 7, 3).await;
    let to8 = wait_for_messages(&p, 8, 1).await;
    assert_eq!(to8, [PAUSED]);
    assert_eq!(&to7[..3], [STARTING, "echo: hi (#1)", PAUSED]);
    assert!(
        to7[2..].iter().all(|m| m == PAUSED),
        "only the notice while suspended: {to7:?}"
    );
    assert!(to7.len() <= 4, "at most one notice per message: {to7:?}");
    assert!(p.agent_pids("pausy").is_empty(), "never woken");
    let wake = p
        .request(reqwest::Method::POST, &p.orch_url("/wake/pausy"))
        .send()
        .await
        .unwrap();
    assert_eq!(wake.status(), 423);
    let body: Value = wake.json().await.unwrap();
    assert_eq!(body["error"], "tenant \"pausy\" is suspended");
    let woke = p.ztm(&["tenant", "wake", "pausy"]).await;
    assert_eq!(woke.code, 1, "{woke:?}");
    assert!(woke.stderr.contains("is suspended"), "{woke:?}");

    // Resumed: the next message wakes it, and the suspended messages never reached the agent.
    p.ztm(&["tenant", "resume", "pausy"]).await.ok();
    p.send_text("pausy", 5, 9, "back").await;
    let to9 = wait_for_messages(&p, 9, 2).await;
    assert_eq!(to9, [STARTING, "echo: back (#2)"]);

    let events = p
        .ztm(&["tenant", "events", "pausy", "-o", "json"])
        .await
        .json();
    assert_eq!(
        reasons(&events),
        ["Created", "Woke", "Suspended", "Slept", "Resumed", "Woke"],
        "{events}"
    );
    let slept = &events[3]["message"];
    assert!(slept.as_str().unwrap().contains("suspended"), "{slept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_shows_phase_error_its_last_error_events_and_the_agents_output() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("crashing-agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"crashing-agent: cannot open model file\" >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p =
        Platform::start_with(Opts::default().orchestrator_env("AGENT_COMMAND", script.display()))
            .await;
    p.create_tenant("crashy", &bot_token(), None).await;

    let wake = p.ztm(&["tenant", "wake", "crashy"]).await;
    assert_eq!(wake.code, 1, "{wake:?}");
    let view = p
        .ztm(&["tenant", "get", "crashy", "-o", "json"])
        .await
        .json();
    assert_eq!(view["phase"], "Error", "{view}");
    assert_eq!(view["runtime_status"], "failed");
    assert_eq!(view["last_error"]["reason"], "AgentCrashed", "{view}");
    assert!(
        view["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{view}"
    );
    let get = p.ztm(&["tenant", "get", "crashy"]).await;
    assert!(get.ok().contains("last error: AgentCrashed"), "{get:?}");

    let events = p
        .ztm(&["tenant", "events", "crashy", "-o", "json"])
        .await
        .json();
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["reason"], &last["type"]),
        (&Value::from("StartFailed"), &Value::from("Warning"))
    );
    // The agent's own words survive it.
    let logs = p.ztm(&["tenant", "logs", "crashy"]).await;
    assert!(logs.ok().contains("cannot open model file"), "{logs:?}");
    let describe = p.ztm(&["tenant", "describe", "crashy"]).await;
    let text = describe.ok();
    for want in [
        "Phase:",
        "Error",
        "AgentCrashed",
        "StartFailed",
        "Conditions:",
    ] {
        assert!(text.contains(want), "describe lacks {want:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stay_readable_after_sleep_describe_shows_it_all_and_events_can_be_watched() {
    let p = Platform::start().await;
    p.create_tenant("talky", &bot_token(), None).await;
    p.send_text("talky", 1, 3, "hello").await;
    wait_for_messages(&p, 3, 2).await;

    let logs = p.ztm(&["tenant", "logs", "talky", "--tail", "50"]).await;
    assert!(logs.ok().contains("agent listening"), "{logs:?}");
    let one = p.ztm(&["tenant", "logs", "talky", "--tail", "1"]).await;
    assert_eq!(one.ok().lines().count(), 1, "{one:?}");
    let since = p.ztm(&["tenant", "logs", "talky", "--since", "5m"]).await;
    assert_eq!(
        since.code, 1,
        "the local runtime has no line times: {since:?}"
    );
    assert!(since.stderr.contains("use tail"), "{since:?}");

    // `events --watch` prints the history, then what happens next.
    let mut watch = tokio::process::Command::new(platform_tests::platform::bin_path("ztm"))
        .args(["tenant", "events", "talky", "--watch"])
        .env("ZTM_ORCHESTRATOR_URL", p.orchestrator.url())
        .env("ZTM_ROUTER_URL", p.router.url())
        .env("ZTM_API_TOKEN", p.api_token.as_deref().unwrap_or_default())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let printed = printed.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                printed
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait_until("the watch prints the history", T, || async {
        printed.lock().unwrap().contains("Woke")
    })
    .await;
    p.ztm(&["tenant", "sleep", "talky"]).await.ok();
    wait_until("the watch prints the sleep", T, || async {
        printed.lock().unwrap().contains("Slept")
    })
    .await;
    watch.kill().await.unwrap();
    reader.abort();

    // Asleep: the last run's output is still there, including its shutdown.
    let logs = p.ztm(&["tenant", "logs", "talky"]).await;
    assert!(logs.ok().contains("brain.db saved"), "{logs:?}");
    let d = p
        .ztm(&["tenant", "describe", "talky", "-o", "json"])
        .await
        .json();
    assert_eq!(d["tenant"]["phase"], "Sleeping", "{d}");
    assert!(d["tenant"].get("bot_token").is_none() && !d.to_string().contains(&bot_token()));
    assert_eq!(reasons(&d["events"]), ["Created", "Woke", "Slept"], "{d}");
    let text = p.ztm(&["tenant", "describe", "talky"]).await;
    assert!(text.ok().contains("manual sleep"), "{text:?}");
    // The next wake keeps this run's log as the previous one.
    p.ztm(&["tenant", "wake", "talky"]).await.ok();
    let prev = p.ztm(&["tenant", "logs", "talky", "--previous"]).await;
    assert!(prev.ok().contains("brain.db saved"), "{prev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finishes_a_deletion_a_crashed_orchestrator_left_half_done() {
    let p = Platform::start().await;
    p.create_tenant("halfgone", &bot_token(), None).await;
    p.ztm(&["tenant", "wake", "halfgone"]).await.ok();
    assert_eq!(p.agent_pids("halfgone").len(), 1);

    // What a replica that died right after starting the deletion leaves: the record says deleting.
    let db = p.orchestrator.data_dir.join("registry.db");
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute(
        "UPDATE tenants SET deleting = 1 WHERE tenant_id = 'halfgone'",
        [],
    )
    .unwrap();
    drop(c);

    // RECONCILE_INTERVAL_S = 1: the reconciler stops the agent and removes everything.
    wait_until("the deletion finished", T, || async {
        p.get_tenant("halfgone").await.is_none()
    })
    .await;
    p.wait_for_agents("halfgone", 0, Duration::from_secs(5))
        .await;
    assert!(!p.orchestrator.data_dir.join("agents/halfgone").exists());
    assert!(
        !p.telegram.calls_to("deleteWebhook").is_empty(),
        "webhook removed"
    );
    let events = p
        .ztm(&["tenant", "events", "halfgone", "-o", "json"])
        .await
        .json();
    assert_eq!(reasons(&events).last().map(String::as_str), Some("Deleted"));
}
