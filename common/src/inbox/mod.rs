//! The router's durable inbox: Telegram updates stored before they are acknowledged, delivered
//! in order per tenant, deduplicated by `(tenant, update_id)`.

use std::time::Duration;

use async_trait::async_trait;

use crate::lock::WakeLock;
use crate::{StoreError, TenantId};

#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// How long a delivered `update_id` is remembered, so that Telegram's retries are dropped.
pub const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Most `update_id`s remembered per tenant (the newest): bounds what dedupe costs a busy tenant.
/// Telegram redelivers an update within minutes of a failed attempt, so far fewer would do.
pub const DEDUPE_MAX_PER_TENANT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Opaque, ordered within a tenant.
    pub id: String,
    pub update_id: i64,
    /// The Telegram update as received.
    pub payload: Vec<u8>,
    /// When the router stored it (ms since the Unix epoch).
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    New,
    Duplicate,
    /// The tenant already had its most pending entries: nothing was written (no entry, no dedupe
    /// mark), so the same update is accepted when Telegram retries it after the backlog drained.
    Full,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxStats {
    pub depth: u64,
    pub oldest_received_at_ms: Option<i64>,
}

#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Stores an update durably unless `(tenant, update_id)` was seen before.
    async fn append(
        &self,
        tenant: &TenantId,
        update_id: i64,
        payload: &[u8],
    ) -> Result<Appended, StoreError> {
        self.append_within(tenant, update_id, payload, u64::MAX)
            .await
    }
    /// Like [`append`](Inbox::append), but answers [`Appended::Full`] without writing anything
    /// while the tenant has `max_pending` entries or more. The count and the write are one atomic
    /// step, so concurrent appends (on any replica) never take a tenant past `max_pending`.
    /// A duplicate is answered as such even then.
    async fn append_within(
        &self,
        tenant: &TenantId,
        update_id: i64,
        payload: &[u8],
        max_pending: u64,
    ) -> Result<Appended, StoreError>;
    /// The oldest undelivered entries of a tenant, in arrival order.
    async fn pending(&self, tenant: &TenantId, limit: usize)
        -> Result<Vec<InboxEntry>, StoreError>;
    /// Removes a delivered (or given up) entry; idempotent.
    async fn ack(&self, tenant: &TenantId, entry_id: &str) -> Result<(), StoreError>;
    /// Tenants that have undelivered entries.
    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError>;
    /// The lease store behind delivery claims (`router:inbox:lease:{id}`).
    fn claims(&self) -> &dyn WakeLock;
    /// Takes the right to deliver a tenant's entries (one deliverer per tenant across replicas).
    async fn claim(
        &self,
        tenant: &TenantId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.claims()
            .try_acquire(&claim_key(tenant), owner, ttl)
            .await
    }
    /// Extends a claim; `Ok(false)` if it was lost.
    async fn renew_claim(
        &self,
        tenant: &TenantId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.claims().renew(&claim_key(tenant), owner, ttl).await
    }
    async fn release_claim(&self, tenant: &TenantId, owner: &str) -> Result<(), StoreError> {
        self.claims()
            .release(&claim_key(tenant), owner)
            .await
            .map(drop)
    }
    async fn stats(&self) -> Result<InboxStats, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    fn name(&self) -> &'static str;
}

/// Key of a tenant's delivery claim.
pub fn claim_key(tenant: &TenantId) -> String {
    format!("router:inbox:lease:{tenant}")
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
