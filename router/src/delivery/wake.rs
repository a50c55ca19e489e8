//! The wake phase of a worker: the waiting chats are told the agent is starting (once each, and only
//! when it really is), the orchestrator is asked until the agent runs, an outage is waited out.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::inbox::{now_ms, InboxEntry};
use common::telegram::Target;
use common::wire::Endpoint;
use common::{Secret, TenantId};
use tokio_util::sync::CancellationToken;

use super::retry;
use super::{Delivery, Interrupted};
use crate::metrics::{self, Metrics};
use crate::orchestrator_client::OrchestratorError;
use crate::update;

/// How many pending entries are looked at to find the chats waiting for a wake.
const WAITING_SCAN: usize = 1000;
/// How often chats that start waiting during a wake are looked for.
const ANNOUNCE_POLL: Duration = Duration::from_millis(250);

pub(super) enum Wake {
    Up(Endpoint),
    UnknownTenant,
    /// The agent itself could not be started, attempt after attempt; these entries were waiting for it.
    Failed(Vec<InboxEntry>),
    /// An outage outlasted `INBOX_MAX_AGE_S`: these entries are too old to keep waiting.
    Expired(Vec<InboxEntry>),
    /// Suspended by an operator: these entries were waiting; they get the suspended notice.
    Suspended(Vec<InboxEntry>),
}

impl Delivery {
    /// Announces the wake to every waiting chat (once per chat), wakes the agent and caches its
    /// endpoint. When the tenant's record says its agent runs, the wake most likely only confirms
    /// it: nobody is told unless it takes longer than `STARTING_NOTICE_AFTER_MS`. A start that
    /// fails is retried `WAKE_ATTEMPTS` times; an outage (orchestrator or its backends unavailable)
    /// is waited out with capped backoff until `oldest` is older than `INBOX_MAX_AGE_S`, and each
    /// waiting chat is told once that the bot is delayed.
    pub(super) async fn wake_phase(
        &self,
        tenant: &TenantId,
        token: &Secret,
        oldest: &InboxEntry,
        stop: &CancellationToken,
    ) -> Result<Wake, Interrupted> {
        let glance = self.orch.glance(tenant).await;
        if glance.suspended {
            self.metrics.wakes.inc(metrics::Wake::suspended);
            let waiting = self
                .inbox_op(tenant, "inbox pending", stop, || {
                    self.inbox.pending(tenant, WAITING_SCAN)
                })
                .await?;
            return Ok(Wake::Suspended(waiting));
        }
        let quiet_until = tokio::time::Instant::now()
            + if glance.running {
                self.cfg.starting_notice_after
            } else {
                Duration::ZERO
            };
        let loud = || tokio::time::Instant::now() >= quiet_until;
        let mut announced = HashSet::new();
        let mut delayed = Delayed::new(&self.metrics);
        let mut waiting = self
            .announce(tenant, token, &mut announced, loud(), stop)
            .await?;
        let (mut attempt, mut outage) = (0u32, 0u32);
        loop {
            let wake = self.endpoints.wake(tenant);
            tokio::pin!(wake);
            let result = loop {
                tokio::select! {
                    r = &mut wake => break r,
                    _ = stop.cancelled() => return Err(Interrupted),
                    _ = tokio::time::sleep(ANNOUNCE_POLL) => {
                        waiting = self.announce(tenant, token, &mut announced, loud(), stop).await?;
                    }
                }
            };
            match result {
                Ok(endpoint) => {
                    // Chats that started waiting since the last look are told too, however fast the wake.
                    if loud() {
                        self.announce(tenant, token, &mut announced, true, stop)
                            .await?;
                    }
                    tracing::info!(tenant = %tenant, endpoint = %endpoint, attempt, "agent awake");
                    return Ok(Wake::Up(endpoint));
                }
                Err(OrchestratorError::NotFound) => {
                    return Ok(Wake::UnknownTenant);
                }
                Err(e) if e.is_outage() => {
                    outage += 1;
                    tracing::warn!(tenant = %tenant, error = %e, attempt = outage,
                        "wake failed: orchestrator unavailable, keeping the updates");
                    let latest = self
                        .announce(tenant, token, &mut announced, loud(), stop)
                        .await?;
                    if !latest.is_empty() {
                        waiting = latest;
                    }
                    let max_age = self.cfg.inbox_max_age.as_millis() as i64;
                    let now = now_ms();
                    if now - oldest.received_at_ms > max_age {
                        let mut expired: Vec<InboxEntry> = waiting
                            .into_iter()
                            .filter(|e| now - e.received_at_ms > max_age)
                            .collect();
                        if !expired.iter().any(|e| e.id == oldest.id) {
                            expired.insert(0, oldest.clone());
                        }
                        tracing::error!(tenant = %tenant, entries = expired.len(),
                            "outage outlasted INBOX_MAX_AGE_S, giving up on the oldest updates");
                        return Ok(Wake::Expired(expired));
                    }
                    if outage >= self.cfg.wake_attempts {
                        delayed.tell(self, tenant, token, &waiting, stop).await?;
                    }
                    self.metrics.retries.inc(metrics::Retry::wake);
                    retry::backoff(&self.cfg, outage, stop).await?;
                }
                Err(OrchestratorError::Suspended) => {
                    // Suspended since the check above: the chats already told "starting" learn why.
                    return Ok(Wake::Suspended(waiting));
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(tenant = %tenant, error = %e, attempt,
                        attempts = self.cfg.wake_attempts, "wake failed");
                    if attempt >= self.cfg.wake_attempts {
                        let latest = self
                            .announce(tenant, token, &mut announced, loud(), stop)
                            .await?;
                        if !latest.is_empty() {
                            waiting = latest;
                        }
                        return Ok(Wake::Failed(waiting));
                    }
                    self.metrics.retries.inc(metrics::Retry::wake);
                    retry::backoff(&self.cfg, attempt, stop).await?;
                }
            }
        }
    }

    /// Sends the starting message to chats not yet told (when `loud`); returns the pending entries
    /// seen. `Err(Interrupted)` when `stop` cut a send's wait short.
    async fn announce(
        &self,
        tenant: &TenantId,
        token: &Secret,
        announced: &mut HashSet<(i64, Option<i64>)>,
        loud: bool,
        stop: &CancellationToken,
    ) -> Result<Vec<InboxEntry>, Interrupted> {
        let pending = match self.inbox.pending(tenant, WAITING_SCAN).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "inbox unavailable, cannot list waiting chats");
                return Ok(Vec::new());
            }
        };
        if !loud {
            return Ok(pending);
        }
        // Per chat and forum topic: each topic is its own conversation.
        let new_chats: Vec<Target> = pending
            .iter()
            .filter_map(|e| update::parse(&e.payload))
            .map(|m| m.place())
            .filter(|t| announced.insert((t.chat_id, t.thread_id)))
            .collect();
        let text = self.cfg.starting_message.as_str();
        send_all(self, tenant, token, &new_chats, text, stop).await?;
        Ok(pending)
    }
}

/// Sends `text` to each chat at once; `Err(Interrupted)` when `stop` cut one short.
async fn send_all(
    d: &Delivery,
    tenant: &TenantId,
    token: &Secret,
    chats: &[Target],
    text: &str,
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    futures::future::join_all(chats.iter().map(|c| d.send(tenant, token, c, text, stop)))
        .await
        .into_iter()
        .collect()
}

/// The chats of one wake phase told that the bot is delayed by an outage (each once); counted in
/// the `router_delayed_tenants` gauge from the first notice until the phase ends.
struct Delayed<'a> {
    chats: HashSet<(i64, Option<i64>)>,
    metrics: &'a Metrics,
    counted: bool,
}

impl<'a> Delayed<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        Delayed {
            chats: HashSet::new(),
            metrics,
            counted: false,
        }
    }

    async fn tell(
        &mut self,
        d: &Delivery,
        tenant: &TenantId,
        token: &Secret,
        waiting: &[InboxEntry],
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        if !self.counted {
            self.counted = true;
            self.metrics.delayed_tenants.fetch_add(1, Ordering::Relaxed);
        }
        let new_chats: Vec<Target> = waiting
            .iter()
            .filter_map(|e| update::parse(&e.payload))
            .map(|m| m.place())
            .filter(|t| self.chats.insert((t.chat_id, t.thread_id)))
            .collect();
        let text = d.cfg.delayed_message.as_str();
        send_all(d, tenant, token, &new_chats, text, stop).await
    }
}

impl Drop for Delayed<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.metrics.delayed_tenants.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
