//! A small Telegram Bot API client on `TELEGRAM_API_URL`.
//!
//! The token is part of every URL (`/bot<token>/method`), so no error here ever carries the URL.

use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;

use crate::Secret;

pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TelegramError {
    /// Telegram could not be reached or answered garbage; worth retrying.
    #[error("telegram {method} failed: {reason}")]
    Transport { method: String, reason: String },
    /// Telegram answered `ok: false`.
    #[error("telegram {method} rejected ({code}): {description}")]
    Api {
        method: String,
        code: u16,
        description: String,
    },
}

impl TelegramError {
    /// Worth another try: network trouble, rate limits and Telegram's own 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            TelegramError::Transport { .. } => true,
            TelegramError::Api { code, .. } => *code == 429 || *code >= 500,
        }
    }
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
        let transport = |e: reqwest::Error| TelegramError::Transport {
            method: method.to_owned(),
            reason: e.without_url().to_string(),
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
        Err(TelegramError::Api {
            method: method.to_owned(),
            code,
            description,
        })
    }

    /// Points the bot at `url`; Telegram then sends `secret_token` in `X-Telegram-Bot-Api-Secret-Token`.
    pub async fn set_webhook(
        &self,
        token: &Secret,
        url: &str,
        secret_token: Option<&str>,
    ) -> Result<(), TelegramError> {
        let mut body = json!({ "url": url, "allowed_updates": ["message", "edited_message", "callback_query"] });
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
}
