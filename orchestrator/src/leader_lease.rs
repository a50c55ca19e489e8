//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it: the holder renews,
//! others take over once the lease went unrenewed for its duration as observed on their own clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElector;
use crate::runtime::kubernetes::is_status;

/// How long a lease lasts, how often the leader renews it and how often others retry.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this replica last saw of the lease, and when it first saw it that way.
#[derive(Default)]
struct Observed {
    record: Option<(Option<String>, String)>,
    since: Option<Instant>,
    /// Leadership is valid until this instant (the start of the last successful renewal + duration).
    leading_until: Option<Instant>,
}

pub struct LeaseElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Mutex<Observed>,
}

enum Outcome {
    Leading(Instant),
    Following,
}

impl LeaseElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        LeaseElector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: Mutex::new(Observed::default()),
        }
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Outcome, kube::Error> {
        let started = Instant::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Outcome::Leading(started)),
                Err(e) if is_status(&e, 409) => Ok(Outcome::Following),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let expired = {
            let mut o = self.observed();
            let record = Some((holder.clone(), rv));
            if o.record != record {
                o.record = record;
                o.since = Some(started);
            }
            let duration = spec
                .lease_duration_seconds
                .map_or(self.timing.lease_duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                });
            o.since
                .is_none_or(|since| started.duration_since(since) >= duration)
        };
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() && !expired {
            return Ok(Outcome::Following);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquire = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.spec(acquire, transitions));
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Outcome::Leading(started)),
            Err(e) if is_status(&e, 409) => Ok(Outcome::Following),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up on shutdown so another replica need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "leader election: could not release the lease");
        }
    }
}

#[async_trait]
impl LeaderElector for LeaseElector {
    fn is_leader(&self) -> bool {
        self.observed()
            .leading_until
            .is_some_and(|until| Instant::now() < until)
    }

    async fn run(&self, shutdown: CancellationToken) {
        loop {
            let was_leader = self.observed().leading_until.is_some();
            let outcome = self.try_acquire_or_renew().await;
            let wait = match outcome {
                Ok(Outcome::Leading(started)) => {
                    self.observed().leading_until = Some(started + self.timing.lease_duration);
                    if !was_leader {
                        tracing::info!(identity = %self.identity, lease = %self.name, "leader election: became leader");
                    }
                    self.timing.renew_interval
                }
                other => {
                    self.observed().leading_until = None;
                    if was_leader {
                        tracing::warn!(identity = %self.identity, "leader election: lost leadership");
                    }
                    if let Err(e) = other {
                        tracing::warn!(error = %e, "leader election: lease request failed");
                    }
                    self.timing.retry_period
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if self.observed().leading_until.take().is_some() {
            self.release().await;
        }
    }
}
