//! Durable before acknowledged: updates the router said 200 to survive the router being killed.

use std::time::Duration;

use platform_tests::platform::{bot_token, Opts, Platform};

const T: Duration = Duration::from_secs(60);
const STARTING: &str = "⏳ Starting up...";

/// Issue 3, test 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_acknowledged_before_a_router_crash_are_answered_once_after_restart() {
    let mut p = Platform::start_with(Opts::default().orchestrator_env("AGENT_DELAY_MS", 300)).await;
    p.create_tenant("durable", &bot_token(), None).await;
    let chat = 11;

    // Warm the agent so the 10 updates go straight to a slow agent.
    p.send_text("durable", 1, chat, "warm").await;
    p.telegram.wait_for_messages(chat, 2, T).await;

    for i in 1..=10 {
        p.send_text("durable", 1 + i, chat, &format!("slow-{i}"))
            .await;
    }
    // 10 × 300 ms of agent work are still ahead: most of the updates exist only in the inbox now.
    p.router.kill();
    let answered_before_crash = p.telegram.messages_to(chat).len() - 2;
    assert!(
        answered_before_crash < 10,
        "the crash must come while updates are pending"
    );

    p.router.start().await;
    p.telegram
        .wait_for("10 slow replies", T, |calls| {
            calls
                .iter()
                .filter(|c| c.method == "sendMessage" && c.chat_id() == Some(chat))
                .filter(|c| c.text().is_some_and(|t| t.starts_with("echo: slow-")))
                .count()
                >= 10
        })
        .await;
    // Anything re-sent by mistake would come before this, as delivery is ordered per tenant.
    p.send_text("durable", 100, chat, "sentinel").await;
    p.telegram
        .wait_for("the sentinel reply", T, |calls| {
            calls
                .iter()
                .any(|c| c.text().is_some_and(|t| t.starts_with("echo: sentinel")))
        })
        .await;

    let replies: Vec<String> = p
        .telegram
        .messages_to(chat)
        .into_iter()
        .filter(|m| m != STARTING)
        .collect();
    // The agent dedupes on X-Idempotency-Key, so a redelivered update is not counted twice either.
    let mut want = vec!["echo: warm (#1)".to_owned()];
    want.extend((1..=10).map(|i| format!("echo: slow-{i} (#{})", i + 1)));
    want.push("echo: sentinel (#12)".to_owned());
    assert_eq!(
        replies, want,
        "each acknowledged update answered exactly once, in order"
    );
    eprintln!("answered before the crash: {answered_before_crash}; replies: {replies:?}");
}
