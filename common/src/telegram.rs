//! A small Telegram Bot API client on `TELEGRAM_API_URL`.
//!
//! The token is part of every URL (`/bot<token>/method`), so no error here ever carries the URL.

use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;

use crate::Secret;

pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// The update types the platform subscribes to (`setWebhook`'s `allowed_updates`): what the router
/// answers (`router::update`). Edited messages and channel posts are left out on purpose (see
/// docs/operations.md "Telegram as it really behaves").
pub const ALLOWED_UPDATES: &[&str] = &["message", "callback_query"];

/// Telegram's limit on a message's text. Telegram counts characters after entity parsing; counting
/// UTF-16 code units (an emoji outside the BMP is two) is never more lenient than that.
pub const MAX_MESSAGE_UTF16: usize = 4096;

#[derive(Debug, Error)]
pub enum TelegramError {
    /// Telegram could not be reached or answered garbage; worth retrying. The source is the
    /// reqwest (or JSON) error, stripped of its URL (it holds the token) before it is kept.
    #[error("telegram {method} failed: {reason}")]
    Transport {
        method: String,
        reason: String,
        #[source]
        source: Option<crate::error::BoxError>,
    },
    /// Telegram answered `ok: false`.
    #[error("telegram {method} rejected ({code}): {description}")]
    Api {
        method: String,
        code: u16,
        description: String,
        /// `parameters.retry_after` of a 429: seconds to wait before the next call.
        retry_after: Option<u64>,
    },
}

/// Why Telegram refused a call for good, as a metric label: a closed set, never a tenant or chat.
pub const REFUSAL_REASONS: &[&str] = &[
    "blocked",
    "kicked",
    "deactivated",
    "chat_not_found",
    "thread_not_found",
    "text_invalid",
    "forbidden",
    "bad_request",
    "unauthorized",
    "not_found",
    "other",
];

impl TelegramError {
    /// Worth another try: network trouble, rate limits and Telegram's own 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            TelegramError::Transport { .. } => true,
            TelegramError::Api { code, .. } => *code == 429 || *code >= 500,
        }
    }

    /// Telegram's HTTP-like error code (`None` when it was not reached).
    pub fn code(&self) -> Option<u16> {
        match self {
            TelegramError::Transport { .. } => None,
            TelegramError::Api { code, .. } => Some(*code),
        }
    }

    /// How long flood control asks to wait, for a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TelegramError::Api {
                code: 429,
                retry_after,
                ..
            } => Some(Duration::from_secs(retry_after.unwrap_or(1))),
            _ => None,
        }
    }

    /// One of `REFUSAL_REASONS`, from the code and Telegram's description.
    pub fn refusal_reason(&self) -> &'static str {
        let TelegramError::Api {
            code, description, ..
        } = self
        else {
            return "other";
        };
        let d = description.to_ascii_lowercase();
        match code {
            403 if d.contains("blocked") => "blocked",
            403 if d.contains("kicked") || d.contains("not a member") => "kicked",
            403 if d.contains("deactivated") => "deactivated",
            403 => "forbidden",
            400 if d.contains("chat not found") => "chat_not_found",
            400 if d.contains("thread not found") => "thread_not_found",
            400 if d.contains("text is empty") || d.contains("too long") => "text_invalid",
            400 => "bad_request",
            401 => "unauthorized",
            404 => "not_found",
            _ => "other",
        }
    }
}

/// Where a message goes: the chat, its forum topic, and the message it answers (quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    pub chat_id: i64,
    /// `message_thread_id`: the forum topic; `None` is the chat itself (or a forum's General topic).
    pub thread_id: Option<i64>,
    /// Sent as `reply_parameters`, so a busy group shows who is answered.
    pub reply_to: Option<i64>,
}

impl Target {
    pub fn chat(chat_id: i64) -> Target {
        Target {
            chat_id,
            ..Target::default()
        }
    }

    fn apply(&self, body: &mut Value) {
        body["chat_id"] = json!(self.chat_id);
        if let Some(t) = self.thread_id {
            body["message_thread_id"] = json!(t);
        }
    }
}

/// `getWebhookInfo`'s answer (the fields operators need; unknown ones ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct WebhookInfo {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub pending_update_count: u64,
    /// Unix time of the last delivery error.
    #[serde(default)]
    pub last_error_date: Option<i64>,
    #[serde(default)]
    pub last_error_message: Option<String>,
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub allowed_updates: Option<Vec<String>>,
    #[serde(default)]
    pub ip_address: Option<String>,
}

#[derive(Clone)]
pub struct TelegramClient {
    base_url: String,
    http: reqwest::Client,
}

impl TelegramClient {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        TelegramClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Calls a Bot API method and returns its `result`.
    pub async fn call(
        &self,
        token: &Secret,
        method: &str,
        body: &Value,
    ) -> Result<Value, TelegramError> {
        let url = format!("{}/bot{}/{}", self.base_url, token.expose(), method);
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            TelegramError::Transport {
                method: method.to_owned(),
                reason: e.to_string(),
                source: Some(Box::new(e)),
            }
        };
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let value: Value = resp.json().await.map_err(transport)?;
        if value.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(value.get("result").cloned().unwrap_or(Value::Null));
        }
        let code = value
            .get("error_code")
            .and_then(Value::as_u64)
            .map(|c| c as u16)
            .unwrap_or(status);
        let description = value
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("no description")
            .replace(token.expose(), "***");
        let retry_after = value
            .pointer("/parameters/retry_after")
            .and_then(Value::as_u64);
        Err(TelegramError::Api {
            method: method.to_owned(),
            code,
            description,
            retry_after,
        })
    }

    /// Points the bot at `url`; Telegram then sends `secret_token` in `X-Telegram-Bot-Api-Secret-Token`.
    pub async fn set_webhook(
        &self,
        token: &Secret,
        url: &str,
        secret_token: Option<&str>,
    ) -> Result<(), TelegramError> {
        let mut body = json!({ "url": url, "allowed_updates": ALLOWED_UPDATES });
        if let Some(s) = secret_token {
            body["secret_token"] = json!(s);
        }
        self.call(token, "setWebhook", &body).await.map(|_| ())
    }

    pub async fn delete_webhook(&self, token: &Secret) -> Result<(), TelegramError> {
        self.call(token, "deleteWebhook", &json!({}))
            .await
            .map(|_| ())
    }

    pub async fn send_message(
        &self,
        token: &Secret,
        chat_id: i64,
        text: &str,
    ) -> Result<(), TelegramError> {
        self.call(
            token,
            "sendMessage",
            &json!({ "chat_id": chat_id, "text": text }),
        )
        .await
        .map(|_| ())
    }

    /// `sendMessage` of plain text (no `parse_mode`, so no entity can be cut) to `to`.
    pub async fn send_to(
        &self,
        token: &Secret,
        to: &Target,
        text: &str,
    ) -> Result<(), TelegramError> {
        let mut body = json!({ "text": text });
        to.apply(&mut body);
        if let Some(id) = to.reply_to {
            // Still sent if the user deleted their message meanwhile.
            body["reply_parameters"] =
                json!({ "message_id": id, "allow_sending_without_reply": true });
        }
        self.call(token, "sendMessage", &body).await.map(|_| ())
    }

    /// `sendChatAction typing`: Telegram shows it for 5 s or until the bot's next message.
    pub async fn send_typing(&self, token: &Secret, to: &Target) -> Result<(), TelegramError> {
        let mut body = json!({ "action": "typing" });
        to.apply(&mut body);
        self.call(token, "sendChatAction", &body).await.map(|_| ())
    }

    /// Stops the spinner of a pressed inline button.
    pub async fn answer_callback_query(
        &self,
        token: &Secret,
        id: &str,
    ) -> Result<(), TelegramError> {
        self.call(
            token,
            "answerCallbackQuery",
            &json!({ "callback_query_id": id }),
        )
        .await
        .map(|_| ())
    }

    pub async fn get_webhook_info(&self, token: &Secret) -> Result<WebhookInfo, TelegramError> {
        let v = self.call(token, "getWebhookInfo", &json!({})).await?;
        serde_json::from_value(v).map_err(|e| TelegramError::Transport {
            method: "getWebhookInfo".into(),
            reason: format!("unexpected answer: {e}"),
            source: Some(Box::new(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that fails in transport keeps reqwest's error as the source, down to the refused
    /// connection, and nothing in the chain or the debug text carries the bot token of the URL.
    #[tokio::test]
    async fn a_transport_error_chain_holds_no_token() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = TelegramClient::new(&format!("http://127.0.0.1:{port}"));
        let token = Secret::new("123456:SECRET-TOKEN-abc");
        let err = client
            .call(&token, "sendMessage", &json!({"chat_id": 1}))
            .await
            .unwrap_err();
        assert!(matches!(err, TelegramError::Transport { .. }), "{err:?}");
        let chain = crate::error::error_chain(&err);
        assert!(
            crate::error::find_source::<reqwest::Error>(&err).is_some(),
            "reqwest's error is kept: {chain}"
        );
        assert!(
            crate::error::find_source::<std::io::Error>(&err).is_some(),
            "down to the refused connection: {chain}"
        );
        for text in [chain, err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("SECRET-TOKEN"), "{text}");
            assert!(!text.contains("/bot"), "{text}");
        }
    }

    fn api(code: u16, description: &str) -> TelegramError {
        TelegramError::Api {
            method: "sendMessage".into(),
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    #[test]
    fn refusals_map_to_a_closed_set_of_reasons() {
        for (code, d, want) in [
            (403, "Forbidden: bot was blocked by the user", "blocked"),
            (
                403,
                "Forbidden: bot was kicked from the group chat",
                "kicked",
            ),
            (403, "Forbidden: user is deactivated", "deactivated"),
            (400, "Bad Request: chat not found", "chat_not_found"),
            (
                400,
                "Bad Request: message thread not found",
                "thread_not_found",
            ),
            (400, "Bad Request: message text is empty", "text_invalid"),
            (400, "Bad Request: message is too long", "text_invalid"),
            (400, "Bad Request: can't parse entities", "bad_request"),
            (401, "Unauthorized", "unauthorized"),
            (418, "I'm a teapot", "other"),
        ] {
            let r = api(code, d).refusal_reason();
            assert_eq!(r, want, "{code} {d}");
            assert!(REFUSAL_REASONS.contains(&r));
        }
    }

    #[test]
    fn retry_after_only_for_flood_control() {
        let mut e = api(429, "Too Many Requests: retry after 3");
        if let TelegramError::Api { retry_after, .. } = &mut e {
            *retry_after = Some(3);
        }
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(api(400, "x").retry_after(), None);
    }
}
