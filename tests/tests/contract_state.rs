//! The state-store contract against every adapter.

use common::contract::{self, tid};
use common::state::{DirStateStore, StateStore};
use platform_tests::backends::{unique_name, Moto};

#[tokio::test]
async fn dir_state_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract::state::state(&DirStateStore::new(dir.path().join("state"))).await;
}

#[tokio::test]
async fn s3_state_store_meets_the_contract() {
    let moto = Moto::start().await;
    contract::state::state(&moto.state_store(&unique_name("state")).await).await;
}

#[tokio::test]
async fn s3_state_store_uses_the_go_prefix() {
    let moto = Moto::start().await;
    let bucket = unique_name("state");
    let store = moto.state_store(&bucket).await;
    store
        .ensure_bucket()
        .await
        .expect("ensure_bucket is idempotent");
    store.save(&tid("bob"), b"memory").await.unwrap();
    let listed = store
        .client()
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["tenants/bob/brain.db"]);
    store.delete(&tid("bob")).await.unwrap();
    let listed = store
        .client()
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(listed.contents().is_empty(), "delete removes the prefix");
}

#[tokio::test]
async fn s3_state_store_reports_an_unreachable_endpoint() {
    platform_tests::backends::set_aws_env();
    let port = platform_tests::platform::free_port();
    let store = common::state::s3::S3StateStore::connect(
        "nowhere",
        Some(&format!("http://127.0.0.1:{port}")),
        Some("us-east-1"),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(
        matches!(err, common::StoreError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
