//! Telegram as it really behaves (issue 16), through the strict stand-in: long replies, token
//! rotation, flood control, final refusals, forum topics, typing, callback queries, webhook info.

use std::time::{Duration, Instant};

use platform_tests::platform::{bot_token, Opts, Platform};
use platform_tests::telegram::{Call, Limits};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const STARTING: &str = "⏳ Starting up...";

/// Echo replies to `chat` (the starting message left out).
fn replies(p: &Platform, chat: i64) -> Vec<String> {
    p.telegram.replies_to(chat)
}

async fn wait_replies(p: &Platform, chat: i64, n: usize) -> Vec<String> {
    p.telegram.wait_for_replies(chat, n, T).await
}

/// A started tenant whose agent has answered once in `chat` (so its bot token is cached).
async fn warm(p: &Platform, tenant: &str, token: &str, chat: i64) {
    p.create_tenant(tenant, token, None).await;
    p.send_text(tenant, 1, chat, "warm").await;
    wait_replies(p, chat, 1).await;
}

fn refusals_of(p: &Platform, method: &str) -> Vec<Call> {
    p.telegram
        .refusals()
        .into_iter()
        .filter(|c| c.method == method)
        .collect()
}

async fn router_metrics(p: &Platform) -> String {
    p.request(Method::GET, &p.router_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_character_reply_arrives_whole_in_order_cut_at_word_boundaries() {
    let p = Platform::start().await;
    warm(&p, "long", &bot_token(), 5).await;
    let words: Vec<String> = (0..1200).map(|i| format!("wörd{i:04}")).collect();
    let text = words.join(" ");
    assert!(text.chars().count() >= 10_000);
    p.send_text("long", 2, 5, &text).await;

    p.telegram
        .wait_for("the long reply's last part", T, |calls| {
            calls
                .iter()
                .any(|c| c.text().is_some_and(|t| t.ends_with("(#2)")))
        })
        .await;
    let parts: Vec<String> = replies(&p, 5).into_iter().skip(1).collect();
    assert_eq!(parts.len(), 3, "10,000+ characters need three messages");
    for part in &parts {
        let units = part.encode_utf16().count();
        assert!(units <= 4096, "a part of {units} UTF-16 units");
        assert!(
            part.trim() == part,
            "no cut leaves blanks: {:?}",
            &part[..20]
        );
    }
    let got: Vec<&str> = parts.iter().flat_map(|p| p.split(' ')).collect();
    let mut want = vec!["echo:"];
    want.extend(words.iter().map(String::as_str));
    want.push("(#2)");
    assert_eq!(got, want, "the whole reply, in order, no word cut in two");
    assert!(
        p.telegram.refusals().is_empty(),
        "{:?}",
        p.telegram.refusals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_right_after_a_token_rotation_arrives_with_the_new_token() {
    let p = Platform::start().await;
    let (old, new) = (bot_token(), bot_token());
    warm(&p, "rot", &old, 7).await;

    // The operator rotates the token; BotFather revokes the old one at once. The router still
    // has the old one cached.
    let resp = p
        .request(Method::PATCH, &p.orch_url("/tenants/rot"))
        .json(&json!({ "bot_token": new }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    p.telegram.revoke(&old);

    p.send_text("rot", 2, 7, "after rotation").await;
    p.send_text("rot", 3, 7, "and again").await;
    let got = wait_replies(&p, 7, 3).await;
    assert_eq!(
        got[1..],
        ["echo: after rotation (#2)", "echo: and again (#3)"]
    );
    let sent: Vec<Call> = p
        .telegram
        .calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.text().is_some_and(|t| t.starts_with("echo: a")))
        .collect();
    assert!(
        sent.iter().all(|c| c.token == new),
        "sent with the new token"
    );
    let old_refused = refusals_of(&p, "sendMessage")
        .iter()
        .filter(|c| c.token == old)
        .count();
    assert_eq!(
        old_refused, 1,
        "the old token is tried once, never in a loop"
    );
    assert!(p.logs_containing(&new).is_empty() && p.logs_containing(&old).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_as_told_and_the_reply_arrives_once() {
    let p = Platform::start().await;
    warm(&p, "flood", &bot_token(), 9).await;
    p.telegram.flood_next(1, 2);
    p.send_text("flood", 2, 9, "slow down").await;
    let got = wait_replies(&p, 9, 2).await;
    assert_eq!(got, ["echo: warm (#1)", "echo: slow down (#2)"], "once");

    let floods = refusals_of(&p, "sendMessage");
    assert_eq!(floods.len(), 1);
    assert_eq!(floods[0].code, 429);
    let sent = p
        .telegram
        .calls_to("sendMessage")
        .into_iter()
        .find(|c| c.text() == Some("echo: slow down (#2)"))
        .unwrap();
    let waited = sent.at.duration_since(floods[0].at);
    assert!(
        waited >= Duration::from_secs(2),
        "retry_after honoured: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "then sent at once: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_paced_under_the_bots_limit_instead_of_provoking_429s() {
    // A stand-in stricter than Telegram (5 a second per bot), a router pacing at 4.
    let p = Platform::start_with(Opts::default().router_env("TELEGRAM_BOT_PER_S", 4)).await;
    p.telegram.set_limits(Limits {
        bot_per_s: Some(5),
        ..Limits::default()
    });
    p.create_tenant("busy", &bot_token(), None).await;
    let chats: Vec<i64> = (1..=10).map(|i| 300 + i).collect();
    for (i, chat) in chats.iter().enumerate() {
        p.send_text("busy", i as i64 + 1, *chat, "hi").await;
    }
    for chat in &chats {
        wait_replies(&p, *chat, 1).await;
    }
    assert!(
        refusals_of(&p, "sendMessage").is_empty(),
        "no flood control needed: {:?}",
        refusals_of(&p, "sendMessage")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_that_blocked_the_bot_never_delays_another_chat() {
    let p = Platform::start().await;
    warm(&p, "blk", &bot_token(), 20).await;
    p.telegram.block(21);
    p.telegram.forget_chat(22);
    p.send_text("blk", 2, 21, "from a blocker").await;
    p.send_text("blk", 3, 22, "from nowhere").await;
    p.send_text("blk", 4, 20, "still here").await;
    wait_replies(&p, 20, 2).await;

    let refused = refusals_of(&p, "sendMessage");
    assert_eq!(
        refused
            .iter()
            .map(|c| (c.chat_id(), c.code))
            .collect::<Vec<_>>(),
        [(Some(21), 403), (Some(22), 400)],
        "each refusal is final: tried once"
    );
    let answered = p
        .telegram
        .calls_to("sendMessage")
        .into_iter()
        .find(|c| c.text() == Some("echo: still here (#4)"))
        .unwrap();
    let delay = answered.at.duration_since(refused[0].at);
    assert!(
        delay < Duration::from_secs(1),
        "the other chat waited {delay:?}"
    );

    let metrics = router_metrics(&p).await;
    for reason in ["blocked", "chat_not_found"] {
        let line = format!(
            r#"router_telegram_refusals_total{{method="sendMessage",reason="{reason}"}} 1"#
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(p.router.log().contains("bot was blocked by the user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forum_message_is_answered_in_its_topic_quoting_the_user() {
    let p = Platform::start().await;
    p.create_tenant("forum", &bot_token(), None).await;
    let chat = -100_123;
    let update = json!({
        "update_id": 1,
        "message": {
            "message_id": 555, "message_thread_id": 77, "is_topic_message": true,
            "date": 0, "from": {"id": 1, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": chat, "type": "supergroup", "title": "Forum", "is_forum": true},
            "text": "hello topic",
        }
    });
    p.post_update("forum", &update).await;
    wait_replies(&p, chat, 1).await;
    let sent = p.telegram.calls_to("sendMessage");
    let starting = sent.iter().find(|c| c.text() == Some(STARTING)).unwrap();
    assert_eq!(
        starting.body["message_thread_id"], 77,
        "starting in the topic"
    );
    let reply = sent
        .iter()
        .find(|c| c.text() == Some("echo: hello topic (#1)"))
        .unwrap();
    assert_eq!(reply.body["message_thread_id"], 77, "answered in the topic");
    assert_eq!(
        reply.body["reply_parameters"]["message_id"], 555,
        "quotes the user"
    );
    for typing in p.telegram.calls_to("sendChatAction") {
        assert_eq!(typing.body["message_thread_id"], 77);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_shows_while_a_slow_agent_works_and_stops_with_the_reply() {
    let opts = Opts::default()
        .orchestrator_env("AGENT_DELAY_MS", 2000)
        .router_env("TYPING_INTERVAL_MS", 500);
    let p = Platform::start_with(opts).await;
    p.create_tenant("slow", &bot_token(), None).await;
    p.send_text("slow", 1, 30, "think hard").await;
    wait_replies(&p, 30, 1).await;
    let replied = p
        .telegram
        .calls_to("sendMessage")
        .into_iter()
        .find(|c| c.text().is_some_and(|t| t.starts_with("echo:")))
        .unwrap()
        .at;
    let typing: Vec<Instant> = p
        .telegram
        .calls_to("sendChatAction")
        .into_iter()
        .filter(|c| c.chat_id() == Some(30) && c.body["action"] == "typing")
        .map(|c| c.at)
        .collect();
    assert!(
        typing.len() >= 3,
        "renewed while the agent works: {}",
        typing.len()
    );
    // Absence cannot be waited for: give a renewal three chances to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = p
        .telegram
        .calls_to("sendChatAction")
        .iter()
        .filter(|c| c.at > replied)
        .count();
    assert_eq!(after, 0, "typing stops when the reply goes out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_queries_are_answered_and_only_text_captions_and_data_are_forwarded() {
    let p = Platform::start().await;
    warm(&p, "cb", &bot_token(), 40).await;
    let button = |id: i64, cb: &str, data: Option<&str>| {
        let mut q = json!({"id": cb, "from": {"id": 40, "is_bot": false, "first_name": "U"},
            "chat_instance": "1", "message": {"message_id": 3, "date": 0, "chat": {"id": 40, "type": "private"}}});
        if let Some(d) = data {
            q["data"] = json!(d);
        }
        json!({"update_id": id, "callback_query": q})
    };
    p.post_update("cb", &button(2, "cbq-yes", Some("yes")))
        .await;
    p.post_update("cb", &button(3, "cbq-empty", None)).await;
    let edited = json!({"update_id": 4, "edited_message": {"message_id": 1, "date": 0,
        "chat": {"id": 40, "type": "private"}, "text": "warm (edited)"}});
    p.post_update("cb", &edited).await;
    let sticker = json!({"update_id": 5, "message": {"message_id": 5, "date": 0,
        "chat": {"id": 40, "type": "private"}, "sticker": {"file_id": "x"}}});
    p.post_update("cb", &sticker).await;
    let photo = json!({"update_id": 6, "message": {"message_id": 6, "date": 0,
        "chat": {"id": 40, "type": "private"}, "photo": [], "caption": "a caption"}});
    p.post_update("cb", &photo).await;
    p.send_text("cb", 7, 40, "sentinel").await;

    let got = wait_replies(&p, 40, 4).await;
    assert_eq!(
        got,
        [
            "echo: warm (#1)",
            "echo: yes (#2)",
            "echo: a caption (#3)",
            "echo: sentinel (#4)"
        ],
        "edits and stickers skipped, in order"
    );
    let answered: Vec<Value> = p
        .telegram
        .calls_to("answerCallbackQuery")
        .into_iter()
        .map(|c| c.body["callback_query_id"].clone())
        .collect();
    assert_eq!(answered, [json!("cbq-yes"), json!("cbq-empty")]);
    let hook = &p.telegram.calls_to("setWebhook")[0];
    assert_eq!(
        hook.body["allowed_updates"],
        json!(["message", "callback_query"])
    );
}

/// Runs `ztm` against the platform; returns (exit code, stdout, stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztm_webhook_info_explains_a_misrouted_bot() {
    let p = Platform::start().await;
    let token = bot_token();
    p.create_tenant("hook", &token, None).await;
    let expected = p.router_url("/tg/hook");

    let r = p.ztm(&["webhook", "info", "hook", "-o", "json"]).await;
    let (code, out, err) = (r.code, r.stdout, r.stderr);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["url"], expected.as_str());
    assert_eq!(v["url_matches"], true);
    assert_eq!(v["allowed_updates_match"], true);

    // Someone pointed the bot elsewhere; Telegram piles up updates it cannot deliver.
    p.telegram
        .point_webhook(&token, "https://old-cluster.example/tg/hook");
    let an_hour_ago = chrono::Utc::now().timestamp() - 3600;
    p.telegram
        .set_webhook_errors(&token, 12, Some((an_hour_ago, "Connection refused")));
    let r = p.ztm(&["webhook", "info", "hook"]).await;
    let (code, out, err) = (r.code, r.stdout, r.stderr);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "https://old-cluster.example/tg/hook",
        &expected,
        "MISROUTED",
        "ztm webhook register hook",
        "pending updates:  12",
        "Connection refused (1h ago)",
        "max connections:  40",
    ] {
        assert!(out.contains(needle), "{needle:?} in:\n{out}");
    }
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "token never shown"
    );
    assert!(p.logs_containing(&token).is_empty());

    let anonymous = p
        .anonymous(Method::GET, &p.router_url("/admin/webhook/hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let r = p.ztm(&["webhook", "info", "nobody"]).await;
    let (code, err) = (r.code, r.stderr);
    assert_eq!((code, err.trim()), (1, "error: tenant not found"));
}
