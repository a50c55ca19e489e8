//! Issue 15: outages of the orchestrator or of Redis never drop an acknowledged update; a full
//! Redis refuses updates (503) instead of losing them; updates for unknown tenants are refused
//! before anything is written; Redis needs its password, and a wrong one fails start-up clearly.

use std::process::{Command, Stdio};
use std::time::Duration;

use platform_tests::backends::Redis;
use platform_tests::platform::{bin_path, bot_token, free_port, text_update, Opts, Platform};
use reqwest::{Method, StatusCode};

const T: Duration = Duration::from_secs(60);
const STARTING: &str = "⏳ Starting up...";
const DELAYED: &str = "delayed-by-an-outage";

/// Router settings that make today's wake budget tiny (2 attempts, ~0.1 s), so that an outage of
/// a few seconds outlasts it many times over.
fn small_wake_budget(opts: Opts) -> Opts {
    opts.router_env("WAKE_ATTEMPTS", 2)
        .router_env("RETRY_BACKOFF_MS", 50)
        .router_env("RETRY_BACKOFF_MAX_MS", 300)
        .router_env("BOT_TOKEN_CACHE_S", 3600)
        .router_env("DELAYED_MESSAGE", DELAYED)
}

/// `router_wakes_total{result="unavailable"}`: wake attempts that met an outage.
async fn outage_wakes(p: &Platform) -> u64 {
    let text = p
        .request(Method::GET, &p.router_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"router_wakes_total{result="unavailable"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Warms the tenant (so the router holds its bot token), then puts it to sleep: the next update
/// needs a wake.
async fn sleeping_tenant_with_cached_token(p: &Platform, tenant: &str, chat: i64) {
    p.create_tenant(tenant, &bot_token(), None).await;
    p.send_text(tenant, 1, chat, "warm").await;
    p.telegram.wait_for_messages(chat, 2, T).await;
    p.sleep_tenant(tenant).await;
}

/// Posts `during-2..=7` alternately to `chats`, each acknowledged with a 200.
async fn post_during_outage(p: &Platform, tenant: &str, chats: [i64; 2]) -> Vec<(i64, String)> {
    let mut sent = Vec::new();
    for i in 2..=7 {
        let chat = chats[i as usize % 2];
        let text = format!("during-{i}");
        p.send_text(tenant, i, chat, &text).await;
        sent.push((chat, text));
    }
    sent
}

/// Waits until every chat was told it is delayed and the router retried far past its old budget.
async fn wait_out_the_budget(p: &Platform, chats: [i64; 2]) {
    p.telegram
        .wait_for("each waiting chat told it is delayed", T, |calls| {
            chats.iter().all(|&chat| {
                calls
                    .iter()
                    .any(|c| c.chat_id() == Some(chat) && c.text() == Some(DELAYED))
            })
        })
        .await;
    let deadline = tokio::time::Instant::now() + T;
    while outage_wakes(p).await < 10 {
        assert!(tokio::time::Instant::now() < deadline, "wakes not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each `(chat, text)` got its echo.
async fn wait_answered(p: &Platform, sent: &[(i64, String)]) {
    p.telegram
        .wait_for("a reply to every acknowledged update", T, |calls| {
            sent.iter().all(|(chat, text)| {
                calls.iter().any(|c| {
                    c.chat_id() == Some(*chat)
                        && c.text()
                            .is_some_and(|t| t.starts_with(&format!("echo: {text} ")))
                })
            })
        })
        .await;
}

/// Every update of `sent` answered exactly once, each chat told once it was delayed, none failed.
async fn assert_each_answered_once(p: &Platform, tenant: &str, sent: &[(i64, String)]) {
    wait_answered(p, sent).await;
    // Delivery is ordered per tenant: anything re-sent by mistake comes before this reply.
    p.send_text(tenant, 100, sent[0].0, "sentinel").await;
    wait_answered(p, &[(sent[0].0, "sentinel".to_owned())]).await;
    for chat in sent
        .iter()
        .map(|(c, _)| *c)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let got = p.telegram.messages_to(chat);
        for (_, text) in sent.iter().filter(|(c, _)| *c == chat) {
            let n = got
                .iter()
                .filter(|m| m.starts_with(&format!("echo: {text} ")))
                .count();
            assert_eq!(n, 1, "{text} answered {n} times in chat {chat}: {got:?}");
        }
        assert_eq!(
            got.iter().filter(|m| *m == DELAYED).count(),
            1,
            "chat {chat} told once that the bot is delayed: {got:?}"
        );
        assert!(
            !got.iter().any(|m| m.contains("Failed to start")),
            "chat {chat}: {got:?}"
        );
    }
}

/// An orchestrator outage far longer than the wake retry budget: the updates that got a 200 during
/// it are kept and answered once when it is back (they used to get "❌ Failed to start" and be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_outage_longer_than_the_wake_budget_loses_no_acknowledged_update() {
    let mut p = Platform::start_with(small_wake_budget(Opts::default())).await;
    let chats = [41, 42];
    sleeping_tenant_with_cached_token(&p, "patient", chats[0]).await;

    p.orchestrator.terminate(Duration::from_secs(40)).await;
    let sent = post_during_outage(&p, "patient", chats).await;
    wait_out_the_budget(&p, chats).await;
    p.orchestrator.start().await;

    assert_each_answered_once(&p, "patient", &sent).await;
    let messages = p.telegram.messages_to(chats[1]);
    assert_eq!(messages[..2], [STARTING, DELAYED], "{messages:?}");
}

/// The same for an outage of Redis under the orchestrator (its wake lock): `/wake` answers 503,
/// which is an outage, not a failed start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_the_wake_lock_loses_no_acknowledged_update() {
    let mut redis = Redis::start().await;
    let p = Platform::start_with(small_wake_budget(
        Opts::default().orchestrator_env("REDIS_ADDR", redis.addr()),
    ))
    .await;
    let chats = [51, 52];
    sleeping_tenant_with_cached_token(&p, "locked", chats[0]).await;

    redis.stop();
    let sent = post_during_outage(&p, "locked", chats).await;
    wait_out_the_budget(&p, chats).await;
    assert!(
        p.router.log().contains("wake lock"),
        "the wakes failed on the lock"
    );
    redis.restart().await;

    assert_each_answered_once(&p, "locked", &sent).await;
}

/// A Redis at its `maxmemory` (with `noeviction`) refuses the router's writes: Telegram gets 503s
/// (and retries), the router stays up, and every update that got a 200 is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_answers_503_and_loses_no_acknowledged_update() {
    let redis = Redis::start_with_maxmemory("8mb").await;
    let p = Platform::start_with(Opts::default().router_env("REDIS_ADDR", redis.addr())).await;
    p.create_tenant("full", &bot_token(), None).await;
    let chat = 61;
    p.send_text("full", 1, chat, "before").await;
    // Delivered and acknowledged first: a delivery still in flight frees its stream and its claim
    // after the fill, which makes room for the very updates this test needs refused.
    wait_answered(&p, &[(chat, "before".to_owned())]).await;
    let mut c = redis.client().await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let live: i64 = redis::cmd("EXISTS")
            .arg("router:inbox:stream:full")
            .arg("router:inbox:lease:full")
            .query_async(&mut c)
            .await
            .unwrap();
        if live == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "update 1 never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Fill Redis until it refuses a write, in big then small pieces (a refused big write's own
    // buffer is freed after it, leaving room).
    let mut filler = 0;
    for size in [256 * 1024, 1024] {
        let chunk = vec![b'x'; size];
        loop {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("filler:{filler}"))
                .arg(&chunk)
                .query_async(&mut c)
                .await;
            match r {
                Ok(()) => filler += 1,
                Err(e) if e.to_string().contains("OOM") => break,
                Err(e) => panic!("filling redis: {e}"),
            }
            assert!(filler < 20_000, "redis never refused a write");
        }
    }

    let mut acknowledged = vec![(1, "before".to_owned())];
    let mut refused = Vec::new();
    for u in 2..=21 {
        let text = format!("while-full-{u}");
        let status = p
            .post_tg_raw("full", text_update(u, chat, &text).to_string())
            .await;
        match status {
            StatusCode::OK => acknowledged.push((u, text)),
            StatusCode::SERVICE_UNAVAILABLE => refused.push((u, text)),
            other => panic!("update {u} while Redis is full: {other}"),
        }
    }
    assert!(!refused.is_empty(), "a full Redis must refuse updates");
    let health = p
        .anonymous(Method::GET, &p.router_url("/healthz"))
        .send()
        .await
        .expect("the router is still up");
    assert_eq!(health.status(), StatusCode::OK);

    // Room again: Telegram retries what was refused.
    for i in 0..filler {
        redis::cmd("DEL")
            .arg(format!("filler:{i}"))
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    for (u, text) in &refused {
        p.post_update("full", &text_update(*u, chat, text)).await;
        acknowledged.push((*u, text.clone()));
    }
    let sent: Vec<(i64, String)> = acknowledged.into_iter().map(|(_, t)| (chat, t)).collect();
    wait_answered(&p, &sent).await;
    p.send_text("full", 100, chat, "sentinel").await;
    wait_answered(&p, &[(chat, "sentinel".to_owned())]).await;
    let got = p.telegram.messages_to(chat);
    for (_, text) in &sent {
        let n = got
            .iter()
            .filter(|m| m.starts_with(&format!("echo: {text} ")))
            .count();
        assert_eq!(n, 1, "{text} answered {n} times: {got:?}");
    }
}

/// Without `WEBHOOK_SECRET`, an update for a tenant that does not exist is refused with 404 and
/// leaves nothing behind (no entry, no dedupe mark); a tenant created right after is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_secret_updates_for_unknown_tenants_are_refused_unwritten() {
    let redis = Redis::start().await;
    let p = Platform::start_with(Opts {
        webhook_secret: None,
        ..Opts::default().router_env("REDIS_ADDR", redis.addr())
    })
    .await;
    for u in 1..=3 {
        let status = p
            .post_tg_raw("ghost", text_update(u, 71, "forged").to_string())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "update {u}");
    }
    let mut c = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("router:inbox:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        keys.is_empty(),
        "nothing written for an unknown tenant: {keys:?}"
    );

    // Created now: accepted as soon as the short negative answer is forgotten (Telegram retries
    // a refused update), and update 1 is new, not a duplicate of the forged one.
    p.create_tenant("ghost", &bot_token(), None).await;
    let created = tokio::time::Instant::now();
    loop {
        let status = p
            .post_tg_raw("ghost", text_update(1, 71, "real").to_string())
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            created.elapsed() < Duration::from_secs(3),
            "a new tenant refused for {:?}",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = p.telegram.wait_for_messages(71, 2, T).await;
    assert!(got[1].starts_with("echo: real "), "{got:?}");
}

/// A wrong Redis password stops each service at start-up with an error that says so and does not
/// print the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_fails_start_up_without_printing_it() {
    let redis = Redis::start().await;
    let wrong = "not-the-password-4f9c1a";
    let addr = format!("redis://:{wrong}@{}", redis.host_port());
    for service in ["router", "orchestrator"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin_path(service));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", free_port().to_string())
            .env("DATA_DIR", dir.path())
            .env("REDIS_ADDR", &addr)
            .env("RUNTIME", "local")
            .env("LOCAL_MODE", "true")
            .env("LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn");
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .unwrap_or_else(|_| panic!("{service} kept running with a wrong Redis password"))
        .unwrap()
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{service}: {text}");
        assert!(
            text.contains("redis refused the credentials"),
            "{service}: {text}"
        );
        assert!(
            !text.contains(wrong),
            "{service} printed the password: {text}"
        );
    }
}
