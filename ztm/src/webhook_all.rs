//! `ztm webhook register --all`: re-points every tenant's webhook (with its secret token) through the
//! router, one call at a time, paced under Telegram's limits and waiting out a 429's `retry after`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::Api;
use crate::error::ZtmError;
use crate::transport::Method;

/// Least time between two registrations (Telegram allows about 30 calls a second per bot; one a
/// 50 ms stays well under it across bots).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
/// Attempts per tenant when Telegram answers 429.
const ATTEMPTS: u32 = 5;
/// Longest `retry after` honoured; beyond it the tenant is reported failed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The wait a rate-limited answer asks for: Telegram's `Too Many Requests: retry after N` (as the
/// router passes it on) or a `retry_after` field; `None` when the failure is not a 429.
pub fn retry_after(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    if !(lower.contains("429") || lower.contains("too many requests")) {
        return None;
    }
    let secs = ["retry after ", "retry_after\":", "retry_after "]
        .iter()
        .find_map(|p| {
            let at = lower.find(p)? + p.len();
            let digits: String = lower[at..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .unwrap_or(1);
    Some(Duration::from_secs(secs.max(1)))
}

/// Registers every tenant's webhook; returns the report and, when any failed, the problem line.
pub async fn register_all(
    api: &Api<'_>,
    interval: Duration,
) -> Result<(Value, String, Option<String>), ZtmError> {
    let tenants = api.list(None).await?;
    let mut results = Vec::new();
    let mut text = String::new();
    let mut failed = 0;
    for (i, t) in tenants.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let id = &t.tenant_id;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match api.webhook(id, Method::Post).await {
                Ok(v) => break Ok(v),
                Err(ZtmError::Rejected(m)) => match retry_after(&m) {
                    Some(wait) if attempt < ATTEMPTS && wait <= MAX_RETRY_AFTER => {
                        eprintln!(
                            "tenant {:?}: Telegram asks to retry after {} s",
                            id.as_str(),
                            wait.as_secs()
                        );
                        tokio::time::sleep(wait).await;
                    }
                    _ => break Err(m),
                },
                Err(e) => return Err(e),
            }
        };
        match outcome {
            Ok(v) => {
                let url = v.get("url").and_then(Value::as_str).unwrap_or("?");
                text.push_str(&format!("{:<24} registered  {url}\n", id.as_str()));
                results.push(json!({"tenant_id": id, "ok": true, "url": url}));
            }
            Err(m) => {
                failed += 1;
                text.push_str(&format!("{:<24} FAILED      {m}\n", id.as_str()));
                results.push(json!({"tenant_id": id, "ok": false, "error": m}));
            }
        }
    }
    text.push_str(&format!(
        "{} of {} webhooks registered\n",
        tenants.len() - failed,
        tenants.len()
    ));
    let problem =
        (failed > 0).then(|| format!("{failed} of {} webhooks not registered", tenants.len()));
    Ok((json!({ "webhooks": results }), text, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_429s_give_their_wait() {
        assert_eq!(
            retry_after("telegram setWebhook rejected (429): Too Many Requests: retry after 7"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(r#"{"error_code":429,"parameters":{"retry_after":3}}"#),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after("router answered HTTP 429"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_after("telegram setWebhook rejected (401): Unauthorized"),
            None
        );
    }
}
