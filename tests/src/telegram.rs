//! A strict Telegram Bot API stand-in that records every call, so tests can assert what users would see.
//!
//! Runs in-process on 127.0.0.1 and answers `/bot{token}/{method}` like Telegram does, rules included:
//! unknown methods 404, a malformed token 404, a revoked one 401, each method's required fields
//! (400 with Telegram's description), `sendMessage` text of 1..4096 UTF-16 units, blocked chats 403,
//! unknown chats 400, flood control (429 with `parameters.retry_after`) when a bot or chat goes over
//! its rate ([`Limits`], Telegram's by default). Accepted calls are in [`FakeTelegram::calls`], refused
//! ones in [`FakeTelegram::refusals`]. Failures can also be injected per method.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// The router's "starting" notice to a chat whose agent is waking: not a reply.
pub const STARTING: &str = "⏳ Starting up...";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub token: String,
    pub method: String,
    pub body: Value,
    pub at: Instant,
    /// 200 for an accepted call, else the `error_code` answered.
    pub code: u16,
    /// Telegram's `description` of a refusal.
    pub description: Option<String>,
}

/// Flood control: how many accepted `sendMessage`s a bot or chat may get in a sliding window before
/// a 429; `None` lifts the limit. The defaults are Telegram's documented ones (30 a second per bot,
/// 20 a minute per group); private chats' "about one a second" is advice Telegram does not enforce
/// as a hard limit, so it is off unless a test sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bot_per_s: Option<usize>,
    pub chat_per_s: Option<usize>,
    pub group_per_min: Option<usize>,
    /// `parameters.retry_after` of the 429s these limits answer.
    pub retry_after_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bot_per_s: Some(30),
            chat_per_s: None,
            group_per_min: Some(20),
            retry_after_s: 1,
        }
    }
}

/// A bot's webhook as `getWebhookInfo` reports it.
#[derive(Debug, Clone, Default)]
struct Hook {
    url: String,
    allowed_updates: Option<Value>,
    max_connections: Option<u64>,
    pending_update_count: u64,
    last_error: Option<(i64, String)>,
}

/// What makes calls fail, set by the test.
#[derive(Default)]
struct Rules {
    limits: Limits,
    revoked: HashSet<String>,
    blocked: HashSet<i64>,
    unknown_chats: HashSet<i64>,
    /// (how many of the next sendMessages get a 429, with which retry_after).
    flood_next: (usize, u64),
    hooks: HashMap<String, Hook>,
}

impl Call {
    pub fn chat_id(&self) -> Option<i64> {
        self.body.get("chat_id").and_then(Value::as_i64)
    }

    pub fn text(&self) -> Option<&str> {
        self.body.get("text").and_then(Value::as_str)
    }
}

/// A `setWebhook` call: where the bot was pointed and with which secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub token: String,
    pub url: String,
    pub secret_token: Option<String>,
}

/// Run by the fake on a call before it answers (see [`FakeTelegram::before_answering`]).
pub type CallHook = Arc<dyn Fn(Call) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    refusals: Mutex<Vec<Call>>,
    rules: Mutex<Rules>,
    /// Method → what to do on an accepted call of it before answering.
    call_hooks: Mutex<HashMap<String, CallHook>>,
    /// Method → how many of the next calls fail with a 500.
    failures: Mutex<HashMap<String, usize>>,
    changed: Notify,
}

pub struct FakeTelegram {
    state: Arc<State>,
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl FakeTelegram {
    /// Starts the fake on a free port; it stops when dropped.
    pub async fn start() -> FakeTelegram {
        let state = Arc::new(State::default());
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/{bot}/{method}", web::post().to(handle))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("fake telegram: bind");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeTelegram {
            state,
            url: format!("http://{addr}"),
            handle,
        }
    }

    /// The base URL to give the services as `TELEGRAM_API_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Accepted calls, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Refused calls (4xx, 429 and injected 500s), in order.
    pub fn refusals(&self) -> Vec<Call> {
        self.state.refusals.lock().unwrap().clone()
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.state.rules.lock().unwrap()
    }

    pub fn set_limits(&self, limits: Limits) {
        self.rules().limits = limits;
    }

    /// The next `n` `sendMessage`s get `429 Too Many Requests` with this `retry_after`.
    pub fn flood_next(&self, n: usize, retry_after_s: u64) {
        self.rules().flood_next = (n, retry_after_s);
    }

    /// BotFather revoked `token`: every call with it is `401 Unauthorized`.
    pub fn revoke(&self, token: &str) {
        self.rules().revoked.insert(token.to_owned());
    }

    /// The user of `chat_id` blocked the bot: `403 Forbidden: bot was blocked by the user`.
    pub fn block(&self, chat_id: i64) {
        self.rules().blocked.insert(chat_id);
    }

    /// No such chat: `400 Bad Request: chat not found`.
    pub fn forget_chat(&self, chat_id: i64) {
        self.rules().unknown_chats.insert(chat_id);
    }

    /// Points the bot's webhook at `url`, as another deployment (or a curl) would.
    pub fn point_webhook(&self, token: &str, url: &str) {
        self.rules().hooks.entry(token.to_owned()).or_default().url = url.to_owned();
    }

    /// What Telegram reports about delivering to the bot's webhook.
    pub fn set_webhook_errors(&self, token: &str, pending: u64, last_error: Option<(i64, &str)>) {
        let mut rules = self.rules();
        let hook = rules.hooks.entry(token.to_owned()).or_default();
        hook.pending_update_count = pending;
        hook.last_error = last_error.map(|(at, m)| (at, m.to_owned()));
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Texts accepted by `sendMessage` for one chat, in the order they arrived.
    pub fn messages_to(&self, chat_id: i64) -> Vec<String> {
        self.calls_to("sendMessage")
            .iter()
            .filter(|c| c.chat_id() == Some(chat_id))
            .filter_map(|c| c.text().map(str::to_owned))
            .collect()
    }

    /// The replies sent to one chat, in order: its texts without the [`STARTING`] notice.
    pub fn replies_to(&self, chat_id: i64) -> Vec<String> {
        self.messages_to(chat_id)
            .into_iter()
            .filter(|m| m != STARTING)
            .collect()
    }

    pub fn webhooks(&self) -> Vec<Webhook> {
        self.calls_to("setWebhook")
            .into_iter()
            .map(|c| Webhook {
                url: c.body["url"].as_str().unwrap_or_default().to_owned(),
                secret_token: c.body["secret_token"].as_str().map(str::to_owned),
                token: c.token,
            })
            .collect()
    }

    /// Makes the next `n` calls of `method` fail with a 500 (Telegram-style error body).
    pub fn fail_next(&self, method: &str, n: usize) {
        self.state
            .failures
            .lock()
            .unwrap()
            .insert(method.to_owned(), n);
    }

    /// Runs `hook` on every successful call of `method` before answering it: Telegram acts on a
    /// `setWebhook` (delivers pending updates to the new URL) before its answer reaches the caller.
    pub fn before_answering(&self, method: &str, hook: CallHook) {
        self.state
            .call_hooks
            .lock()
            .unwrap()
            .insert(method.to_owned(), hook);
    }

    /// Waits until `predicate` holds for the recorded calls; panics with `what` and the calls after `timeout`.
    pub async fn wait_for<F>(&self, what: &str, timeout: Duration, predicate: F) -> Vec<Call>
    where
        F: Fn(&[Call]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            let calls = self.calls();
            if predicate(&calls) {
                return calls;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let calls = self.calls();
                if predicate(&calls) {
                    return calls;
                }
                panic!(
                    "timed out after {timeout:?} waiting for {what}; telegram calls: {:#?}",
                    summary(&calls)
                );
            }
        }
    }

    /// Waits until `chat_id` received at least `n` replies ([`STARTING`] left out) and returns them.
    pub async fn wait_for_replies(&self, chat_id: i64, n: usize, timeout: Duration) -> Vec<String> {
        self.wait_for(
            &format!("{n} replies to chat {chat_id}"),
            timeout,
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.method == "sendMessage" && c.chat_id() == Some(chat_id))
                    .filter(|c| c.text().is_some_and(|t| t != STARTING))
                    .count()
                    >= n
            },
        )
        .await;
        self.replies_to(chat_id)
    }

    /// Waits until `chat_id` received at least `n` messages and returns them.
    pub async fn wait_for_messages(
        &self,
        chat_id: i64,
        n: usize,
        timeout: Duration,
    ) -> Vec<String> {
        self.wait_for(
            &format!("{n} message(s) to chat {chat_id}"),
            timeout,
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.method == "sendMessage" && c.chat_id() == Some(chat_id))
                    .count()
                    >= n
            },
        )
        .await;
        self.messages_to(chat_id)
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        // Sends the stop command at once; the returned future only reports completion.
        drop(self.handle.stop(false));
    }
}

/// `method chat_id text` lines: readable in a panic message.
pub fn summary(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| match c.method.as_str() {
            "sendMessage" => format!(
                "sendMessage {} {:?}",
                c.chat_id().unwrap_or_default(),
                c.text().unwrap_or_default()
            ),
            _ => format!("{} {}", c.method, c.body),
        })
        .collect()
}

/// Telegram's answer to a refused call.
fn refusal(code: u16, description: &str, retry_after: Option<u64>) -> HttpResponse {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(r) = retry_after {
        body["parameters"] = json!({ "retry_after": r });
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).json(body)
}

const UPDATE_TYPES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

/// The method's required fields and their types, as the Bot API checks them.
fn validate(method: &str, body: &Value) -> Result<(), (u16, String)> {
    let bad = |d: &str| Err((400, format!("Bad Request: {d}")));
    let chat_id_ok = |b: &Value| match b.get("chat_id") {
        Some(Value::Number(n)) => n.is_i64(),
        Some(Value::String(s)) => !s.is_empty(),
        _ => false,
    };
    let int_or_absent = |b: &Value, k: &str| b.get(k).is_none_or(|v| v.is_i64());
    match method {
        "sendMessage" => {
            if !chat_id_ok(body) {
                return bad("chat_id is empty");
            }
            let Some(text) = body.get("text").and_then(Value::as_str) else {
                return bad("message text is empty");
            };
            if text.trim().is_empty() {
                return bad("message text is empty");
            }
            if text.encode_utf16().count() > 4096 {
                return bad("message is too long");
            }
            if !int_or_absent(body, "message_thread_id") {
                return bad("invalid message thread identifier specified");
            }
            if let Some(rp) = body.get("reply_parameters") {
                if !rp.get("message_id").is_some_and(Value::is_i64) {
                    return bad("can't parse reply parameters JSON object");
                }
            }
            if let Some(m) = body.get("parse_mode") {
                if !matches!(m.as_str(), Some("MarkdownV2" | "HTML" | "Markdown")) {
                    return bad("unsupported parse_mode");
                }
            }
            Ok(())
        }
        "sendChatAction" => {
            if !chat_id_ok(body) {
                return bad("chat_id is empty");
            }
            if !int_or_absent(body, "message_thread_id") {
                return bad("invalid message thread identifier specified");
            }
            match body.get("action").and_then(Value::as_str) {
                Some(a) if CHAT_ACTIONS.contains(&a) => Ok(()),
                _ => bad("wrong parameter action in request"),
            }
        }
        "answerCallbackQuery" => match body.get("callback_query_id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(()),
            _ => bad("query is too old and response timeout expired or query ID is invalid"),
        },
        "setWebhook" => {
            if !body.get("url").is_some_and(Value::is_string) {
                return bad("bad webhook: URL must be provided");
            }
            if let Some(u) = body.get("allowed_updates") {
                let known = u.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|t| t.as_str().is_some_and(|t| UPDATE_TYPES.contains(&t)))
                });
                if !known {
                    return bad("can't parse allowed updates");
                }
            }
            if let Some(st) = body.get("secret_token") {
                let ok = st.as_str().is_some_and(|s| {
                    (1..=256).contains(&s.len())
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
                if !ok {
                    return bad("secret token contains unallowed characters");
                }
            }
            Ok(())
        }
        "deleteWebhook" | "getWebhookInfo" | "getMe" => Ok(()),
        _ => Err((404, "Not Found: method not found".into())),
    }
}

/// Flood control's verdict on one more `sendMessage` from `token` to `chat`: `Some(retry_after)`.
fn flooded(
    rules: &mut Rules,
    calls: &[Call],
    token: &str,
    chat: Option<i64>,
    now: Instant,
) -> Option<u64> {
    if rules.flood_next.0 > 0 {
        rules.flood_next.0 -= 1;
        return Some(rules.flood_next.1);
    }
    let l = rules.limits;
    let sent = |window: Duration, same_chat: bool| {
        calls
            .iter()
            .rev()
            .take_while(|c| now.duration_since(c.at) < window)
            .filter(|c| c.method == "sendMessage" && c.token == token)
            .filter(|c| !same_chat || c.chat_id() == chat)
            .count()
    };
    let over = l
        .bot_per_s
        .is_some_and(|n| sent(Duration::from_secs(1), false) >= n)
        || (chat.is_some_and(|c| c >= 0)
            && l.chat_per_s
                .is_some_and(|n| sent(Duration::from_secs(1), true) >= n))
        || (chat.is_some_and(|c| c < 0)
            && l.group_per_min
                .is_some_and(|n| sent(Duration::from_secs(60), true) >= n));
    over.then_some(l.retry_after_s)
}

async fn handle(
    state: web::Data<State>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (bot, method) = path.into_inner();
    let Some(token) = bot.strip_prefix("bot") else {
        return refusal(404, "Not Found", None);
    };
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return refusal(400, "Bad Request: body is not JSON", None),
        }
    };
    let now = Instant::now();
    let mut accepted = None;
    let verdict = {
        let mut rules = state.rules.lock().unwrap();
        let mut calls = state.calls.lock().unwrap();
        let chat = body.get("chat_id").and_then(Value::as_i64);
        let injected = {
            let mut failures = state.failures.lock().unwrap();
            match failures.get_mut(&method) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        let verdict = if !token.contains(':') {
            Err((404, "Not Found".to_owned(), None))
        } else if rules.revoked.contains(token) {
            Err((401, "Unauthorized".to_owned(), None))
        } else if let Err((code, d)) = validate(&method, &body) {
            Err((code, d, None))
        } else if injected {
            Err((500, "Internal Server Error: injected".to_owned(), None))
        } else if chat.is_some_and(|c| rules.unknown_chats.contains(&c)) {
            Err((400, "Bad Request: chat not found".to_owned(), None))
        } else if chat.is_some_and(|c| rules.blocked.contains(&c)) {
            Err((
                403,
                "Forbidden: bot was blocked by the user".to_owned(),
                None,
            ))
        } else if method == "sendMessage" {
            match flooded(&mut rules, &calls, token, chat, now) {
                Some(r) => Err((429, format!("Too Many Requests: retry after {r}"), Some(r))),
                None => Ok(()),
            }
        } else {
            Ok(())
        };
        let result = verdict
            .is_ok()
            .then(|| result_of(&mut rules, &calls, token, &method, &body));
        let (code, description) = match &verdict {
            Ok(()) => (200, None),
            Err((c, d, _)) => (*c, Some(d.clone())),
        };
        let call = Call {
            token: token.to_owned(),
            method: method.clone(),
            body,
            at: now,
            code,
            description,
        };
        // A refused call is recorded apart: Telegram did not act on it.
        match &verdict {
            Ok(()) => {
                accepted = Some(call.clone());
                calls.push(call);
            }
            Err(_) => state.refusals.lock().unwrap().push(call),
        }
        verdict.map(|()| result.unwrap_or_default())
    };
    state.changed.notify_waiters();
    let hook = state.call_hooks.lock().unwrap().get(&method).cloned();
    if let (Some(call), Some(hook)) = (accepted, hook) {
        hook(call).await;
    }
    match verdict {
        Ok(result) => HttpResponse::Ok().json(json!({"ok": true, "result": result})),
        Err((code, description, retry_after)) => refusal(code, &description, retry_after),
    }
}

/// The `result` of an accepted call (and its effect on the webhook state).
fn result_of(rules: &mut Rules, calls: &[Call], token: &str, method: &str, body: &Value) -> Value {
    match method {
        "sendMessage" => {
            let message_id = calls.iter().filter(|c| c.method == "sendMessage").count() + 1;
            let chat_id = body.get("chat_id").cloned().unwrap_or(Value::Null);
            let kind = if chat_id.as_i64().is_some_and(|c| c < 0) {
                "supergroup"
            } else {
                "private"
            };
            let mut m = json!({
                "message_id": message_id,
                "date": chrono::Utc::now().timestamp(),
                "chat": {"id": chat_id, "type": kind},
                "text": body.get("text").cloned().unwrap_or(Value::Null),
            });
            if let Some(t) = body.get("message_thread_id") {
                m["message_thread_id"] = t.clone();
                m["is_topic_message"] = json!(true);
            }
            m
        }
        "setWebhook" => {
            let hook = rules.hooks.entry(token.to_owned()).or_default();
            hook.url = body["url"].as_str().unwrap_or_default().to_owned();
            hook.allowed_updates = body.get("allowed_updates").cloned();
            hook.max_connections = Some(
                body.get("max_connections")
                    .and_then(Value::as_u64)
                    .unwrap_or(40),
            );
            json!(true)
        }
        "deleteWebhook" => {
            if let Some(hook) = rules.hooks.get_mut(token) {
                hook.url.clear();
            }
            json!(true)
        }
        "getWebhookInfo" => {
            let hook = rules.hooks.get(token).cloned().unwrap_or_default();
            let mut info = json!({
                "url": hook.url,
                "has_custom_certificate": false,
                "pending_update_count": hook.pending_update_count,
            });
            if !hook.url.is_empty() {
                info["max_connections"] = json!(hook.max_connections.unwrap_or(40));
                if let Some(a) = hook.allowed_updates {
                    info["allowed_updates"] = a;
                }
            }
            if let Some((at, m)) = hook.last_error {
                info["last_error_date"] = json!(at);
                info["last_error_message"] = json!(m);
            }
            info
        }
        "getMe" => json!({"id": 1, "is_bot": true, "first_name": "Fake", "username": "fake_bot"}),
        _ => json!(true),
    }
}
