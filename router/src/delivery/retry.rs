//! The one retry policy of delivery: capped exponential backoff (`RETRY_BACKOFF_MS`, doubling up to
//! `RETRY_BACKOFF_MAX_MS`), every wait cut short by shutdown or a lost claim.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use common::TenantId;
use tokio_util::sync::CancellationToken;

use super::Interrupted;
use crate::config::DeliveryConfig;

/// Waits `d`, or returns `Err(Interrupted)` as soon as `stop` fires.
pub(super) async fn pause(d: Duration, stop: &CancellationToken) -> Result<(), Interrupted> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = stop.cancelled() => Err(Interrupted),
    }
}

/// Waits the delay before retry number `attempt` (1-based), or until `stop` fires.
pub(super) async fn backoff(
    cfg: &DeliveryConfig,
    attempt: u32,
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    pause(cfg.backoff(attempt), stop).await
}

/// What one attempt of [`until_done`] came to.
pub(super) enum Attempt<T, E> {
    /// A final answer (success, or a failure retrying will not change).
    Done(T),
    /// A passing failure: wait and try again.
    Again(E),
}

/// Runs `op` until it gives a final answer, backing off after each passing failure (logged with
/// `what`) however long that takes; only `stop` ends it early. For what delivery cannot do
/// without: the inbox, the tenant's secrets from the orchestrator.
pub(super) async fn until_done<T, E, F, Fut>(
    cfg: &DeliveryConfig,
    stop: &CancellationToken,
    tenant: &TenantId,
    what: &str,
    mut op: F,
) -> Result<T, Interrupted>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Again(e) => {
                attempt += 1;
                tracing::warn!(tenant = %tenant, error = %e, attempt, "{what} unavailable, retrying");
                backoff(cfg, attempt, stop).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg() -> DeliveryConfig {
        DeliveryConfig {
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..DeliveryConfig::default()
        }
    }

    #[tokio::test]
    async fn retries_passing_failures_until_an_answer() {
        let calls = AtomicU32::new(0);
        let t = TenantId::parse("t").unwrap();
        let got = until_done(&cfg(), &CancellationToken::new(), &t, "thing", || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0..=2 => Attempt::Again("down"),
                n => Attempt::Done(n),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_at_once() {
        let stop = CancellationToken::new();
        let t = TenantId::parse("t").unwrap();
        let slow = DeliveryConfig {
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            ..DeliveryConfig::default()
        };
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stop.cancel();
            })
        };
        let began = std::time::Instant::now();
        let got: Result<(), Interrupted> = until_done(&slow, &stop, &t, "thing", || async {
            Attempt::<(), _>::Again("down")
        })
        .await;
        assert!(got.is_err(), "interrupted");
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "not the 60 s backoff"
        );
        stopper.await.unwrap();
    }
}
