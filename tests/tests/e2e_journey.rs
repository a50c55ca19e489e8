//! The tenant journey a user sees: create, first message wakes the agent, memory that survives sleep,
//! wake and a restart of both services.

use std::time::Duration;

use platform_tests::platform::{bot_token, Platform};

const T: Duration = Duration::from_secs(30);
const STARTING: &str = "⏳ Starting up...";

/// Issue 3, test 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_registers_webhook_then_first_message_wakes_and_second_is_answered_directly() {
    let p = Platform::start().await;
    let token = bot_token();

    let view = p.create_tenant("alice", &token, None).await;
    assert_eq!(view["tenant_id"], "alice");
    assert_eq!(view["status"], "idle");
    assert_eq!(view["bot_token_set"], true);
    assert!(
        view.get("bot_token").is_none(),
        "view leaks bot_token: {view}"
    );
    assert!(!view.to_string().contains(&token));

    let hooks = p.telegram.webhooks();
    assert_eq!(hooks.len(), 1, "one setWebhook on create: {hooks:?}");
    assert_eq!(hooks[0].token, token);
    assert_eq!(hooks[0].url, p.router_url("/tg/alice"));
    assert_eq!(
        hooks[0].secret_token.as_deref(),
        Some(p.secret_for("alice").as_str())
    );

    p.send_text("alice", 1, 42, "hi").await;
    let msgs = p.telegram.wait_for_messages(42, 2, T).await;
    assert_eq!(msgs, [STARTING, "echo: hi (#1)"]);
    assert!(p
        .telegram
        .calls_to("sendMessage")
        .iter()
        .all(|c| c.token == token));
    assert_eq!(p.tenant_status("alice").await, "running");

    p.send_text("alice", 2, 42, "hi").await;
    let msgs = p.telegram.wait_for_messages(42, 3, T).await;
    assert_eq!(msgs, [STARTING, "echo: hi (#1)", "echo: hi (#2)"]);
    assert_eq!(p.agent_pids("alice").len(), 1);
    assert!(p.logs_containing(&token).is_empty(), "bot token in a log");
}

/// Issue 3, test 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_survives_sleep_wake_and_restart_of_both_services() {
    let mut p = Platform::start().await;
    let token = bot_token();
    p.create_tenant("bob", &token, None).await;

    p.send_text("bob", 1, 7, "one").await;
    p.telegram.wait_for_messages(7, 2, T).await;

    p.sleep_tenant("bob").await;
    assert_eq!(p.tenant_status("bob").await, "idle");
    p.wait_for_agents("bob", 0, T).await;

    p.send_text("bob", 2, 7, "two").await;
    let msgs = p.telegram.wait_for_messages(7, 4, T).await;
    assert_eq!(
        msgs,
        [STARTING, "echo: one (#1)", STARTING, "echo: two (#2)"],
        "one starting message per wake, counter goes on after sleep"
    );

    p.router.terminate(T).await;
    p.orchestrator.terminate(T).await;
    p.orchestrator.start().await;
    p.router.start().await;

    p.send_text("bob", 3, 7, "three").await;
    let msgs = p.telegram.wait_for_messages(7, 5, T).await;
    let last = msgs.last().unwrap();
    let last = if last == STARTING {
        p.telegram.wait_for_messages(7, 6, T).await.pop().unwrap()
    } else {
        last.clone()
    };
    assert_eq!(last, "echo: three (#3)", "counter goes on after a restart");
    assert!(p.agent_pids("bob").len() <= 1);
    assert!(p.logs_containing(&token).is_empty(), "bot token in a log");
}
