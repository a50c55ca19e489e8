//! The idle controller's one clock. `last_active_at` is stamped by whichever replica saw the
//! activity, with that replica's wall clock; comparing it with the leader's wall clock shifts every
//! idle timeout by the skew between them. Instead the leader notes, on its own monotonic clock,
//! when it first saw each stamp, and a tenant expires once its stamp stayed unchanged for its
//! timeout: the stamp's value is only ever compared for equality, never with a clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TenantId, TenantRecord};
use tokio::time::Instant;

/// When this process first saw each tenant's current activity stamp.
#[derive(Default)]
pub struct IdleClock {
    seen: Mutex<HashMap<TenantId, (DateTime<Utc>, Instant)>>,
}

impl IdleClock {
    /// How long `rec`'s activity stamp has stayed as it is, as far as this process watched it. A
    /// stamp seen for the first time (new activity, or a new leader) starts at zero: after a leader
    /// change a tenant sleeps up to one idle timeout late, never early.
    pub fn idle_for(&self, rec: &TenantRecord) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match seen.get(&rec.tenant_id) {
            Some((stamp, since)) if *stamp == rec.last_active_at => now.duration_since(*since),
            _ => {
                seen.insert(rec.tenant_id.clone(), (rec.last_active_at, now));
                Duration::ZERO
            }
        }
    }

    /// True when the tenant's stamp stayed unchanged for longer than its idle timeout.
    pub fn expired(&self, rec: &TenantRecord) -> bool {
        self.idle_for(rec) > Duration::from_secs(rec.idle_timeout_s)
    }

    /// Forgets tenants that are not among `running` (stopped or deleted).
    pub fn retain(&self, running: &[TenantRecord]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|id, _| running.iter().any(|r| &r.tenant_id == id));
    }

    /// Moves every observation `by` into the past, as if this process had watched that much
    /// longer. Only for tests, which cannot wait out real idle timeouts.
    pub fn age(&self, by: Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (_, since) in seen.values_mut() {
            if let Some(earlier) = since.checked_sub(by) {
                *since = earlier;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Secret;

    fn record(at: DateTime<Utc>) -> TenantRecord {
        let mut r = TenantRecord::new(TenantId::parse("a").unwrap(), Secret::new("t"), 60, "t", at);
        r.last_active_at = at;
        r
    }

    /// A stamp from a clock an hour behind or ahead changes nothing: only its change counts.
    #[test]
    fn only_an_unchanged_stamp_ages_and_its_value_never_counts() {
        let clock = IdleClock::default();
        for skew in [-3600, 0, 3600] {
            let rec = record(Utc::now() + chrono::Duration::seconds(skew));
            assert!(
                !clock.expired(&rec),
                "first sight of a stamp is fresh ({skew} s)"
            );
            clock.age(Duration::from_secs(59));
            assert!(!clock.expired(&rec), "not before the timeout ({skew} s)");
            clock.age(Duration::from_secs(2));
            assert!(clock.expired(&rec), "after the timeout ({skew} s)");
            // New activity, whatever its stamp says, starts the count again.
            let newer = record(rec.last_active_at - chrono::Duration::seconds(7200));
            assert!(!clock.expired(&newer));
        }
        clock.retain(&[]);
        assert!(clock.seen.lock().unwrap().is_empty());
    }
}
