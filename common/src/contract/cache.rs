//! `EndpointCache`: set/get/remove and expiry after the TTL.

use std::time::Duration;

use super::{eventually, tid, EXPIRY_DEADLINE};
use crate::cache::{EndpointCache, ENDPOINT_TTL};

pub async fn cache(c: &dyn EndpointCache) {
    c.ping().await.expect("ping");
    let (a, b) = (tid("cache-a"), tid("cache-b"));

    assert_eq!(c.get(&a).await.unwrap(), None);
    c.set(&a, "10.0.0.1:3000", ENDPOINT_TTL).await.unwrap();
    assert_eq!(c.get(&a).await.unwrap().as_deref(), Some("10.0.0.1:3000"));
    c.set(&a, "10.0.0.2:3000", ENDPOINT_TTL).await.unwrap();
    assert_eq!(
        c.get(&a).await.unwrap().as_deref(),
        Some("10.0.0.2:3000"),
        "set replaces"
    );
    assert_eq!(c.get(&b).await.unwrap(), None, "tenants are independent");

    c.remove(&a).await.unwrap();
    assert_eq!(c.get(&a).await.unwrap(), None);
    c.remove(&a).await.unwrap(); // idempotent

    c.set(&b, "127.0.0.1:4000", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(c.get(&b).await.unwrap().as_deref(), Some("127.0.0.1:4000"));
    eventually("the cache entry to expire", EXPIRY_DEADLINE, || async {
        c.get(&b).await.unwrap().is_none()
    })
    .await;
}
