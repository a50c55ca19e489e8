//! The registry contract against every adapter; DynamoDB items as the Go platform wrote them;
//! 10,000 tenants in DynamoDB.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::contract::{self, tid};
use common::registry::dynamodb::sdk::types::{AttributeValue, PutRequest, WriteRequest};
use common::registry::dynamodb::DynamoRegistry;
use common::registry::sqlite::SqliteRegistry;
use common::registry::{Registry, StatusUpdate};
use common::{StoreError, TenantStatus};
use platform_tests::backends::{set_aws_env, unique_name, Moto};

/// Enough tenants with big enough tokens to fill more than one 1 MB Scan page.
const PAGE_TENANTS: usize = 1500;
const PAGE_TOKEN_LEN: usize = 1000;

fn sqlite() -> (tempfile::TempDir, SqliteRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let r = SqliteRegistry::open(&dir.path().join("registry.db")).unwrap();
    (dir, r)
}

#[tokio::test]
async fn sqlite_registry_meets_the_contract() {
    let (_dir, r) = sqlite();
    contract::registry::registry(&r).await;
}

#[tokio::test]
async fn sqlite_registry_keeps_lifecycle_and_events() {
    let (_dir, r) = sqlite();
    contract::registry::lifecycle(&r).await;
}

#[tokio::test]
async fn sqlite_registry_fences_status_writes() {
    let (_dir, r) = sqlite();
    contract::registry::fencing(&r).await;
}

#[tokio::test]
async fn dynamodb_registry_fences_status_writes() {
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    contract::registry::fencing(&r).await;
}

/// A Go-era item (no `fence` attribute) takes a fenced write, which then guards it.
#[tokio::test]
async fn dynamodb_registry_fences_a_go_item() {
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    batch_write(&r, vec![go_item("legacy", "idle")], 1).await;
    let id = tid("legacy");
    assert_eq!(r.get(&id).await.unwrap().unwrap().fence, 0);
    contract::registry::raise_then_refuse_older(&r, &id, 2, 1).await;
}

/// A registry file written before the lifecycle columns existed opens, reads back and takes them.
#[tokio::test]
async fn sqlite_registry_migrates_a_file_without_lifecycle_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE tenants (tenant_id TEXT PRIMARY KEY, status TEXT NOT NULL,
               pod_name TEXT NOT NULL DEFAULT '', pod_ip TEXT NOT NULL DEFAULT '', agent_port INTEGER,
               namespace TEXT NOT NULL, s3_prefix TEXT NOT NULL, bot_token TEXT NOT NULL,
               created_at TEXT NOT NULL, last_active_at TEXT NOT NULL, idle_timeout_s INTEGER NOT NULL);
             INSERT INTO tenants VALUES ('old', 'idle', '', '', NULL, 'tenants', 'tenants/old/',
               '1:t', '2024-05-01T10:00:00Z', '2024-05-01T10:00:00Z', 300);",
        )
        .unwrap();
    }
    let r = SqliteRegistry::open(&path).unwrap();
    let old = r.get(&tid("old")).await.unwrap().expect("old row");
    assert!(!old.suspended && !old.deleting && old.last_error.is_none());
    assert!(r.set_suspended(&tid("old"), true).await.unwrap().suspended);
    drop(r);
    let again = SqliteRegistry::open(&path).unwrap();
    assert!(again.get(&tid("old")).await.unwrap().unwrap().suspended);
}

#[tokio::test]
async fn sqlite_registry_lists_every_page() {
    let (_dir, r) = sqlite();
    let took = contract::registry::list_pages(&r, PAGE_TENANTS, PAGE_TOKEN_LEN).await;
    eprintln!("sqlite: listed {PAGE_TENANTS} tenants in {took:?}");
}

#[tokio::test]
async fn dynamodb_registry_meets_the_contract() {
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    r.ensure_table().await.expect("ensure_table is idempotent");
    contract::registry::registry(&r).await;
}

#[tokio::test]
async fn dynamodb_registry_keeps_lifecycle_and_events() {
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    contract::registry::lifecycle(&r).await;
    // The events live in their own table: the tenant table holds only tenants, as Go expects.
    let scan = r
        .client()
        .scan()
        .table_name(r.table())
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = scan
        .items()
        .iter()
        .filter_map(|i| i.get("tenant_id").and_then(|v| v.as_s().ok()))
        .map(String::as_str)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[tokio::test]
async fn dynamodb_registry_lists_every_page() {
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    let took = contract::registry::list_pages(&r, PAGE_TENANTS, PAGE_TOKEN_LEN).await;
    eprintln!(
        "dynamodb: listed {PAGE_TENANTS} tenants (~{} KB) in {took:?}",
        PAGE_TENANTS * PAGE_TOKEN_LEN / 1024
    );
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// An item as the Go platform wrote it: no `agent_port`, fractional seconds, and for an idle
/// tenant no `pod_name`/`pod_ip` at all.
fn go_item(id: &str, status: &str) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("tenant_id".to_owned(), s(id)),
        ("status".to_owned(), s(status)),
        ("namespace".to_owned(), s("tenants")),
        ("s3_prefix".to_owned(), s(&format!("tenants/{id}/"))),
        ("bot_token".to_owned(), s(&format!("123456:{id}-token"))),
        ("created_at".to_owned(), s("2025-01-02T03:04:05.123456789Z")),
        ("last_active_at".to_owned(), s("2025-01-02T04:05:06.5Z")),
        ("idle_timeout_s".to_owned(), AttributeValue::N("300".into())),
    ]);
    if status == "running" {
        item.insert("pod_name".into(), s(&format!("zeroclaw-{id}")));
        item.insert("pod_ip".into(), s("10.42.0.17"));
    }
    item
}

/// Writes items with BatchWriteItem, 25 per request, `parallel` requests at a time.
async fn batch_write(
    r: &DynamoRegistry,
    items: Vec<HashMap<String, AttributeValue>>,
    parallel: usize,
) {
    let requests: Vec<Vec<WriteRequest>> = items
        .chunks(25)
        .map(|chunk| {
            chunk
                .iter()
                .map(|item| {
                    let put = PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .unwrap();
                    WriteRequest::builder().put_request(put).build()
                })
                .collect()
        })
        .collect();
    for wave in requests.chunks(parallel) {
        let sends = wave.iter().map(|batch| async move {
            let mut pending = batch.clone();
            while !pending.is_empty() {
                let out = r
                    .client()
                    .batch_write_item()
                    .request_items(r.table(), pending)
                    .send()
                    .await
                    .expect("BatchWriteItem");
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(r.table()))
                    .cloned()
                    .unwrap_or_default();
            }
        });
        futures::future::join_all(sends).await;
    }
}

#[tokio::test]
async fn dynamodb_registry_reads_go_items() {
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    batch_write(
        &r,
        vec![go_item("sleepy", "idle"), go_item("busy", "running")],
        1,
    )
    .await;

    let sleepy = r.get(&tid("sleepy")).await.unwrap().expect("go item");
    assert_eq!(sleepy.status, TenantStatus::Idle);
    assert_eq!(
        (
            sleepy.pod_name.as_str(),
            sleepy.pod_ip.as_str(),
            sleepy.agent_port
        ),
        ("", "", None)
    );
    assert_eq!(sleepy.bot_token.expose(), "123456:sleepy-token");
    assert_eq!(sleepy.idle_timeout_s, 300);
    assert_eq!(sleepy.created_at.timestamp_subsec_nanos(), 123_456_789);
    assert!(!sleepy.suspended && !sleepy.deleting && sleepy.last_error.is_none());
    assert_eq!(sleepy.phase(), common::lifecycle::Phase::Sleeping);
    let busy = r.get(&tid("busy")).await.unwrap().unwrap();
    assert_eq!(
        busy.endpoint(3000).map(|e| e.to_string()).as_deref(),
        Some("10.42.0.17:3000")
    );
    assert_eq!(r.list(None).await.unwrap().len(), 2);

    // And the Go items take part in every operation.
    let woke = r
        .set_status(
            &tid("sleepy"),
            TenantStatus::Idle,
            &StatusUpdate::provisioning(),
        )
        .await
        .unwrap();
    assert_eq!(woke.status, TenantStatus::Provisioning);
    let err = r
        .set_status(
            &tid("busy"),
            TenantStatus::Idle,
            &StatusUpdate::provisioning(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(r.delete(&tid("busy")).await.unwrap());

    // One unreadable item does not hide the others from `list`.
    batch_write(&r, vec![go_item("broken", "sleeping")], 1).await;
    let err = r.get(&tid("broken")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let listed: Vec<String> = r
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|t| t.tenant_id.to_string())
        .collect();
    assert_eq!(listed, ["sleepy"]);
}

#[tokio::test]
async fn dynamodb_registry_lists_ten_thousand_tenants() {
    const N: usize = 10_000;
    let moto = Moto::start().await;
    let r = moto.registry(&unique_name("registry")).await;
    let items: Vec<_> = (0..N)
        .map(|i| {
            go_item(
                &format!("t{i:05}"),
                if i % 10 == 0 { "running" } else { "idle" },
            )
        })
        .collect();
    let started = Instant::now();
    batch_write(&r, items, 8).await;
    let wrote = started.elapsed();

    let started = Instant::now();
    let all = r.list(None).await.unwrap();
    let listed = started.elapsed();
    assert_eq!(all.len(), N);
    assert!(
        all.windows(2).all(|w| w[0].tenant_id < w[1].tenant_id),
        "sorted, no duplicates"
    );
    let running = r.list(Some(TenantStatus::Running)).await.unwrap();
    assert_eq!(running.len(), N / 10);
    eprintln!("dynamodb: wrote {N} tenants in {wrote:?}, listed them in {listed:?}");
}

#[tokio::test]
async fn dynamodb_registry_errors_are_unavailable_and_hold_no_secret() {
    set_aws_env();
    let port = platform_tests::platform::free_port();
    let r = DynamoRegistry::connect(
        "tenant-registry",
        Some(&format!("http://127.0.0.1:{port}")),
        None,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let err = r.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // The SDK's dispatch failure stays the source, down to the refused connection.
    let refused = common::error::find_source::<std::io::Error>(&err)
        .unwrap_or_else(|| panic!("no io error in {}", common::error::error_chain(&err)));
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    let rec = contract::registry::record("leak", "999:TOP-SECRET");
    let err = r.create(&rec).await.unwrap_err();
    assert!(!err.to_string().contains("TOP-SECRET"), "{err}");
    let chain = common::error::error_chain(&err);
    assert!(!chain.contains("TOP-SECRET"), "{chain}");
    assert!(!format!("{err:?}").contains("TOP-SECRET"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// DynamoDB going away mid-use: calls fail fast as `Unavailable` (the API answers 503), and the same
/// client works again once DynamoDB is back, without a restart of the service.
#[tokio::test]
async fn dynamodb_registry_fails_fast_in_an_outage_and_recovers_without_a_rebuild() {
    let mut moto = Moto::start().await;
    let table = unique_name("outage");
    let r = moto.registry(&table).await;
    r.ping().await.expect("works before the outage");

    moto.stop();
    for _ in 0..2 {
        let started = Instant::now();
        let err = r.get(&tid("during")).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "failing took {:?}",
            started.elapsed()
        );
    }

    moto.restart().await;
    // The emulator keeps nothing across a restart; real DynamoDB keeps the table.
    r.ensure_table().await.expect("table again");
    let rec = contract::registry::record("after", "1:after");
    r.create(&rec).await.expect("create after the outage");
    assert_eq!(
        r.get(&tid("after")).await.unwrap().map(|t| t.tenant_id),
        Some(tid("after"))
    );
}
