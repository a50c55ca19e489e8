//! Sending to Telegram as the Bot API really behaves: long replies split at natural boundaries,
//! sends paced per bot and per chat, 429s waited out per bot, a revoked token replaced once from the
//! orchestrator, final refusals ended at once, `typing…` while the agent works. Retries and waits
//! go through the delivery retry policy ([`crate::delivery::retry`]), so shutdown ends them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::telegram::{Target, TelegramClient, TelegramError, MAX_MESSAGE_UTF16};
use common::{Secret, TenantId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;
use crate::delivery::retry::Retries;
use crate::delivery::Interrupted;
use crate::metrics::{Metrics, RefusalLabels, Retry, TelegramMethod};
use crate::orchestrator_client::{OrchestratorClient, OrchestratorError};

/// Chats whose pacing state is kept per bot before idle (refilled) ones are forgotten.
const MAX_TRACKED_CHATS: usize = 1000;

/// Telegram's limits as the pace the router keeps: about 30 messages a second per bot, one a
/// second per chat, 20 a minute per group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Least time between two messages of one bot.
    pub bot_interval: Duration,
    /// Messages a chat may get at once before the per-chat rate applies.
    pub chat_burst: u32,
    /// Sustained messages a minute to a private chat, and to a group (negative chat id).
    pub private_per_min: u32,
    pub group_per_min: u32,
    /// How often `typing…` is renewed (Telegram shows it for 5 s).
    pub typing_every: Duration,
}

impl Pacing {
    pub fn from_config(cfg: &DeliveryConfig) -> Pacing {
        Pacing {
            bot_interval: Duration::from_secs(1) / cfg.telegram_bot_per_s.max(1),
            chat_burst: cfg.telegram_chat_burst.max(1),
            private_per_min: cfg.telegram_chat_per_min.max(1),
            group_per_min: cfg.telegram_group_per_min.max(1),
            typing_every: cfg.typing_interval,
        }
    }

    fn per_sec(&self, chat_id: i64) -> f64 {
        let per_min = if chat_id < 0 {
            self.group_per_min
        } else {
            self.private_per_min
        };
        f64::from(per_min) / 60.0
    }
}

/// One chat's token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What is known about one bot: when it may send next, flood control's hold, its chats' buckets,
/// and the token that replaced a revoked one.
struct Bot {
    next_slot: Instant,
    hold_until: Option<Instant>,
    chats: HashMap<i64, Bucket>,
    rotated: Option<(Secret, Secret)>,
}

/// The outcome of one look at a bot's pacing state.
enum Pace {
    /// Flood control holds the bot's sends this much longer (a `retry_after`, maybe minutes).
    Held(Duration),
    /// The chat's bucket is empty (a second or so at most): wait this long and look again.
    Wait(Duration),
    /// The slot is taken: send after this long.
    Go(Duration),
}

/// The router's Telegram side, shared by all delivery workers.
pub struct Sender {
    client: TelegramClient,
    orch: Arc<OrchestratorClient>,
    metrics: Arc<Metrics>,
    pacing: Pacing,
    cfg: DeliveryConfig,
    bots: Mutex<HashMap<TenantId, Bot>>,
}

impl Sender {
    pub fn new(
        client: TelegramClient,
        orch: Arc<OrchestratorClient>,
        metrics: Arc<Metrics>,
        cfg: &DeliveryConfig,
    ) -> Sender {
        Sender {
            client,
            orch,
            metrics,
            pacing: Pacing::from_config(cfg),
            cfg: cfg.clone(),
            bots: Mutex::new(HashMap::new()),
        }
    }

    fn with_bot<T>(&self, tenant: &TenantId, f: impl FnOnce(&mut Bot) -> T) -> T {
        let mut bots = self.bots.lock().unwrap_or_else(|p| p.into_inner());
        let bot = bots.entry(tenant.clone()).or_insert_with(|| Bot {
            next_slot: Instant::now(),
            hold_until: None,
            chats: HashMap::new(),
            rotated: None,
        });
        f(bot)
    }

    /// `token`, or the one that replaced it after Telegram refused it.
    fn current(&self, tenant: &TenantId, token: &Secret) -> Secret {
        self.with_bot(tenant, |b| match &b.rotated {
            Some((old, new)) if old == token => new.clone(),
            _ => token.clone(),
        })
    }

    /// Holds all of the bot's sends for `d` (flood control counts per bot).
    fn hold(&self, tenant: &TenantId, d: Duration) {
        let until = Instant::now() + d;
        self.with_bot(tenant, |b| {
            b.hold_until = Some(b.hold_until.map_or(until, |h| h.max(until)));
        });
    }

    fn held(&self, tenant: &TenantId) -> bool {
        self.with_bot(tenant, |b| b.hold_until.is_some_and(|h| h > Instant::now()))
    }

    /// Waits for flood control's hold (through `retries`: shutdown ends it), the chat's bucket and
    /// the bot's next slot (short, so that a reply in flight at shutdown still goes out whole),
    /// and takes them.
    async fn pace(
        &self,
        tenant: &TenantId,
        chat_id: i64,
        retries: &Retries<'_>,
    ) -> Result<(), Interrupted> {
        loop {
            let pace = self.with_bot(tenant, |b| {
                let now = Instant::now();
                if let Some(h) = b.hold_until.filter(|h| *h > now) {
                    return Pace::Held(h - now);
                }
                let burst = f64::from(self.pacing.chat_burst);
                let rate = self.pacing.per_sec(chat_id);
                let refill = |k: &Bucket| {
                    (k.tokens + now.duration_since(k.at).as_secs_f64() * rate).min(burst)
                };
                if b.chats.len() >= MAX_TRACKED_CHATS && !b.chats.contains_key(&chat_id) {
                    b.chats.retain(|_, k| refill(k) < burst);
                }
                let bucket = b.chats.entry(chat_id).or_insert(Bucket {
                    tokens: burst,
                    at: now,
                });
                bucket.tokens = refill(bucket);
                bucket.at = now;
                if bucket.tokens < 1.0 {
                    return Pace::Wait(Duration::from_secs_f64((1.0 - bucket.tokens) / rate));
                }
                bucket.tokens -= 1.0;
                let slot = b.next_slot.max(now);
                b.next_slot = slot + self.pacing.bot_interval;
                Pace::Go(slot - now)
            });
            match pace {
                Pace::Held(d) => retries.after(d).await?,
                Pace::Wait(d) => tokio::time::sleep(d).await,
                Pace::Go(d) => {
                    if !d.is_zero() {
                        tokio::time::sleep(d).await;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The orchestrator's current token for the tenant when it differs from `refused` (which
    /// Telegram just refused); remembered so the rest of the reply uses it too.
    async fn rotated(&self, tenant: &TenantId, refused: &Secret) -> Option<Secret> {
        match self.orch.fresh_bot_token(tenant).await {
            Ok(t) if &t != refused => {
                tracing::info!(tenant = %tenant, "telegram refused the bot token; using the rotated one");
                self.metrics.retries.inc(Retry::token);
                self.with_bot(tenant, |b| b.rotated = Some((refused.clone(), t.clone())));
                Some(t)
            }
            Ok(_) => {
                tracing::error!(tenant = %tenant,
                    "telegram refused the bot token and the orchestrator has no other: revoked?");
                None
            }
            Err(OrchestratorError::NotFound) => None,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "cannot fetch the rotated bot token");
                None
            }
        }
    }

    /// One `sendMessage`, paced; waits out 429s as told (never dropped for flood control), tries a
    /// rotated token once after a 401, retries network errors and 5xx `TELEGRAM_ATTEMPTS` times in
    /// all, and ends at once on a final refusal (logged with Telegram's description, counted by
    /// reason): `Ok(sent)`. `Err(Interrupted)` when `stop` fired during a wait (a `retry_after` can
    /// be minutes): nothing more is sent, and the caller leaves its update in the inbox.
    pub async fn send(
        &self,
        tenant: &TenantId,
        token: &Secret,
        to: &Target,
        text: &str,
        stop: &CancellationToken,
    ) -> Result<bool, Interrupted> {
        let mut token = self.current(tenant, token);
        let mut retries = Retries::at_most(&self.cfg, stop, self.cfg.telegram_attempts);
        let mut rotation_tried = false;
        loop {
            self.pace(tenant, to.chat_id, &retries).await?;
            let err = match self.client.send_to(&token, to, text).await {
                Ok(()) => {
                    self.metrics
                        .telegram_call(TelegramMethod::sendMessage, true);
                    return Ok(true);
                }
                Err(e) => e,
            };
            self.metrics
                .telegram_call(TelegramMethod::sendMessage, false);
            if let Some(wait) = err.retry_after() {
                tracing::warn!(tenant = %tenant, chat_id = to.chat_id, retry_after_s = wait.as_secs(),
                    "telegram flood control, holding the bot's sends");
                self.metrics.retries.inc(Retry::flood);
                // Waited out by the next `pace`, like any other send of the bot.
                self.hold(tenant, wait);
                continue;
            }
            if matches!(err.code(), Some(401 | 404)) && !rotation_tried {
                rotation_tried = true;
                if let Some(t) = self.rotated(tenant, &token).await {
                    token = t;
                    continue;
                }
            }
            if err.is_retryable() && retries.again().await? {
                self.metrics.retries.inc(Retry::telegram);
                continue;
            }
            self.refused(tenant, to.chat_id, TelegramMethod::sendMessage, &err);
            return Ok(false);
        }
    }

    fn refused(
        &self,
        tenant: &TenantId,
        chat_id: i64,
        method: TelegramMethod,
        err: &TelegramError,
    ) {
        match err {
            TelegramError::Api { code, .. } if *code < 500 => {
                let reason = err.refusal_reason();
                self.metrics
                    .telegram_refusals
                    .inc(RefusalLabels { method, reason });
                tracing::error!(tenant = %tenant, chat_id, reason, error = %err,
                    "telegram refused the message for good");
            }
            _ => tracing::error!(tenant = %tenant, chat_id, error = %err,
                "telegram kept failing, message given up"),
        }
    }

    /// A reply: split for Telegram, sent in order, the first part quoting the user's message; a
    /// final refusal ends the rest (the chat is gone or blocked). An empty reply sends nothing.
    /// `Err(Interrupted)`: `stop` fired while a part waited (see [`Sender::send`]).
    pub async fn reply(
        &self,
        tenant: &TenantId,
        token: &Secret,
        to: &Target,
        text: &str,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let parts = split(text);
        if parts.is_empty() {
            tracing::warn!(tenant = %tenant, chat_id = to.chat_id, "the agent's reply is empty, nothing sent");
            return Ok(());
        }
        let rest = Target {
            reply_to: None,
            ..*to
        };
        for (i, part) in parts.iter().enumerate() {
            if !self
                .send(tenant, token, if i == 0 { to } else { &rest }, part, stop)
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Runs `work` while `typing…` shows in the chat (renewed every `typing_every`, stopped when
    /// `work` ends); typing is best effort and never delays `work`.
    pub async fn typing_while<F: Future>(
        &self,
        tenant: &TenantId,
        token: &Secret,
        to: &Target,
        work: F,
    ) -> F::Output {
        let token = self.current(tenant, token);
        let typing = async {
            loop {
                if !self.held(tenant) {
                    match self.client.send_typing(&token, to).await {
                        Ok(()) => self
                            .metrics
                            .telegram_call(TelegramMethod::sendChatAction, true),
                        Err(e) => {
                            self.metrics
                                .telegram_call(TelegramMethod::sendChatAction, false);
                            if let Some(wait) = e.retry_after() {
                                self.hold(tenant, wait);
                            } else if !e.is_retryable() {
                                tracing::debug!(tenant = %tenant, error = %e, "typing indicator refused");
                                return;
                            }
                        }
                    }
                }
                tokio::time::sleep(self.pacing.typing_every).await;
            }
        };
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => return out,
            () = typing => {}
        }
        work.await
    }

    /// `answerCallbackQuery`, so the pressed button stops spinning; failures are logged only.
    pub async fn answer_callback(&self, tenant: &TenantId, token: &Secret, id: &str) {
        let token = self.current(tenant, token);
        match self.client.answer_callback_query(&token, id).await {
            Ok(()) => self
                .metrics
                .telegram_call(TelegramMethod::answerCallbackQuery, true),
            Err(e) => {
                self.metrics
                    .telegram_call(TelegramMethod::answerCallbackQuery, false);
                tracing::warn!(tenant = %tenant, error = %e, "answerCallbackQuery failed");
            }
        }
    }
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Splits a reply into messages Telegram accepts (at most `MAX_MESSAGE_UTF16` UTF-16 units,
/// not blank), cutting at the last paragraph break, else line break, else space in the second half
/// of the allowed length, else at a character boundary. The whitespace at a cut is dropped. Plain
/// text is sent (no `parse_mode`), so no entity can be cut.
pub fn split(text: &str) -> Vec<&str> {
    split_at(text, MAX_MESSAGE_UTF16)
}

fn split_at(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if utf16_len(rest) <= max {
            parts.push(rest);
            break;
        }
        let mut units = 0;
        let limit = rest
            .char_indices()
            .find(|(_, c)| {
                units += c.len_utf16();
                units > max
            })
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let min = limit / 2;
        let near = |i: Option<usize>| i.filter(|&i| i >= min && i > 0);
        let cut = near(window.rfind("\n\n"))
            .or_else(|| near(window.rfind('\n')))
            .or_else(|| near(window.rfind(char::is_whitespace)))
            .unwrap_or(limit);
        let (head, tail) = rest.split_at(cut);
        parts.push(head.trim_end());
        rest = tail.trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_replies() {
        assert_eq!(split("short"), vec!["short"]);
        assert!(split("").is_empty());
        assert!(split(" \n\t ").is_empty());
    }

    #[test]
    fn long_replies_are_cut_at_words_within_the_limit() {
        let words: Vec<String> = (0..2000).map(|i| format!("word{i}")).collect();
        let text = words.join(" ");
        let parts = split(&text);
        assert!(parts.len() >= 3, "{}", parts.len());
        for p in &parts {
            assert!(utf16_len(p) <= MAX_MESSAGE_UTF16);
            assert!(!p.starts_with(' ') && !p.ends_with(' '));
        }
        let rejoined: Vec<&str> = parts.iter().flat_map(|p| p.split(' ')).collect();
        assert_eq!(rejoined, words, "whole, in order, no word cut");
    }

    #[test]
    fn paragraphs_then_lines_are_preferred() {
        let text = format!(
            "{}\n\n{}\nthird line {}",
            "a".repeat(60),
            "b".repeat(20),
            "c"
        );
        assert_eq!(
            split_at(&text, 90),
            vec!["a".repeat(60), format!("{}\nthird line c", "b".repeat(20))]
        );
        let text = format!("{}\n{} tail", "a".repeat(60), "b".repeat(20));
        assert_eq!(
            split_at(&text, 85),
            vec!["a".repeat(60), format!("{} tail", "b".repeat(20))]
        );
    }

    #[test]
    fn no_boundary_cuts_between_characters_counting_utf16() {
        // 😀 is two UTF-16 units: 4096 units hold 2048 of them.
        let text = "😀".repeat(5000);
        let parts = split(&text);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [2048, 2048, 904]
        );
        assert_eq!(parts.concat(), text);
        let text = "é".repeat(4097);
        assert_eq!(split(&text).len(), 2);
    }
}
