//! Background loops of the orchestrator: the idle controller and the reconciler act with no request.

use std::time::Duration;

use platform_tests::platform::{bot_token, Platform};

const T: Duration = Duration::from_secs(30);
const STARTING: &str = "⏳ Starting up...";

async fn wait_for_replies(p: &Platform, chat: i64, n: usize) -> Vec<String> {
    p.telegram.wait_for_replies(chat, n, T).await
}

/// Issue 3, test 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_stops_the_agent_without_a_request_and_next_message_wakes_it() {
    let p = Platform::start().await;
    p.create_tenant("sleepy", &bot_token(), Some(10)).await;

    p.send_text("sleepy", 1, 5, "hi").await;
    assert_eq!(wait_for_replies(&p, 5, 1).await, ["echo: hi (#1)"]);
    assert_eq!(p.tenant_status("sleepy").await, "running");
    assert_eq!(p.agent_pids("sleepy").len(), 1);

    // idle_timeout_s = 10 and IDLE_CHECK_INTERVAL_S = 1: stopped within ~11 s of the last activity.
    p.wait_for_status("sleepy", "idle", T).await;
    p.wait_for_agents("sleepy", 0, Duration::from_secs(5)).await;
    assert!(p
        .orchestrator
        .log()
        .contains("idle check: terminating idle tenant"));
    let view = p.get_tenant("sleepy").await.unwrap();
    assert_eq!(view["pod_ip"], "", "address cleared when idle: {view}");

    let starts_before = p.telegram.messages_to(5).len();
    p.send_text("sleepy", 2, 5, "again").await;
    let got = wait_for_replies(&p, 5, 2).await;
    assert_eq!(got, ["echo: hi (#1)", "echo: again (#2)"]);
    assert_eq!(
        p.telegram.messages_to(5)[starts_before],
        STARTING,
        "the wake after idle sends a starting message"
    );
    assert_eq!(p.tenant_status("sleepy").await, "running");
}

/// Issue 3, test 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_reset_to_idle_by_the_reconciler_and_next_message_is_answered() {
    let p = Platform::start().await;
    p.create_tenant("crashy", &bot_token(), None).await;

    p.send_text("crashy", 1, 9, "hi").await;
    assert_eq!(wait_for_replies(&p, 9, 1).await, ["echo: hi (#1)"]);
    let pids = p.agent_pids("crashy");
    assert_eq!(pids.len(), 1);
    if let Some((pid, _port)) = p.agent_pid_file("crashy") {
        assert_eq!(pid, pids[0], "agent.pid names the running agent");
    }

    // SAFETY: kill(2) on the agent process this test's platform started.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    p.wait_for_agents("crashy", 0, Duration::from_secs(5)).await;

    // RECONCILE_INTERVAL_S = 1: no request is needed for the registry to catch up.
    p.wait_for_status("crashy", "idle", T).await;
    p.orchestrator
        .wait_for_log("reconciler: pod missing, resetting state", 1, T)
        .await;

    p.send_text("crashy", 2, 9, "back?").await;
    let got = wait_for_replies(&p, 9, 2).await;
    // A SIGKILLed agent never saved its state, so the count may restart; the message is answered.
    assert!(
        got[1].starts_with("echo: back? (#"),
        "answered after the crash: {got:?}"
    );
    assert_eq!(p.tenant_status("crashy").await, "running");
    assert_eq!(p.agent_pids("crashy").len(), 1);
}
