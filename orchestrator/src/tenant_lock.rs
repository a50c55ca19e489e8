//! The per-tenant lock that serialises wakes and stops of one tenant.
//!
//! Two layers: an in-process async mutex (so concurrent callers in one replica queue instead of
//! hammering the shared lock) and the shared wake lock `tenant:waking:{id}` (so replicas exclude each
//! other), held with an owner token and renewed while held. Each acquisition of the shared lock
//! carries a fencing token (the lock's generation) that every registry status write under it
//! carries, so that the registry refuses a holder whose lock lapsed once a successor wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::lock::WakeLock;
use common::registry::Registry;
use common::{StoreError, TenantId};
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a waiter retries the shared lock.
pub const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Longest TTL the shared key gets: it is renewed every third of it while held, so a crashed
/// holder's lock frees within this (issue 4: 20 s) however long `WAKE_LOCK_TTL_S` is.
pub const MAX_LEASE: Duration = Duration::from_secs(15);

type LocalMap = Arc<Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>>;

pub struct TenantLocks {
    lock: Arc<dyn WakeLock>,
    ttl: Duration,
    local: LocalMap,
    tasks: TaskTracker,
    /// Where the stored fence is read before each acquisition (the token's floor), so that tokens
    /// keep rising past what the registry holds even if the lock backend lost its counters.
    floors: Option<Arc<dyn Registry>>,
}

/// This process's turn for a tenant (the in-process mutex).
pub struct LocalTurn {
    id: TenantId,
    map: LocalMap,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for LocalTurn {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this turn hold the mutex: nobody waits, so forget it.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 2) {
            map.remove(&self.id);
        }
    }
}

/// The shared lock, renewed by an owned task until released.
struct SharedLock {
    key: String,
    owner: String,
    lock: Arc<dyn WakeLock>,
    lost: CancellationToken,
    renewal: JoinHandle<()>,
    released: bool,
    tasks: TaskTracker,
    fence: u64,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        self.renewal.abort();
        if !self.released {
            // Dropped without `release` (a panic or a cancelled caller): free the key rather than
            // leave the tenant blocked until the TTL runs out.
            let (lock, key, owner) = (self.lock.clone(), self.key.clone(), self.owner.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                self.tasks.spawn_on(
                    async move {
                        let _ = lock.release(&key, &owner).await;
                    },
                    &rt,
                );
            }
        }
    }
}

/// Both layers of a tenant's lock. Call `release` when done; dropping it releases in the background.
pub struct TenantGuard {
    shared: SharedLock,
    _turn: LocalTurn,
}

impl TenantGuard {
    /// Cancelled when the shared lock was lost (renewal refused or failing past the TTL): the
    /// holder must abandon its operation, another replica may own the tenant now.
    pub fn lost(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// This acquisition's fencing token: every status write under the lock carries it.
    pub fn fence(&self) -> u64 {
        self.shared.fence
    }

    pub async fn release(mut self) {
        self.shared.renewal.abort();
        self.shared.released = true;
        if let Err(e) = self
            .shared
            .lock
            .release(&self.shared.key, &self.shared.owner)
            .await
        {
            tracing::warn!(key = %self.shared.key, error = %e, "wake lock release failed; it expires with its TTL");
        }
    }
}

impl TenantLocks {
    /// `ttl` is `WAKE_LOCK_TTL_S`; the key's lease is the shorter of it and `MAX_LEASE`.
    pub fn new(lock: Arc<dyn WakeLock>, ttl: Duration, tasks: TaskTracker) -> Self {
        TenantLocks {
            lock,
            ttl: ttl.min(MAX_LEASE),
            local: LocalMap::default(),
            tasks,
            floors: None,
        }
    }

    /// Reads each tenant's stored fence before acquiring its lock (see `floors`).
    pub fn with_floors(mut self, registry: Arc<dyn Registry>) -> Self {
        self.floors = Some(registry);
        self
    }

    /// The stored fence of the tenant, 0 when unknown (a failed read only loses the floor).
    async fn floor(&self, id: &TenantId) -> u64 {
        let Some(registry) = &self.floors else {
            return 0;
        };
        match registry.get(id).await {
            Ok(rec) => rec.map_or(0, |r| r.fence),
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "wake lock: stored fence unreadable; acquiring without a floor");
                0
            }
        }
    }

    fn mutex(&self, id: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// Waits for this process's turn until `deadline`; `None` when it did not come in time.
    pub async fn wait_turn(&self, id: &TenantId, deadline: Instant) -> Option<LocalTurn> {
        let guard = tokio::time::timeout_at(deadline, self.mutex(id).lock_owned())
            .await
            .ok()?;
        Some(LocalTurn {
            id: id.clone(),
            map: self.local.clone(),
            _guard: guard,
        })
    }

    /// This process's turn if nobody here holds it.
    pub fn try_turn(&self, id: &TenantId) -> Option<LocalTurn> {
        let guard = self.mutex(id).try_lock_owned().ok()?;
        Some(LocalTurn {
            id: id.clone(),
            map: self.local.clone(),
            _guard: guard,
        })
    }

    /// One attempt at the shared lock; on success the turn becomes a full guard.
    pub async fn try_shared(
        &self,
        turn: LocalTurn,
    ) -> Result<Result<TenantGuard, LocalTurn>, StoreError> {
        let key = common::wake_lock_key(&turn.id);
        let owner = uuid::Uuid::new_v4().to_string();
        let floor = self.floor(&turn.id).await;
        let Some(fence) = self
            .lock
            .try_acquire_fenced(&key, &owner, self.ttl, floor)
            .await?
        else {
            return Ok(Err(turn));
        };
        let lost = CancellationToken::new();
        let renewal = tokio::spawn(renew(
            self.lock.clone(),
            key.clone(),
            owner.clone(),
            self.ttl,
            lost.clone(),
        ));
        Ok(Ok(TenantGuard {
            shared: SharedLock {
                key,
                owner,
                lock: self.lock.clone(),
                lost,
                renewal,
                released: false,
                tasks: self.tasks.clone(),
                fence,
            },
            _turn: turn,
        }))
    }

    /// The tenant's lock if it is free right now (background loops skip busy tenants).
    pub async fn try_lock(&self, id: &TenantId) -> Result<Option<TenantGuard>, StoreError> {
        let Some(turn) = self.try_turn(id) else {
            return Ok(None);
        };
        Ok(self.try_shared(turn).await?.ok())
    }

    /// Waits for the tenant's lock until `deadline`; `None` when it stayed busy.
    pub async fn lock(
        &self,
        id: &TenantId,
        deadline: Instant,
    ) -> Result<Option<TenantGuard>, StoreError> {
        let Some(mut turn) = self.wait_turn(id, deadline).await else {
            return Ok(None);
        };
        loop {
            match self.try_shared(turn).await? {
                Ok(guard) => return Ok(Some(guard)),
                Err(t) => turn = t,
            }
            if Instant::now() + RETRY_EVERY > deadline {
                return Ok(None);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

/// Renews every TTL/3; cancels `lost` when the lock is refused or cannot be renewed within the TTL.
async fn renew(
    lock: Arc<dyn WakeLock>,
    key: String,
    owner: String,
    ttl: Duration,
    lost: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_millis(50));
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match lock.renew(&key, &owner, ttl).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => {
                tracing::warn!(key = %key, "wake lock lost: another owner holds it");
                lost.cancel();
                return;
            }
            Err(e) if last_ok.elapsed() >= ttl => {
                tracing::warn!(key = %key, error = %e, "wake lock lost: renewal failing past its TTL");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "wake lock renewal failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::lock::MemoryLock;

    fn locks(ttl: Duration) -> (TenantLocks, Arc<MemoryLock>) {
        let lock = Arc::new(MemoryLock::new());
        (
            TenantLocks::new(lock.clone(), ttl, TaskTracker::new()),
            lock,
        )
    }

    #[tokio::test]
    async fn excludes_and_releases() {
        let (locks, _) = locks(Duration::from_secs(10));
        let id = TenantId::parse("bob").unwrap();
        let g = locks.try_lock(&id).await.unwrap().expect("free");
        assert!(locks.try_lock(&id).await.unwrap().is_none());
        g.release().await;
        let g = locks.try_lock(&id).await.unwrap().expect("free again");
        drop(g);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(locks.lock(&id, deadline).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn another_replica_holding_the_key_blocks_until_deadline() {
        let (locks, shared) = locks(Duration::from_secs(10));
        let id = TenantId::parse("bob").unwrap();
        let key = common::wake_lock_key(&id);
        assert!(shared
            .try_acquire(&key, "other", Duration::from_secs(10))
            .await
            .unwrap());
        let deadline = Instant::now() + Duration::from_millis(300);
        assert!(locks.lock(&id, deadline).await.unwrap().is_none());
        shared.release(&key, "other").await.unwrap();
        assert!(locks.try_lock(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn renewal_keeps_the_lock_past_its_ttl_and_reports_loss() {
        let (locks, shared) = locks(Duration::from_millis(300));
        let id = TenantId::parse("bob").unwrap();
        let key = common::wake_lock_key(&id);
        let g = locks.try_lock(&id).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!shared
            .try_acquire(&key, "other", Duration::from_secs(1))
            .await
            .unwrap());
        assert!(!g.lost().is_cancelled());
        // Another owner takes it over (e.g. after a partition): the renewal reports the loss.
        shared.release(&key, &g.shared.owner).await.unwrap();
        shared
            .try_acquire(&key, "thief", Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), g.lost().cancelled())
            .await
            .expect("loss reported");
    }
}
