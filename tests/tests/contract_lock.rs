//! The wake-lock contract against every adapter, and a Redis outage.

use std::time::Duration;

use common::contract;
use common::lock::redis::RedisLock;
use common::lock::{MemoryLock, WakeLock};
use platform_tests::backends::{redis_outage, Redis};

#[tokio::test]
async fn memory_lock_meets_the_contract() {
    contract::lock::lock(&MemoryLock::new()).await;
}

#[tokio::test]
async fn redis_lock_meets_the_contract() {
    let redis = Redis::start().await;
    contract::lock::lock(&RedisLock::new(redis.pool())).await;
}

#[tokio::test]
async fn memory_lock_hands_out_fencing_tokens() {
    contract::lock::fencing(&MemoryLock::new()).await;
}

#[tokio::test]
async fn redis_lock_hands_out_fencing_tokens() {
    let redis = Redis::start().await;
    contract::lock::fencing(&RedisLock::new(redis.pool())).await;
}

/// 100 racing acquisitions over four replicas, released one by one: every token is distinct.
#[tokio::test]
async fn redis_fencing_tokens_are_unique_across_replicas() {
    let redis = Redis::start().await;
    let replicas: Vec<RedisLock> = (0..4).map(|_| RedisLock::new(redis.pool())).collect();
    let mut tokens = Vec::new();
    for round in 0..25 {
        let tries = replicas.iter().enumerate().map(|(r, l)| async move {
            let owner = format!("r{r}-{round}");
            let got = l
                .try_acquire_fenced(
                    "tenant:waking:fence-race",
                    &owner,
                    Duration::from_secs(60),
                    0,
                )
                .await
                .unwrap();
            (owner, got)
        });
        let won: Vec<(String, u64)> = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter_map(|(o, g)| g.map(|g| (o, g)))
            .collect();
        assert_eq!(won.len(), 1, "exactly one winner per round");
        let (owner, token) = &won[0];
        tokens.push(*token);
        assert!(replicas[0]
            .release("tenant:waking:fence-race", owner)
            .await
            .unwrap());
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

#[tokio::test]
async fn redis_lock_is_exclusive_across_replicas() {
    let redis = Redis::start().await;
    let replicas: Vec<RedisLock> = (0..4).map(|_| RedisLock::new(redis.pool())).collect();
    let tries = replicas.iter().enumerate().flat_map(|(r, l)| {
        (0..25).map(move |n| async move {
            l.try_acquire(
                "tenant:waking:race",
                &format!("r{r}-{n}"),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
        })
    });
    let won = futures::future::join_all(tries).await;
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "exactly one of 100 wins"
    );
}

#[tokio::test]
async fn redis_lock_fails_fast_during_an_outage_and_recovers() {
    let mut redis = Redis::start().await;
    let lock = RedisLock::new(redis.pool());
    let outage = redis_outage(&mut redis, Duration::from_secs(5), || async {
        lock.try_acquire("tenant:waking:outage", "me", Duration::from_millis(10))
            .await
            .map(drop)
    })
    .await;
    assert!(lock.ping().await.is_ok());
    eprintln!("redis lock outage: {outage:?}");
}

/// Issue 19: a Go orchestrator's lock holds `"1"` (and is released with a plain `DEL`). A new
/// replica's wake must wait it out, never take, renew or delete it.
#[tokio::test]
async fn a_go_lock_holding_1_is_waited_out_never_taken_or_deleted() {
    let redis = Redis::start().await;
    let lock = RedisLock::new(redis.pool());
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = "tenant:waking:bob";
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("1")
        .arg("PX")
        .arg(1500)
        .query_async(&mut c)
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    assert!(!lock.try_acquire(key, "new-replica", ttl).await.unwrap());
    assert!(!lock.renew(key, "new-replica", ttl).await.unwrap());
    assert!(!lock.release(key, "new-replica").await.unwrap());
    let held: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(held.as_deref(), Some("1"), "the Go lock is left as it was");
    // Once it expires, the wake gets it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !lock.try_acquire(key, "new-replica", ttl).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Go lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
