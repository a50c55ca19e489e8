//! A stand-in for an OpenAI-compatible model server (`POST /v1/chat/completions`): it records
//! every request, so tests can assert the system prompt an agent sent, and answers
//! deterministically with [`reply_to`] of the last user message.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// The answer to a conversation whose last user message is `text`.
pub fn reply_to(text: &str) -> String {
    format!("stand-in model heard: {text}")
}

/// The text of a chat message's `content` (a string, or OpenAI's list of parts).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The concatenated content of the messages of `request` with this `role`.
pub fn messages_with_role(request: &Value, role: &str) -> Vec<String> {
    request["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["role"] == role)
                .map(|m| text_of(&m["content"]))
                .collect()
        })
        .unwrap_or_default()
}

pub struct StandInModel {
    requests: Arc<Mutex<Vec<Value>>>,
    base_url: String,
    handle: actix_web::dev::ServerHandle,
}

async fn completions(
    body: web::Json<Value>,
    requests: web::Data<Mutex<Vec<Value>>>,
) -> HttpResponse {
    let request = body.into_inner();
    let last_user = messages_with_role(&request, "user")
        .pop()
        .unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("stand-in").to_owned();
    let n = {
        let mut all = requests.lock().unwrap();
        all.push(request);
        all.len()
    };
    HttpResponse::Ok().json(json!({
        "id": format!("chatcmpl-standin-{n}"),
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply_to(&last_user)},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    }))
}

impl StandInModel {
    /// Starts the stand-in on a free loopback port (`port` 0) or on `port`; it stops when dropped.
    pub async fn start_on(port: u16) -> std::io::Result<StandInModel> {
        let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
        let data = web::Data::from(requests.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
                .route("/v1/chat/completions", web::post().to(completions))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(StandInModel {
            requests,
            base_url: format!("http://{addr}/v1"),
            handle,
        })
    }

    pub async fn start() -> StandInModel {
        Self::start_on(0).await.expect("stand-in model: bind")
    }

    /// The OpenAI-compatible base URL (`http://127.0.0.1:port/v1`), ZeroClaw's `api_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every request body received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for StandInModel {
    fn drop(&mut self) {
        // Sends the stop command at once; the returned future only reports completion.
        drop(self.handle.stop(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_and_records_like_an_openai_compatible_server() {
        let model = StandInModel::start().await;
        let resp: Value = reqwest::Client::new()
            .post(format!("{}/chat/completions", model.base_url()))
            .json(&json!({"model": "m", "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": [{"type": "text", "text": "hello"}]}
            ]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(resp["choices"][0]["message"]["content"], reply_to("hello"));
        let seen = model.requests();
        assert_eq!(messages_with_role(&seen[0], "system"), ["be nice"]);
    }
}
