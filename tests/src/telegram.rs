//! A fake Telegram Bot API that records every call, so tests can assert what users would see.
//!
//! Runs in-process on 127.0.0.1 and answers `/bot{token}/{method}` like Telegram does; failures can be
//! injected per method to exercise the services' retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub token: String,
    pub method: String,
    pub body: Value,
    pub at: Instant,
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
pub type Hook = Arc<dyn Fn(Call) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    /// Method → what to do on a successful call of it before answering.
    hooks: Mutex<HashMap<String, Hook>>,
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

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Texts sent with `sendMessage` to one chat, in the order they arrived.
    pub fn messages_to(&self, chat_id: i64) -> Vec<String> {
        self.calls_to("sendMessage")
            .iter()
            .filter(|c| c.chat_id() == Some(chat_id))
            .filter_map(|c| c.text().map(str::to_owned))
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
    pub fn before_answering(&self, method: &str, hook: Hook) {
        self.state
            .hooks
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

async fn handle(
    state: web::Data<State>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (bot, method) = path.into_inner();
    let Some(token) = bot.strip_prefix("bot") else {
        return HttpResponse::NotFound()
            .json(json!({"ok": false, "error_code": 404, "description": "Not Found"}));
    };
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return HttpResponse::BadRequest().json(
                    json!({"ok": false, "error_code": 400, "description": "Bad Request: body is not JSON"}),
                )
            }
        }
    };
    let fail = {
        let mut failures = state.failures.lock().unwrap();
        match failures.get_mut(&method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    let call = Call {
        token: token.to_owned(),
        method: method.clone(),
        body: body.clone(),
        at: Instant::now(),
    };
    let result = {
        let mut calls = state.calls.lock().unwrap();
        let result = if method == "sendMessage" {
            let message_id = calls.iter().filter(|c| c.method == "sendMessage").count() + 1;
            json!({
                "message_id": message_id,
                "date": chrono::Utc::now().timestamp(),
                "chat": {"id": body.get("chat_id").cloned().unwrap_or(Value::Null), "type": "private"},
                "text": body.get("text").cloned().unwrap_or(Value::Null),
            })
        } else {
            json!(true)
        };
        // A failed call is not recorded: Telegram did not act on it.
        if !fail {
            calls.push(call.clone());
        }
        result
    };
    state.changed.notify_waiters();
    let hook = state.hooks.lock().unwrap().get(&method).cloned();
    if let (false, Some(hook)) = (fail, hook) {
        hook(call).await;
    }
    if fail {
        return HttpResponse::InternalServerError().json(
            json!({"ok": false, "error_code": 500, "description": "Internal Server Error: injected"}),
        );
    }
    HttpResponse::Ok().json(json!({"ok": true, "result": result}))
}
