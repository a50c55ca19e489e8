//! Inbox and delivery rules: one agent for a burst of wakes, per-tenant order, deduplication.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_tests::platform::{agent_pids_under, bot_token, text_update, Opts, Platform};

const T: Duration = Duration::from_secs(60);
const STARTING: &str = "⏳ Starting up...";

/// `N` from `echo: <text> (#N)`.
fn counter(reply: &str) -> Option<u32> {
    reply.strip_suffix(')')?.rsplit_once("(#")?.1.parse().ok()
}

/// Issue 3, test 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_chats_at_once_wake_exactly_one_agent_and_each_gets_one_reply() {
    // A slow start keeps the whole burst in flight while the (single) wake runs.
    let p = Platform::start_with(Opts::default().orchestrator_env("AGENT_STARTUP_MS", 1000)).await;
    p.create_tenant("crowd", &bot_token(), None).await;
    assert_eq!(p.tenant_status("crowd").await, "idle");

    // Every agent pid seen while the burst runs: a second start, however short-lived, shows up here.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (seen, stop, root) = (seen.clone(), stop.clone(), p.root().to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                seen.lock()
                    .unwrap()
                    .extend(agent_pids_under(&root, "crowd"));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let chats: Vec<i64> = (1..=50).map(|i| 1000 + i).collect();
    let posts = chats.iter().enumerate().map(|(i, &chat)| {
        let update = text_update(i as i64 + 1, chat, &format!("m{chat}"));
        let p = &p;
        async move { p.post_update("crowd", &update).await }
    });
    futures::future::join_all(posts).await;

    p.telegram
        .wait_for("a reply in each of the 50 chats", T, |calls| {
            let answered: HashSet<i64> = calls
                .iter()
                .filter(|c| c.method == "sendMessage" && c.text() != Some(STARTING))
                .filter_map(|c| c.chat_id())
                .collect();
            chats.iter().all(|c| answered.contains(c))
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    scanner.join().unwrap();

    let mut numbers = Vec::new();
    let mut starting_total = 0;
    for &chat in &chats {
        let msgs = p.telegram.messages_to(chat);
        let starting = msgs.iter().filter(|m| *m == STARTING).count();
        assert!(
            starting <= 1,
            "chat {chat}: at most one starting message: {msgs:?}"
        );
        starting_total += starting;
        let replies: Vec<&String> = msgs.iter().filter(|m| *m != STARTING).collect();
        assert_eq!(replies.len(), 1, "chat {chat}: exactly one reply: {msgs:?}");
        assert!(
            replies[0].starts_with(&format!("echo: m{chat} (#")),
            "chat {chat} got its own reply: {msgs:?}"
        );
        numbers.push(counter(replies[0]).expect("(#N) in the reply"));
    }
    assert!(starting_total >= 1, "the cold start was announced");
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=50).collect::<Vec<u32>>());

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "exactly one agent process ever: {seen:?}");
    assert_eq!(p.agent_pids("crowd"), seen.into_iter().collect::<Vec<_>>());
}

/// Issue 3, test 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chat_is_answered_in_order_and_a_repeated_update_once() {
    let p = Platform::start().await;
    p.create_tenant("orderly", &bot_token(), None).await;
    let chat = 77;

    for i in 1..=30 {
        p.send_text("orderly", i, chat, &format!("msg-{i}")).await;
    }
    let telegram = &p.telegram;
    let replies_to = move |n: usize| telegram.wait_for_replies(chat, n, T);
    let got = replies_to(30).await;
    let want: Vec<String> = (1..=30).map(|i| format!("echo: msg-{i} (#{i})")).collect();
    assert_eq!(got, want, "replies in the order the updates arrived");

    // Telegram's retries: the same update_id twice at once, then once more after it was answered.
    let dup = text_update(31, chat, "dup");
    futures::future::join(
        p.post_update("orderly", &dup),
        p.post_update("orderly", &dup),
    )
    .await;
    replies_to(31).await;
    p.post_update("orderly", &dup).await;
    // Delivery is ordered per tenant, so a duplicate would be answered before this sentinel.
    p.send_text("orderly", 32, chat, "sentinel").await;
    let got = replies_to(32).await;
    assert_eq!(
        got[30..],
        ["echo: dup (#31)", "echo: sentinel (#32)"],
        "one reply for update 31, and the agent saw it once: {got:?}"
    );
}
