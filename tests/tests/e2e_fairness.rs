//! Issue 18 through the real binaries: a busy chat is told `Starting up` once, not once per
//! endpoint cache TTL; one tenant flooded past its pending cap gets 429s while another tenant is
//! answered promptly, and the flooded tenant's retried updates are answered once each.

use std::time::{Duration, Instant};

use platform_tests::platform::{bot_token, text_update, wait_until, Opts, Platform};
use reqwest::StatusCode;

const T: Duration = Duration::from_secs(60);
const STARTING: &str = "⏳ Starting up...";

fn starting(p: &Platform, chat: i64) -> usize {
    p.telegram
        .messages_to(chat)
        .iter()
        .filter(|m| *m == STARTING)
        .count()
}

/// Sends `text` as update `n` and waits for the agent's reply to it.
async fn say(p: &Platform, tenant: &str, n: i64, chat: i64, text: &str) {
    p.send_text(tenant, n, chat, text).await;
    let want = format!("echo: {text} (#");
    p.telegram
        .wait_for(&format!("the reply to {text}"), T, |calls| {
            calls.iter().any(|c| {
                c.method == "sendMessage"
                    && c.chat_id() == Some(chat)
                    && c.text().is_some_and(|t| t.starts_with(&want))
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_longer_than_the_cache_ttl_is_told_starting_up_once() {
    // A 2 s endpoint cache: today's 5 minutes, shortened.
    let p = Platform::start_with(Opts::default().router_env("ENDPOINT_CACHE_TTL_S", 2)).await;
    p.create_tenant("chatty", &bot_token(), None).await;
    let chat = 31;
    let mut n = 1;
    say(&p, "chatty", n, chat, "hello").await;
    assert_eq!(starting(&p, chat), 1, "the cold start is announced");

    // Messages closer together than the TTL, for three TTLs: the forwards keep the entry fresh.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(700)).await;
        n += 1;
        say(&p, "chatty", n, chat, &format!("m{n}")).await;
    }
    // A pause longer than the TTL: the entry is gone, the agent is not; nobody is told it starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    n += 1;
    say(&p, "chatty", n, chat, "after a pause").await;
    assert_eq!(
        starting(&p, chat),
        1,
        "one wake, one starting message: {:?}",
        p.telegram.messages_to(chat)
    );
    assert_eq!(p.agent_pids("chatty").len(), 1, "the agent ran throughout");

    // A tenant that really sleeps is announced again, once.
    p.sleep_tenant("chatty").await;
    p.wait_for_status("chatty", "idle", T).await;
    n += 1;
    say(&p, "chatty", n, chat, "good morning").await;
    let messages = p.telegram.messages_to(chat);
    assert_eq!(starting(&p, chat), 2, "{messages:?}");
    let last_start = messages.iter().rposition(|m| m == STARTING).unwrap();
    assert!(
        messages[last_start + 1].starts_with("echo: good morning"),
        "the second wake was announced before its reply: {messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_flooded_past_its_cap_gets_429s_and_another_tenant_is_answered_promptly() {
    // A cap of 10 pending entries; each reply takes 200 ms, so the flood drains at ~5 a second.
    let p = Platform::start_with(
        Opts::default()
            .router_env("INBOX_TENANT_MAX_PENDING", 10)
            .orchestrator_env("AGENT_DELAY_MS", 200),
    )
    .await;
    p.create_tenant("viral", &bot_token(), None).await;
    p.create_tenant("calm", &bot_token(), None).await;
    // Both agents up first: their wakes are not what is measured.
    say(&p, "viral", 1, 1, "warm up").await;
    say(&p, "calm", 1, 2, "warm up").await;

    // The flood: 40 updates (one chat each) at once.
    let flood: Vec<(i64, i64)> = (0..40).map(|i| (100 + i, 5000 + i)).collect();
    let posts = flood.iter().map(|&(u, chat)| {
        let p = &p;
        async move {
            let body = text_update(u, chat, &format!("f{u}")).to_string();
            (u, chat, p.post_tg_raw("viral", body).await)
        }
    });
    let answers = futures::future::join_all(posts).await;
    let refused: Vec<(i64, i64)> = answers
        .iter()
        .filter(|a| a.2 == StatusCode::TOO_MANY_REQUESTS)
        .map(|a| (a.0, a.1))
        .collect();
    let accepted = answers.iter().filter(|a| a.2 == StatusCode::OK).count();
    assert_eq!(
        accepted + refused.len(),
        flood.len(),
        "200 or 429 only: {answers:?}"
    );
    assert!(
        refused.len() >= 20,
        "a cap of 10 refuses most of 40 at once: {accepted} accepted"
    );

    // The calm tenant is answered while the flooded one is at its cap.
    let asked = Instant::now();
    say(&p, "calm", 2, 2, "still there?").await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the calm tenant waited {took:?}"
    );

    // Telegram retries what was refused until the router takes it.
    let mut left = refused.clone();
    let deadline = Instant::now() + T;
    while !left.is_empty() {
        assert!(Instant::now() < deadline, "never accepted: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut still = Vec::new();
        for (u, chat) in left {
            let body = text_update(u, chat, &format!("f{u}")).to_string();
            match p.post_tg_raw("viral", body).await {
                StatusCode::OK => {}
                StatusCode::TOO_MANY_REQUESTS => still.push((u, chat)),
                other => panic!("retry of {u}: {other}"),
            }
        }
        left = still;
    }

    // Every flooded update is answered exactly once, in its own chat.
    wait_until("a reply in each flooded chat", T, || async {
        flood
            .iter()
            .all(|&(_, chat)| !p.telegram.messages_to(chat).is_empty())
    })
    .await;
    for &(u, chat) in &flood {
        let messages = p.telegram.messages_to(chat);
        assert_eq!(messages.len(), 1, "chat {chat}: {messages:?}");
        assert!(
            messages[0].starts_with(&format!("echo: f{u} (#")),
            "chat {chat}: {messages:?}"
        );
    }
    let metrics = p.get_text(&p.router_url("/metrics")).await;
    let over_cap: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"router_webhook_updates_total{result="over_cap"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        over_cap >= refused.len(),
        "over_cap {over_cap}, refused {}",
        refused.len()
    );
}
