//! The inbox contract against every adapter; the Redis inbox shared by several router replicas;
//! a Redis outage.

use std::time::Duration;

use common::contract::{self, tid};
use common::inbox::redis::RedisInbox;
use common::inbox::sqlite::SqliteInbox;
use common::inbox::{Appended, Inbox};
use platform_tests::backends::{redis_outage, Redis};

#[tokio::test]
async fn sqlite_inbox_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract::inbox::inbox(&SqliteInbox::open(&dir.path().join("inbox.db")).unwrap()).await;
}

#[tokio::test]
async fn redis_inbox_meets_the_contract() {
    let redis = Redis::start().await;
    contract::inbox::inbox(&RedisInbox::new(redis.pool())).await;
}

/// Telegram retries land on any replica at the same time: each update is stored once.
#[tokio::test]
async fn redis_inbox_dedupes_across_replicas() {
    let redis = Redis::start().await;
    let replicas: Vec<RedisInbox> = (0..3).map(|_| RedisInbox::new(redis.pool())).collect();
    let t = tid("shared");
    let appends = replicas.iter().flat_map(|inbox| {
        let t = &t;
        (0..100).map(move |u| async move { inbox.append(t, u, b"{}").await.unwrap() })
    });
    let results = futures::future::join_all(appends).await;
    let new = results.iter().filter(|r| **r == Appended::New).count();
    assert_eq!(new, 100, "300 appends of 100 updates");
    let pending = replicas[1].pending(&t, 1000).await.unwrap();
    assert_eq!(pending.len(), 100);
    let mut ids: Vec<i64> = pending.iter().map(|e| e.update_id).collect();
    ids.sort();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
}

/// An ack of the last entry racing with a new append never drops the tenant from the set while
/// it has entries, or a replica would not find them.
#[tokio::test]
async fn redis_inbox_keeps_the_tenant_listed_while_it_has_entries() {
    let redis = Redis::start().await;
    let (router1, router2) = (RedisInbox::new(redis.pool()), RedisInbox::new(redis.pool()));
    let t = tid("race");
    for u in 0..200 {
        router1.append(&t, u, b"{}").await.unwrap();
        let head = router2.pending(&t, 1).await.unwrap().remove(0);
        let (acked, appended) = tokio::join!(
            router2.ack(&t, &head.id),
            router1.append(&t, u + 10_000, b"{}")
        );
        acked.unwrap();
        assert_eq!(appended.unwrap(), Appended::New);
        let pending = router1.pending(&t, 1000).await.unwrap();
        let listed = router2.tenants().await.unwrap().contains(&t);
        assert_eq!(
            listed,
            !pending.is_empty(),
            "round {u}: listed {listed}, {} pending",
            pending.len()
        );
        for e in pending {
            router2.ack(&t, &e.id).await.unwrap();
        }
        assert!(!router1.tenants().await.unwrap().contains(&t));
    }
}

#[tokio::test]
async fn redis_inbox_dedupe_marks_expire() {
    let redis = Redis::start().await;
    let inbox = RedisInbox::new(redis.pool());
    let t = tid("marks");
    inbox.append(&t, 7, b"{}").await.unwrap();
    let mut c = redis.client().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg("router:inbox:seen:marks")
        .query_async(&mut c)
        .await
        .unwrap();
    let day = common::inbox::DEDUPE_TTL.as_secs() as i64;
    assert!((day - 10..=day).contains(&ttl), "dedupe marks ttl {ttl}");
}

/// Issue 15: dedupe marks cost a bounded amount per tenant (one key per update filled Redis),
/// and the newest marks, those Telegram's retries hit, still catch duplicates.
#[tokio::test]
async fn redis_inbox_dedupe_marks_are_one_bounded_key_per_tenant() {
    let redis = Redis::start().await;
    let inbox = RedisInbox::new(redis.pool());
    let t = tid("busy");
    let n = common::inbox::DEDUPE_MAX_PER_TENANT as i64 + 500;
    futures::StreamExt::for_each_concurrent(futures::stream::iter(1..=n), 64, |u| {
        let (inbox, t) = (&inbox, &t);
        async move {
            inbox.append(t, u, b"{}").await.unwrap();
        }
    })
    .await;
    let mut c = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("router:inbox:seen:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        keys,
        vec!["router:inbox:seen:busy".to_owned()],
        "one key per tenant"
    );
    let marks: usize = redis::cmd("ZCARD")
        .arg("router:inbox:seen:busy")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(marks, common::inbox::DEDUPE_MAX_PER_TENANT);
    assert_eq!(
        inbox.append(&t, n, b"{}").await.unwrap(),
        Appended::Duplicate
    );
    assert_eq!(
        inbox.append(&t, n - 100, b"{}").await.unwrap(),
        Appended::Duplicate
    );
    // A mark of the version before (one key per update) is still honoured until it expires.
    redis::cmd("SET")
        .arg("router:inbox:seen:busy:999999")
        .arg("1")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert_eq!(
        inbox.append(&t, 999_999, b"{}").await.unwrap(),
        Appended::Duplicate
    );
}

#[tokio::test]
async fn redis_inbox_fails_fast_during_an_outage_and_recovers() {
    let mut redis = Redis::start().await;
    let inbox = RedisInbox::new(redis.pool());
    let t = tid("outage");
    let mut u = 0;
    let outage = redis_outage(&mut redis, Duration::from_secs(5), || {
        u += 1;
        let (inbox, t) = (&inbox, &t);
        async move { inbox.append(t, u, b"{}").await.map(drop) }
    })
    .await;
    assert!(inbox.stats().await.is_ok());
    eprintln!("redis inbox outage: {outage:?}");
}
