//! One tenant's worker: holds the tenant's delivery claim while it forwards the pending entries in
//! order, replies on Telegram and acknowledges each entry once it is finished.

use std::collections::HashSet;
use std::time::Duration;

use common::inbox::InboxEntry;
use common::telegram::Target;
use common::{Secret, TenantId};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::retry::{self, Attempt};
use super::wake::Wake;
use super::{Delivery, Interrupted, AGENT_FAILED, FAILED_TO_START};
use crate::agent::ForwardError;
use crate::metrics;
use crate::orchestrator_client::OrchestratorError;
use crate::update;

/// Entries fetched per round trip to the inbox.
pub(super) const BATCH: usize = 100;

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

/// What to do after one entry.
enum Step {
    /// Acknowledge the entry and count it under this result.
    Ack(metrics::Delivery),
    /// Entries were settled in bulk (dropped or failed together); fetch the inbox again.
    Refetch,
}

impl Delivery {
    /// Runs an inbox operation until it succeeds (the inbox is the source of truth: never give up on it).
    pub(super) async fn inbox_op<T, F, Fut>(
        &self,
        tenant: &TenantId,
        what: &str,
        stop: &CancellationToken,
        op: F,
    ) -> Result<T, Interrupted>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, common::StoreError>>,
    {
        retry::until_done(&self.cfg, stop, tenant, what, || async {
            match op().await {
                Ok(v) => Attempt::Done(v),
                Err(e) => {
                    self.metrics.retries.inc(metrics::Retry::inbox);
                    Attempt::Again(e)
                }
            }
        })
        .await
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
                .inbox_op(tenant, "inbox pending", stop, || {
                    self.inbox.pending(tenant, BATCH)
                })
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
                        self.inbox_op(tenant, "inbox ack", stop, || {
                            self.inbox.ack(tenant, &entry.id)
                        })
                        .await?;
                        self.metrics.deliveries.inc(result);
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
            return Ok(Step::Ack(metrics::Delivery::skipped));
        }
        let Some(token) = self.bot_token(tenant, stop).await? else {
            self.drop_all(tenant, stop).await?;
            return Ok(Step::Refetch);
        };
        if let Some(id) = &callback {
            self.telegram.answer_callback(tenant, &token, id).await;
        }
        let Some(msg) = msg else {
            return Ok(Step::Ack(metrics::Delivery::skipped));
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
                            metrics::Delivery::failed,
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
                            metrics::Delivery::expired,
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
                        self.fail_waiting(
                            tenant,
                            &token,
                            &waiting,
                            &text,
                            metrics::Delivery::suspended,
                            stop,
                        )
                        .await?;
                        return Ok(Step::Refetch);
                    }
                },
            };
            // The tenant exists (its bot token was just found); an orchestrator without a
            // credential for it is the Go one during a cut-over, whose agents take none.
            let credential = self.agent_token(tenant, stop).await?;
            claim.check(tenant)?;
            let forward =
                self.agent
                    .forward(&endpoint, tenant, credential.as_ref(), &key, &msg.text);
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
                    // Interrupted (shutdown during a `retry_after`): not acknowledged, so the next
                    // deliverer forwards it again (the agent answers the same key alike) and replies.
                    self.telegram
                        .reply(tenant, &token, &msg.target(), &reply, stop)
                        .await?;
                    return Ok(Step::Ack(metrics::Delivery::delivered));
                }
                Err(e) => e,
            };
            let give_up = match &err {
                ForwardError::Unreachable { reason, .. } => {
                    self.endpoints.stale(tenant, &endpoint, reason).await;
                    reconnects += 1;
                    reconnects >= self.cfg.wake_attempts
                }
                ForwardError::Failed { reason, .. } => {
                    tracing::warn!(tenant = %tenant, update_id = entry.update_id, error = %reason, "agent call failed");
                    agent_failures += 1;
                    self.metrics.retries.inc(metrics::Retry::agent);
                    agent_failures >= self.cfg.agent_attempts
                }
                ForwardError::Rejected(_) => true,
            };
            if give_up {
                tracing::error!(tenant = %tenant, update_id = entry.update_id, error = %err,
                    "delivery failed, giving up on the update");
                self.send(tenant, &token, &msg.target(), AGENT_FAILED, stop)
                    .await?;
                return Ok(Step::Ack(metrics::Delivery::failed));
            }
            let attempt = agent_failures.max(reconnects);
            retry::backoff(&self.cfg, attempt, stop).await?;
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
        retry::until_done(&self.cfg, stop, tenant, what, || async {
            match fetch().await {
                Ok(t) => Attempt::Done(Some(t)),
                Err(OrchestratorError::NotFound) => Attempt::Done(None),
                Err(e) => Attempt::Again(e),
            }
        })
        .await
    }

    /// Tells each chat of the entries (once) that its agent cannot answer (`text` says why), and
    /// removes the entries (counted as `result`: `failed`, `expired` after an outage longer than
    /// `INBOX_MAX_AGE_S`, or `suspended`).
    pub(super) async fn fail_waiting(
        &self,
        tenant: &TenantId,
        token: &Secret,
        waiting: &[InboxEntry],
        text: &str,
        result: metrics::Delivery,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        tracing::error!(tenant = %tenant, entries = waiting.len(), "wake failed, answering the waiting chats");
        let mut told = HashSet::new();
        for entry in waiting {
            let msg = update::parse(&entry.payload);
            if let Some(m) = &msg {
                if told.insert((m.chat_id, m.thread_id)) {
                    self.send(tenant, token, &m.place(), text, stop).await?;
                }
            }
            self.inbox_op(tenant, "inbox ack", stop, || {
                self.inbox.ack(tenant, &entry.id)
            })
            .await?;
            let result = if msg.is_some() {
                result
            } else {
                metrics::Delivery::skipped
            };
            self.metrics.deliveries.inc(result);
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
                .inbox_op(tenant, "inbox pending", stop, || {
                    self.inbox.pending(tenant, BATCH)
                })
                .await?;
            if batch.is_empty() {
                break;
            }
            for entry in batch {
                self.inbox_op(tenant, "inbox ack", stop, || {
                    self.inbox.ack(tenant, &entry.id)
                })
                .await?;
                self.metrics.deliveries.inc(metrics::Delivery::dropped);
                dropped += 1;
            }
        }
        tracing::warn!(tenant = %tenant, dropped, "unknown tenant, dropping its updates");
        Ok(())
    }

    /// `sendMessage` (see `Sender::send`); a final failure is logged, not returned, since the
    /// update was handled either way; `Err(Interrupted)` when `stop` cut a wait short.
    pub(super) async fn send(
        &self,
        tenant: &TenantId,
        token: &Secret,
        to: &Target,
        text: &str,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        self.telegram
            .send(tenant, token, to, text, stop)
            .await
            .map(drop)
    }

    /// One tenant's worker: claim, deliver while renewing the claim, stop when the inbox is empty.
    /// The dispatcher releases the claim when the worker ends.
    pub(super) async fn work(&self, tenant: &TenantId, shutdown: &CancellationToken) {
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
