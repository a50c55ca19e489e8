//! Delivery of inbox entries: a dispatcher runs one worker per tenant with pending work; a worker
//! holds the tenant's claim (one deliverer across replicas), wakes the agent when needed, forwards
//! the entries in order, replies on Telegram and acknowledges each entry only when it is finished.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::inbox::{now_ms, Inbox, InboxEntry};
use common::telegram::Target;
use common::{Secret, TenantId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::activity::Activity;
use crate::agent::{AgentClient, ForwardError};
use crate::config::DeliveryConfig;
use crate::endpoint::Endpoints;
use crate::metrics::Metrics;
use crate::orchestrator_client::{OrchestratorClient, OrchestratorError};
use crate::reply::Sender;
use crate::update;

/// Sent to every chat waiting for a wake that failed.
pub const FAILED_TO_START: &str = "❌ Failed to start. Please try again.";
/// Sent when the agent kept failing (5xx, timeouts) or kept being unreachable.
pub const AGENT_FAILED: &str = "❌ The agent failed to answer. Please try again.";

/// Entries fetched per round trip to the inbox.
const BATCH: usize = 100;
/// How many pending entries are looked at to find the chats waiting for a wake.
const WAITING_SCAN: usize = 1000;
/// How often chats that start waiting during a wake are looked for.
const ANNOUNCE_POLL: Duration = Duration::from_millis(250);

/// The delivery was interrupted by shutdown or a lost claim; the entry stays in the inbox.
#[derive(Debug)]
pub struct Interrupted;

/// What to do after one entry.
/// A worker's hold on its tenant's delivery claim. It is good until the last successful renewal's
/// TTL runs out (less a margin for the send in flight), on the monotonic clock, which keeps running
/// while the process is frozen: a router paused past the TTL finds its claim gone when it resumes,
/// before it sends anything.
struct Claim {
    valid_until: std::sync::Mutex<tokio::time::Instant>,
    margin: Duration,
}

impl Claim {
    fn taken(at: tokio::time::Instant, ttl: Duration) -> Claim {
        Claim {
            valid_until: std::sync::Mutex::new(at + ttl),
            margin: ttl / 5,
        }
    }

    fn renewed(&self, at: tokio::time::Instant, ttl: Duration) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = at + ttl;
    }

    fn held(&self) -> bool {
        let until = *self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        tokio::time::Instant::now() + self.margin < until
    }

    /// `Err(Interrupted)` once the claim may have passed to another replica.
    fn check(&self, tenant: &TenantId) -> Result<(), Interrupted> {
        if self.held() {
            Ok(())
        } else {
            tracing::warn!(tenant = %tenant, "delivery claim expired, leaving the update to the replica that holds it");
            Err(Interrupted)
        }
    }
}

enum Step {
    /// Acknowledge the entry and count it under this result.
    Ack(&'static str),
    /// Entries were settled in bulk (dropped or failed together); fetch the inbox again.
    Refetch,
}

enum Wake {
    Up(String),
    UnknownTenant,
    /// The agent itself could not be started, attempt after attempt; these entries were waiting for it.
    Failed(Vec<InboxEntry>),
    /// An outage outlasted `INBOX_MAX_AGE_S`: these entries are too old to keep waiting.
    Expired(Vec<InboxEntry>),
    /// Suspended by an operator: these entries were waiting; they get the suspended notice.
    Suspended(Vec<InboxEntry>),
}

/// Everything a worker needs; shared by all workers.
pub struct Delivery {
    pub inbox: Arc<dyn Inbox>,
    /// The endpoint cache and wakes (over the same orchestrator client as `orch`).
    pub endpoints: Endpoints,
    pub orch: Arc<OrchestratorClient>,
    pub agent: AgentClient,
    /// Telegram sends: pacing, flood control, token rotation, typing (`crate::reply`).
    pub telegram: Sender,
    pub activity: Arc<Activity>,
    pub metrics: Arc<Metrics>,
    pub cfg: DeliveryConfig,
    /// This replica's name in claims.
    pub replica: String,
}

impl Delivery {
    async fn pause(&self, d: Duration, stop: &CancellationToken) -> Result<(), Interrupted> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = stop.cancelled() => Err(Interrupted),
        }
    }

    /// Runs an inbox operation until it succeeds (the inbox is the source of truth: never give up on it).
    async fn inbox_op<T, F, Fut>(
        &self,
        what: &str,
        stop: &CancellationToken,
        op: F,
    ) -> Result<T, Interrupted>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, common::StoreError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(op = what, error = %e, attempt, "inbox unavailable, retrying");
                    self.metrics.retries.inc(&["inbox"]);
                    self.pause(self.cfg.backoff(attempt), stop).await?;
                }
            }
        }
    }

    /// Delivers the tenant's entries until none is left; the caller holds the claim.
    async fn drain(
        &self,
        tenant: &TenantId,
        claim: &Claim,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        'fetch: loop {
            if stop.is_cancelled() {
                return Err(Interrupted);
            }
            claim.check(tenant)?;
            let batch = self
                .inbox_op("pending", stop, || self.inbox.pending(tenant, BATCH))
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            for entry in batch {
                if stop.is_cancelled() {
                    return Err(Interrupted);
                }
                let span = tracing::info_span!(
                    "delivery",
                    tenant = %tenant,
                    update_id = entry.update_id,
                    trace_id = tracing::field::Empty
                );
                common::telemetry::record_trace_id(&span);
                claim.check(tenant)?;
                match self
                    .deliver(tenant, &entry, claim, stop)
                    .instrument(span)
                    .await?
                {
                    Step::Ack(result) => {
                        self.inbox_op("ack", stop, || self.inbox.ack(tenant, &entry.id))
                            .await?;
                        self.metrics.deliveries.inc(&[result]);
                    }
                    Step::Refetch => continue 'fetch,
                }
            }
        }
    }

    async fn deliver(
        &self,
        tenant: &TenantId,
        entry: &InboxEntry,
        claim: &Claim,
        stop: &CancellationToken,
    ) -> Result<Step, Interrupted> {
        let msg = update::parse(&entry.payload);
        let callback = update::callback_query_id(&entry.payload);
        if msg.is_none() && callback.is_none() {
            tracing::debug!(tenant = %tenant, update_id = entry.update_id, "update without text, skipped");
            return Ok(Step::Ack("skipped"));
        }
        let Some(token) = self.bot_token(tenant, stop).await? else {
            self.drop_all(tenant, stop).await?;
            return Ok(Step::Refetch);
        };
        if let Some(id) = &callback {
            self.telegram.answer_callback(tenant, &token, id).await;
        }
        let Some(msg) = msg else {
            return Ok(Step::Ack("skipped"));
        };
        let key = format!("{tenant}:{}", entry.update_id);
        let (mut agent_failures, mut reconnects) = (0u32, 0u32);
        loop {
            let endpoint = match self.endpoints.cached(tenant).await {
                Some(ep) => ep,
                None => match self.wake_phase(tenant, &token, entry, stop).await? {
                    Wake::Up(ep) => ep,
                    Wake::UnknownTenant => {
                        self.drop_all(tenant, stop).await?;
                        return Ok(Step::Refetch);
                    }
                    Wake::Failed(mut waiting) => {
                        if !waiting.iter().any(|e| e.id == entry.id) {
                            waiting.insert(0, entry.clone());
                        }
                        self.fail_waiting(
                            tenant,
                            &token,
                            &waiting,
                            FAILED_TO_START,
                            "failed",
                            stop,
                        )
                        .await?;
                        return Ok(Step::Refetch);
                    }
                    Wake::Expired(expired) => {
                        self.fail_waiting(
                            tenant,
                            &token,
                            &expired,
                            FAILED_TO_START,
                            "expired",
                            stop,
                        )
                        .await?;
                        return Ok(Step::Refetch);
                    }
                    Wake::Suspended(mut waiting) => {
                        if !waiting.iter().any(|e| e.id == entry.id) {
                            waiting.insert(0, entry.clone());
                        }
                        let text = self.cfg.suspended_message.clone();
                        self.fail_waiting(tenant, &token, &waiting, &text, "suspended", stop)
                            .await?;
                        return Ok(Step::Refetch);
                    }
                },
            };
            // The tenant exists (its bot token was just found); an orchestrator without a
            // credential for it is the Go one during a cut-over, whose agents take none.
            let credential = self
                .agent_token(tenant, stop)
                .await?
                .unwrap_or_else(|| Secret::new(""));
            claim.check(tenant)?;
            let forward = self
                .agent
                .forward(&endpoint, tenant, &credential, &key, &msg.text);
            let (result, took) = self
                .activity
                .while_busy(
                    tenant,
                    self.telegram
                        .typing_while(tenant, &token, &msg.place(), forward),
                )
                .await;
            let err = match result {
                Ok(reply) => {
                    self.metrics.forward_latency.observe(took);
                    self.activity.touch(tenant);
                    self.endpoints.served(tenant, &endpoint).await;
                    // The reply is sent only while the claim holds: after a freeze past the TTL
                    // another replica owns the entry and sends the (idempotent) reply itself.
                    claim.check(tenant)?;
                    self.telegram
                        .reply(tenant, &token, &msg.target(), &reply)
                        .await;
                    return Ok(Step::Ack("delivered"));
                }
                Err(e) => e,
            };
            let give_up = match &err {
                ForwardError::Unreachable(reason) => {
                    self.endpoints.stale(tenant, &endpoint, reason).await;
                    reconnects += 1;
                    reconnects >= self.cfg.wake_attempts
                }
                ForwardError::Failed(reason) => {
                    tracing::warn!(tenant = %tenant, update_id = entry.update_id, error = %reason, "agent call failed");
                    agent_failures += 1;
                    self.metrics.retries.inc(&["agent"]);
                    agent_failures >= self.cfg.agent_attempts
                }
                ForwardError::Rejected(_) => true,
            };
            if give_up {
                tracing::error!(tenant = %tenant, update_id = entry.update_id, error = %err,
                    "delivery failed, giving up on the update");
                self.send(tenant, &token, &msg.target(), AGENT_FAILED).await;
                return Ok(Step::Ack("failed"));
            }
            let attempt = agent_failures.max(reconnects);
            self.pause(self.cfg.backoff(attempt), stop).await?;
        }
    }

    /// The tenant's bot token, waiting for the orchestrator as long as it takes; `None` for an unknown tenant.
    async fn bot_token(
        &self,
        tenant: &TenantId,
        stop: &CancellationToken,
    ) -> Result<Option<Secret>, Interrupted> {
        self.tenant_secret("bot token", tenant, stop, || self.orch.bot_token(tenant))
            .await
    }

    /// The tenant's agent credential, likewise.
    async fn agent_token(
        &self,
        tenant: &TenantId,
        stop: &CancellationToken,
    ) -> Result<Option<Secret>, Interrupted> {
        self.tenant_secret("agent credential", tenant, stop, || {
            self.orch.agent_token(tenant)
        })
        .await
    }

    /// One of the tenant's secrets from the orchestrator, retried with backoff until it answers
    /// (or shutdown); `None` when the orchestrator does not know it.
    async fn tenant_secret<F, Fut>(
        &self,
        what: &'static str,
        tenant: &TenantId,
        stop: &CancellationToken,
        fetch: F,
    ) -> Result<Option<Secret>, Interrupted>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Secret, OrchestratorError>>,
    {
        let mut attempt = 0;
        loop {
            match fetch().await {
                Ok(t) => return Ok(Some(t)),
                Err(OrchestratorError::NotFound) => return Ok(None),
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(tenant = %tenant, error = %e, attempt, "{what} unavailable, retrying");
                    self.pause(self.cfg.backoff(attempt), stop).await?;
                }
            }
        }
    }

    /// Announces the wake to every waiting chat (once per chat), wakes the agent and caches its
    /// endpoint. When the tenant's record says its agent runs, the wake most likely only confirms
    /// it: nobody is told unless it takes longer than `STARTING_NOTICE_AFTER_MS`. A start that fails is retried `WAKE_ATTEMPTS` times; an outage (orchestrator or
    /// its backends unavailable) is waited out with capped backoff until `oldest` is older than
    /// `INBOX_MAX_AGE_S`, and each waiting chat is told once that the bot is delayed.
    async fn wake_phase(
        &self,
        tenant: &TenantId,
        token: &Secret,
        oldest: &InboxEntry,
        stop: &CancellationToken,
    ) -> Result<Wake, Interrupted> {
        let glance = self.orch.glance(tenant).await;
        if glance.suspended {
            self.metrics.wakes.inc(&["suspended"]);
            let waiting = self
                .inbox_op("pending", stop, || self.inbox.pending(tenant, WAITING_SCAN))
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
        let mut waiting = self.announce(tenant, token, &mut announced, loud()).await;
        let (mut attempt, mut outage) = (0u32, 0u32);
        loop {
            let wake = self.endpoints.wake(tenant);
            tokio::pin!(wake);
            let result = loop {
                tokio::select! {
                    r = &mut wake => break r,
                    _ = stop.cancelled() => return Err(Interrupted),
                    _ = tokio::time::sleep(ANNOUNCE_POLL) => {
                        waiting = self.announce(tenant, token, &mut announced, loud()).await;
                    }
                }
            };
            match result {
                Ok(endpoint) => {
                    // Chats that started waiting since the last look are told too, however fast the wake.
                    if loud() {
                        self.announce(tenant, token, &mut announced, true).await;
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
                    let latest = self.announce(tenant, token, &mut announced, loud()).await;
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
                        delayed.tell(self, tenant, token, &waiting).await;
                    }
                    self.metrics.retries.inc(&["wake"]);
                    self.pause(self.cfg.backoff(outage), stop).await?;
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
                        let latest = self.announce(tenant, token, &mut announced, loud()).await;
                        if !latest.is_empty() {
                            waiting = latest;
                        }
                        return Ok(Wake::Failed(waiting));
                    }
                    self.metrics.retries.inc(&["wake"]);
                    self.pause(self.cfg.backoff(attempt), stop).await?;
                }
            }
        }
    }

    /// Sends the starting message to chats not yet told (when `loud`); returns the pending entries seen.
    async fn announce(
        &self,
        tenant: &TenantId,
        token: &Secret,
        announced: &mut HashSet<(i64, Option<i64>)>,
        loud: bool,
    ) -> Vec<InboxEntry> {
        let pending = match self.inbox.pending(tenant, WAITING_SCAN).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "inbox unavailable, cannot list waiting chats");
                return Vec::new();
            }
        };
        if !loud {
            return pending;
        }
        // Per chat and forum topic: each topic is its own conversation.
        let new_chats: Vec<Target> = pending
            .iter()
            .filter_map(|e| update::parse(&e.payload))
            .map(|m| m.place())
            .filter(|t| announced.insert((t.chat_id, t.thread_id)))
            .collect();
        let text = self.cfg.starting_message.as_str();
        futures::future::join_all(new_chats.iter().map(|c| self.send(tenant, token, c, text)))
            .await;
        pending
    }

    /// Tells each chat of the entries (once) that its agent cannot answer (`text` says why), and
    /// removes the entries (counted as `result`: `failed`, `expired` after an outage longer than
    /// `INBOX_MAX_AGE_S`, or `suspended`).
    async fn fail_waiting(
        &self,
        tenant: &TenantId,
        token: &Secret,
        waiting: &[InboxEntry],
        text: &str,
        result: &'static str,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        tracing::error!(tenant = %tenant, entries = waiting.len(), "wake failed, answering the waiting chats");
        let mut told = HashSet::new();
        for entry in waiting {
            let msg = update::parse(&entry.payload);
            if let Some(m) = &msg {
                if told.insert((m.chat_id, m.thread_id)) {
                    self.send(tenant, token, &m.place(), text).await;
                }
            }
            self.inbox_op("ack", stop, || self.inbox.ack(tenant, &entry.id))
                .await?;
            let result = if msg.is_some() { result } else { "skipped" };
            self.metrics.deliveries.inc(&[result]);
        }
        Ok(())
    }

    /// Removes all entries of a tenant the orchestrator does not know: nobody can answer them.
    async fn drop_all(
        &self,
        tenant: &TenantId,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let mut dropped = 0usize;
        loop {
            let batch = self
                .inbox_op("pending", stop, || self.inbox.pending(tenant, BATCH))
                .await?;
            if batch.is_empty() {
                break;
            }
            for entry in batch {
                self.inbox_op("ack", stop, || self.inbox.ack(tenant, &entry.id))
                    .await?;
                self.metrics.deliveries.inc(&["dropped"]);
                dropped += 1;
            }
        }
        tracing::warn!(tenant = %tenant, dropped, "unknown tenant, dropping its updates");
        Ok(())
    }

    /// `sendMessage` (see `Sender::send`); a final failure is logged, not returned, since the
    /// update was handled either way.
    async fn send(&self, tenant: &TenantId, token: &Secret, to: &Target, text: &str) -> bool {
        self.telegram.send(tenant, token, to, text).await
    }

    /// One tenant's worker: claim, deliver while renewing the claim, stop when the inbox is empty.
    /// The dispatcher releases the claim when the worker ends.
    async fn work(&self, tenant: &TenantId, shutdown: &CancellationToken) {
        let ttl = self.cfg.claim_ttl;
        tracing::debug!(tenant = %tenant, "delivery worker started");
        let asked = tokio::time::Instant::now();
        match self.inbox.claim(tenant, &self.replica, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(tenant = %tenant, "another replica is delivering");
                return;
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "inbox claim failed");
                return;
            }
        }
        let claim = Claim::taken(asked, ttl);
        let stop = shutdown.child_token();
        let work = self.drain(tenant, &claim, &stop);
        tokio::pin!(work);
        // Renews every third of the TTL; stops delivery as soon as the claim is lost or could not
        // be renewed before it runs out (a Redis outage, or this process frozen).
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let asked = tokio::time::Instant::now();
                match self.inbox.renew_claim(tenant, &self.replica, ttl).await {
                    Ok(true) => claim.renewed(asked, ttl),
                    Ok(false) => {
                        tracing::warn!(tenant = %tenant, "delivery claim lost, stopping delivery");
                        stop.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, "claim renewal failed");
                        if !claim.held() {
                            tracing::warn!(tenant = %tenant, "delivery claim could not be renewed in time, stopping delivery");
                            stop.cancel();
                            return;
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            r = &mut work => r,
            () = renew => work.await,
        };
        if outcome.is_err() {
            tracing::info!(tenant = %tenant, "delivery interrupted, remaining updates stay in the inbox");
        }
    }
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
    ) {
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
        futures::future::join_all(new_chats.iter().map(|c| d.send(tenant, token, c, text))).await;
    }
}

impl Drop for Delayed<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.metrics.delayed_tenants.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Tenants with new entries, rung by the HTTP side: a burst of webhooks for one tenant wakes the
/// dispatcher once instead of once per update.
#[derive(Default)]
struct Doorbell {
    tenants: std::sync::Mutex<Tenants>,
    bell: tokio::sync::Notify,
}

/// Who has news and who is being delivered, under one lock: a ring for a tenant whose worker is
/// running only marks it (the dispatcher restarts the worker when it ends), so a busy tenant's
/// webhooks do not wake the dispatcher once each.
#[derive(Default)]
struct Tenants {
    waiting: HashSet<TenantId>,
    running: HashMap<TenantId, Slot>,
}

impl Doorbell {
    fn ring(&self, tenant: &TenantId) {
        let first = {
            let mut t = self.lock();
            if let Some(slot) = t.running.get_mut(tenant) {
                slot.again = true;
                return;
            }
            let was_empty = t.waiting.is_empty();
            t.waiting.insert(tenant.clone()) && was_empty
        };
        if first {
            self.bell.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tenants> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle the HTTP side uses to announce new entries, and to stop delivery.
pub struct Dispatcher {
    doorbell: Arc<Doorbell>,
    cancel: CancellationToken,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dispatcher {
    /// Starts the dispatcher (and the activity reporter draining `activity_rx`) on the current runtime.
    pub fn start(
        delivery: Arc<Delivery>,
        activity_rx: mpsc::Receiver<TenantId>,
        grace: Duration,
    ) -> Dispatcher {
        let doorbell = Arc::new(Doorbell::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            delivery,
            doorbell.clone(),
            activity_rx,
            cancel.clone(),
            grace,
        ));
        Dispatcher {
            doorbell,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// A new entry is in the inbox for `tenant`.
    pub fn notify(&self, tenant: &TenantId) {
        self.doorbell.ring(tenant);
    }

    /// Stops delivery: workers finish their update in flight within the grace period or leave it in
    /// the inbox; claims are released.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(task) = self.task.lock().await.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "dispatcher task failed");
            }
        }
    }
}

/// Per-tenant bookkeeping of the dispatcher.
struct Slot {
    task: tokio::task::Id,
    /// Notified while the worker ran: the worker may have missed it, run again when it ends.
    again: bool,
}

async fn run(
    d: Arc<Delivery>,
    doorbell: Arc<Doorbell>,
    activity_rx: mpsc::Receiver<TenantId>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let reporter = tokio::spawn(crate::activity::report(
        activity_rx,
        d.orch.clone(),
        d.activity.clone(),
    ));
    let mut workers: JoinSet<()> = JoinSet::new();
    let mut tenants_of: HashMap<tokio::task::Id, TenantId> = HashMap::new();
    let mut scan = tokio::time::interval(d.cfg.scan_interval);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Runs a worker for `t`, or marks its running worker to run again.
    let start = |t: TenantId,
                 running: &mut HashMap<TenantId, Slot>,
                 workers: &mut JoinSet<()>,
                 tenants_of: &mut HashMap<tokio::task::Id, TenantId>| {
        if let Some(slot) = running.get_mut(&t) {
            slot.again = true;
            return;
        }
        let (d, stop, tenant) = (d.clone(), cancel.clone(), t.clone());
        let handle = workers.spawn(async move { d.work(&tenant, &stop).await });
        tenants_of.insert(handle.id(), t.clone());
        running.insert(
            t,
            Slot {
                task: handle.id(),
                again: false,
            },
        );
    };

    loop {
        d.metrics
            .active_workers
            .store(doorbell.lock().running.len() as u64, Ordering::Relaxed);
        tokio::select! {
            // Shutdown first, then finished workers (so `running` is current), then new work.
            biased;
            _ = cancel.cancelled() => break,
            Some(done) = workers.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "delivery worker failed");
                        e.id()
                    }
                };
                let Some(tenant) = tenants_of.remove(&id) else { continue };
                // From here a ring sees the tenant not running and wakes the dispatcher; one
                // before was recorded in `again`.
                let again = {
                    let mut t = doorbell.lock();
                    match t.running.get(&tenant) {
                        Some(slot) if slot.task == id => {
                            let again = slot.again;
                            t.running.remove(&tenant);
                            again
                        }
                        _ => false,
                    }
                };
                if let Err(e) = d.inbox.release_claim(&tenant, &d.replica).await {
                    tracing::warn!(tenant = %tenant, error = %e, "claim release failed");
                }
                if again && !cancel.is_cancelled() {
                    start(tenant, &mut doorbell.lock().running, &mut workers, &mut tenants_of);
                }
            }
            _ = doorbell.bell.notified() => {
                let mut t = doorbell.lock();
                let t = &mut *t;
                for tenant in std::mem::take(&mut t.waiting) {
                    start(tenant, &mut t.running, &mut workers, &mut tenants_of);
                }
            },
            _ = scan.tick() => match d.inbox.tenants().await {
                Ok(ts) => {
                    let mut t = doorbell.lock();
                    for tenant in ts {
                        start(tenant, &mut t.running, &mut workers, &mut tenants_of);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "inbox scan failed"),
            },
        }
    }

    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = workers.join_next() => if done.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!(workers = workers.len(), "shutdown grace over, leaving in-flight updates in the inbox");
                workers.shutdown().await;
                break;
            }
        }
    }
    let running: Vec<TenantId> = doorbell.lock().running.drain().map(|(t, _)| t).collect();
    for tenant in &running {
        if let Err(e) = d.inbox.release_claim(tenant, &d.replica).await {
            tracing::warn!(tenant = %tenant, error = %e, "claim release failed");
        }
    }
    reporter.abort();
    let _ = reporter.await;
    d.metrics.active_workers.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_webhook_for_a_tenant_being_delivered_marks_it_without_waking_the_dispatcher() {
        let bell = Doorbell::default();
        let (busy, idle) = (
            TenantId::parse("busy").unwrap(),
            TenantId::parse("idle").unwrap(),
        );
        let task = tokio::spawn(async {}).id();
        bell.lock()
            .running
            .insert(busy.clone(), Slot { task, again: false });

        bell.ring(&busy);
        assert!(
            bell.lock().running[&busy].again,
            "the running worker runs again"
        );
        assert!(bell.lock().waiting.is_empty());
        assert!(bell.bell.notified().now_or_never().is_none(), "no wake-up");

        bell.ring(&idle);
        bell.ring(&idle);
        assert_eq!(bell.lock().waiting, HashSet::from([idle]));
        assert!(bell.bell.notified().now_or_never().is_some(), "one wake-up");
        assert!(bell.bell.notified().now_or_never().is_none());
    }
}
