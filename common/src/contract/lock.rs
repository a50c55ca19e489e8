//! `WakeLock`: one owner per key, owner-checked renew and release, expiry after the TTL.

use std::time::Duration;

use super::{eventually, EXPIRY_DEADLINE};
use crate::lock::WakeLock;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(300);

pub async fn lock(l: &dyn WakeLock) {
    l.ping().await.expect("ping");
    let key = "tenant:waking:contract";

    assert!(
        l.try_acquire(key, "a", LONG).await.unwrap(),
        "free lock is taken"
    );
    assert!(
        !l.try_acquire(key, "b", LONG).await.unwrap(),
        "held lock is exclusive"
    );
    assert!(!l.try_acquire(key, "a", LONG).await.unwrap(), "no re-entry");
    assert!(
        !l.renew(key, "b", LONG).await.unwrap(),
        "only the owner renews"
    );
    assert!(l.renew(key, "a", LONG).await.unwrap(), "the owner renews");
    assert!(
        !l.release(key, "b",).await.unwrap(),
        "only the owner releases"
    );
    assert!(
        !l.try_acquire(key, "b", LONG).await.unwrap(),
        "a foreign release frees nothing"
    );
    assert!(l.release(key, "a").await.unwrap(), "the owner releases");
    assert!(
        l.try_acquire(key, "b", LONG).await.unwrap(),
        "released lock is free"
    );
    assert!(
        !l.renew("tenant:waking:none", "a", LONG).await.unwrap(),
        "no lock, no renew"
    );
    assert!(!l.release("tenant:waking:none", "a").await.unwrap());

    // Keys are independent.
    assert!(l
        .try_acquire("tenant:waking:other", "a", LONG)
        .await
        .unwrap());

    // A crashed owner's lock frees itself after the TTL; the old owner cannot renew it then.
    let key = "tenant:waking:expiry";
    assert!(l.try_acquire(key, "a", SHORT).await.unwrap());
    assert!(!l.try_acquire(key, "b", SHORT).await.unwrap());
    eventually("the lock to expire", EXPIRY_DEADLINE, || async {
        l.try_acquire(key, "b", LONG).await.unwrap()
    })
    .await;
    assert!(
        !l.renew(key, "a", LONG).await.unwrap(),
        "expired owner cannot renew"
    );
    assert!(
        !l.release(key, "a").await.unwrap(),
        "expired owner cannot release the new one"
    );
    assert!(
        !l.try_acquire(key, "c", LONG).await.unwrap(),
        "new owner still holds it"
    );

    // A lapsed lock that nobody took is no longer held: its old owner's release says so.
    let key = "tenant:waking:lapsed";
    assert!(l.try_acquire(key, "a", SHORT).await.unwrap());
    // Waiting out the TTL is the point here: no condition to poll for.
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        !l.release(key, "a").await.unwrap(),
        "a lapsed lock is not reported released"
    );
    assert!(!l.renew(key, "a", LONG).await.unwrap());
    assert!(l.try_acquire(key, "b", LONG).await.unwrap());

    // Renewal keeps a lock alive past its first TTL.
    let key = "tenant:waking:renewed";
    assert!(l.try_acquire(key, "a", SHORT).await.unwrap());
    assert!(l.renew(key, "a", LONG).await.unwrap());
    // Waiting out the short TTL is the point here: no condition to poll for.
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        !l.try_acquire(key, "b", LONG).await.unwrap(),
        "renewed lock outlives its first TTL"
    );
    assert!(l.release(key, "a").await.unwrap());
}

/// Fencing tokens: every acquisition gets one above all before it and above the caller's floor;
/// a refused acquisition gets none.
pub async fn fencing(l: &dyn WakeLock) {
    let key = "tenant:waking:fenced";
    let first = l
        .try_acquire_fenced(key, "a", LONG, 0)
        .await
        .unwrap()
        .expect("free lock is taken");
    assert_eq!(
        l.try_acquire_fenced(key, "b", LONG, 0).await.unwrap(),
        None,
        "held lock is exclusive and hands out no token"
    );
    assert!(
        !l.try_acquire(key, "b", LONG).await.unwrap(),
        "a fenced lock excludes plain acquisitions"
    );
    assert!(l.release(key, "a").await.unwrap(), "the owner releases");
    let second = l
        .try_acquire_fenced(key, "b", LONG, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(second > first, "tokens grow: {first} then {second}");
    assert!(l.release(key, "b").await.unwrap());
    // A floor above the counter (the backend lost it; the record holds a higher one) wins.
    let third = l
        .try_acquire_fenced(key, "c", LONG, second + 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third, second + 101);
    assert!(l.release(key, "c").await.unwrap());
    let fourth = l
        .try_acquire_fenced(key, "d", LONG, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(fourth > third, "the raised counter stays raised");

    // A lapsed holder's successor gets a higher token than the holder had.
    let key = "tenant:waking:fenced-expiry";
    let old = l
        .try_acquire_fenced(key, "a", SHORT, 0)
        .await
        .unwrap()
        .unwrap();
    let new =
        eventually_some(|| async { l.try_acquire_fenced(key, "b", LONG, 0).await.unwrap() }).await;
    assert!(new > old, "successor {new} above lapsed {old}");
    // Keys count independently.
    assert_eq!(
        l.try_acquire_fenced("tenant:waking:fenced-other", "a", LONG, 0)
            .await
            .unwrap(),
        Some(1)
    );
}

async fn eventually_some<F, Fut>(mut f: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let deadline = tokio::time::Instant::now() + EXPIRY_DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
