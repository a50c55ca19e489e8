//! The one retry policy of the router: capped exponential backoff (`RETRY_BACKOFF_MS`, doubling
//! up to `RETRY_BACKOFF_MAX_MS`), optionally bounded, or the wait a server asked for (Telegram's
//! `retry_after`); every wait cut short by shutdown or a lost claim.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use common::TenantId;
use tokio_util::sync::CancellationToken;

use super::Interrupted;
use crate::config::DeliveryConfig;

/// Waits `d`, or returns `Err(Interrupted)` as soon as `stop` fires.
pub(crate) async fn pause(d: Duration, stop: &CancellationToken) -> Result<(), Interrupted> {
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

/// The retries of one operation: passing failures counted against an optional bound and backed
/// off, waits a server asked for taken as told (not counted); each wait ends early when `stop` fires.
pub(crate) struct Retries<'a> {
    cfg: &'a DeliveryConfig,
    stop: &'a CancellationToken,
    failures: u32,
    /// Most attempts in all (`TELEGRAM_ATTEMPTS`); `None`: until it works.
    attempts: Option<u32>,
}

impl<'a> Retries<'a> {
    /// Retries as long as it takes.
    pub(crate) fn unbounded(cfg: &'a DeliveryConfig, stop: &'a CancellationToken) -> Self {
        Retries {
            cfg,
            stop,
            failures: 0,
            attempts: None,
        }
    }

    /// At most `attempts` attempts in all.
    pub(crate) fn at_most(
        cfg: &'a DeliveryConfig,
        stop: &'a CancellationToken,
        attempts: u32,
    ) -> Self {
        Retries {
            attempts: Some(attempts),
            ..Retries::unbounded(cfg, stop)
        }
    }

    /// Passing failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A passing failure: `Ok(true)` once its backoff is waited and another attempt is due,
    /// `Ok(false)` when the attempts are spent (nothing waited).
    pub(crate) async fn again(&mut self) -> Result<bool, Interrupted> {
        self.failures += 1;
        if self.attempts.is_some_and(|n| self.failures >= n) {
            return Ok(false);
        }
        backoff(self.cfg, self.failures, self.stop).await?;
        Ok(true)
    }

    /// Waits what the server asked for (a 429's `retry_after`), however long; not a failure.
    pub(crate) async fn after(&self, d: Duration) -> Result<(), Interrupted> {
        pause(d, self.stop).await
    }
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
    let mut retries = Retries::unbounded(cfg, stop);
    loop {
        match op().await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Again(e) => {
                let attempt = retries.failures() + 1;
                tracing::warn!(tenant = %tenant, error = %e, attempt, "{what} unavailable, retrying");
                retries.again().await?;
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

    #[tokio::test]
    async fn a_bounded_retry_stops_after_its_attempts_without_waiting_again() {
        let stop = CancellationToken::new();
        let cfg = cfg();
        let mut r = Retries::at_most(&cfg, &stop, 3);
        assert!(r.again().await.unwrap(), "attempt 2");
        assert!(r.again().await.unwrap(), "attempt 3");
        assert!(!r.again().await.unwrap(), "spent after 3 attempts");
        assert_eq!(r.failures(), 3);
    }

    #[tokio::test]
    async fn a_server_given_wait_ends_at_shutdown() {
        let stop = CancellationToken::new();
        let cfg = cfg();
        let r = Retries::at_most(&cfg, &stop, 1);
        let wait = r.after(Duration::from_secs(3600));
        tokio::pin!(wait);
        assert!(
            futures::FutureExt::now_or_never(&mut wait).is_none(),
            "waits while running"
        );
        stop.cancel();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect("ended at once, not after the hour")
                .is_err(),
            "interrupted"
        );
        let mut spent = Retries::at_most(&cfg, &stop, 5);
        assert!(spent.again().await.is_err(), "a backoff too");
    }
}
