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
