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
