//! The endpoint-cache contract against every adapter, and a Redis outage.

use std::time::Duration;

use common::cache::redis::RedisCache;
use common::cache::{EndpointCache, MemoryCache, ENDPOINT_TTL};
use common::contract::{self, tid};
use platform_tests::backends::{redis_outage, Redis};

#[tokio::test]
async fn memory_cache_meets_the_contract() {
    contract::cache::cache(&MemoryCache::new()).await;
}

#[tokio::test]
async fn redis_cache_meets_the_contract() {
    let redis = Redis::start().await;
    contract::cache::cache(&RedisCache::new(redis.pool())).await;
}

#[tokio::test]
async fn redis_cache_uses_the_go_key_with_a_ttl() {
    let redis = Redis::start().await;
    let cache = RedisCache::new(redis.pool());
    let id = tid("bob");
    cache.set(&id, "10.0.0.9:3000", ENDPOINT_TTL).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("router:endpoint:bob")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(value, "10.0.0.9:3000");
    let ttl: i64 = redis::cmd("TTL")
        .arg("router:endpoint:bob")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((290..=300).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn redis_cache_fails_fast_during_an_outage_and_recovers() {
    let mut redis = Redis::start().await;
    let cache = RedisCache::new(redis.pool());
    let id = tid("outage");
    let outage = redis_outage(&mut redis, Duration::from_secs(5), || {
        cache.set(&id, "127.0.0.1:1", Duration::from_secs(5))
    })
    .await;
    assert!(cache.get(&id).await.is_ok());
    eprintln!("redis cache outage: {outage:?}");
}

/// Redis closing the services' connection (`CLIENT KILL`, an idle timeout, a failover) costs at
/// most one failed call: the next one runs on a new connection.
#[tokio::test]
async fn a_connection_redis_closes_is_replaced_by_the_next_call() {
    let redis = Redis::start().await;
    let cache = RedisCache::new(redis.pool());
    let id = tid("killed");
    cache
        .set(&id, "127.0.0.1:1", Duration::from_secs(60))
        .await
        .unwrap();
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let me: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut admin)
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        killed, 1,
        "the cache's one connection (admin is client {me})"
    );
    let first = cache.get(&id).await;
    if let Err(e) = &first {
        assert!(matches!(e, common::StoreError::Unavailable { .. }), "{e:?}");
    }
    assert_eq!(
        cache.get(&id).await.unwrap().as_deref(),
        Some("127.0.0.1:1"),
        "the call after the kill uses a new connection"
    );
}
