//! `Registry`: conditional create, updates conditional on existence, compare-and-set status,
//! list (filtered, sorted, every page), idempotent delete.

use std::time::Instant;

use chrono::{DateTime, Duration, SubsecRound, Utc};

use super::tid;
use crate::registry::{Registry, SettingsUpdate, StatusUpdate};
use crate::{Secret, StoreError, TenantId, TenantRecord, TenantStatus};

/// Stored times have second precision.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// A tenant record created an hour ago (idle, 300 s idle timeout, namespace `tenants`).
pub fn record(id: &str, token: &str) -> TenantRecord {
    TenantRecord::new(
        tid(id),
        Secret::new(token),
        300,
        "tenants",
        now() - Duration::hours(1),
    )
}

pub async fn registry(r: &dyn Registry) {
    r.ping().await.expect("ping");
    let bob = record("bob", "1:bob-token");
    let id = bob.tenant_id.clone();
    let ghost = tid("ghost");

    // Create is conditional.
    r.create(&bob).await.unwrap();
    assert_eq!(
        r.get(&id).await.unwrap().as_ref(),
        Some(&bob),
        "reads back as written"
    );
    let mut other = record("bob", "2:other");
    other.idle_timeout_s = 900;
    assert_eq!(r.create(&other).await, Err(StoreError::AlreadyExists));
    assert_eq!(
        r.get(&id).await.unwrap().as_ref(),
        Some(&bob),
        "a lost create changes nothing"
    );
    assert_eq!(r.get(&ghost).await.unwrap(), None);

    // Settings: only on an existing tenant, only the given fields.
    let token_only = SettingsUpdate {
        bot_token: Some(Secret::new("1:new-token")),
        idle_timeout_s: None,
        resources: None,
    };
    let got = r.update_settings(&id, &token_only).await.unwrap();
    assert_eq!(got.bot_token.expose(), "1:new-token");
    assert_eq!(got.idle_timeout_s, 300);
    let both = SettingsUpdate {
        bot_token: None,
        idle_timeout_s: Some(3600),
        resources: None,
    };
    let got = r.update_settings(&id, &both).await.unwrap();
    assert_eq!(
        (got.bot_token.expose(), got.idle_timeout_s),
        ("1:new-token", 3600)
    );
    assert_eq!(r.get(&id).await.unwrap().unwrap(), got);
    assert_eq!(
        r.update_settings(&ghost, &both).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        r.get(&ghost).await.unwrap(),
        None,
        "an update never creates"
    );

    // Status is compare-and-set on the previous status.
    let got = r
        .set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap();
    assert_eq!(got.status, TenantStatus::Provisioning);
    let lost = r
        .set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap_err();
    assert!(
        matches!(lost, StoreError::Conflict(_)),
        "stale CAS: {lost:?}"
    );
    let lost = r
        .set_status(&ghost, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap_err();
    assert_eq!(lost, StoreError::NotFound, "absent is not a conflict");
    assert_eq!(r.get(&ghost).await.unwrap(), None);

    let mut running = StatusUpdate::running("zeroclaw-bob".into(), "10.1.2.3".into(), Some(4001));
    let woke_at = now();
    running.touch = Some(woke_at);
    let got = r
        .set_status(&id, TenantStatus::Provisioning, &running)
        .await
        .unwrap();
    assert_eq!(got.status, TenantStatus::Running);
    assert_eq!(
        (got.pod_name.as_str(), got.pod_ip.as_str()),
        ("zeroclaw-bob", "10.1.2.3")
    );
    assert_eq!(got.agent_port, Some(4001));
    assert_eq!(got.last_active_at, woke_at, "a wake counts as activity");
    assert_eq!(
        got.endpoint(3000).map(|e| e.to_string()).as_deref(),
        Some("10.1.2.3:4001")
    );
    assert_eq!(
        got.bot_token.expose(),
        "1:new-token",
        "status changes keep settings"
    );
    assert_eq!(got.created_at, bob.created_at);
    assert_eq!(r.get(&id).await.unwrap().unwrap(), got);

    let got = r
        .set_status(&id, TenantStatus::Running, &StatusUpdate::idle())
        .await
        .unwrap();
    assert_eq!(got.status, TenantStatus::Idle);
    assert_eq!(
        (got.pod_name.as_str(), got.pod_ip.as_str(), got.agent_port),
        ("", "", None)
    );
    assert_eq!(got.last_active_at, woke_at, "no touch, no change");

    // Agent credential: set once (the first writer wins), kept by every other write.
    assert!(got.agent_token.is_empty(), "a record without a credential");
    let first = crate::tenant::new_agent_token();
    let got = r.set_agent_token_if_absent(&id, &first).await.unwrap();
    assert_eq!(got.agent_token, first);
    let got = r
        .set_agent_token_if_absent(&id, &crate::tenant::new_agent_token())
        .await
        .unwrap();
    assert_eq!(
        got.agent_token, first,
        "an existing credential is never replaced"
    );
    assert_eq!(
        r.set_agent_token_if_absent(&ghost, &first)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // Agent configuration: replaced whole, cleared with None, only on an existing tenant.
    let got = r
        .set_agent_config(&id, Some(r#"{"model":"m"}"#))
        .await
        .unwrap();
    assert_eq!(got.agent_config.as_deref(), Some(r#"{"model":"m"}"#));
    assert_eq!(got.agent_token, first);
    assert_eq!(r.get(&id).await.unwrap().unwrap(), got);
    let got = r.set_agent_config(&id, None).await.unwrap();
    assert_eq!(got.agent_config, None);
    r.set_agent_config(&id, Some(r#"{"model":"m2"}"#))
        .await
        .unwrap();
    assert_eq!(
        r.set_agent_config(&ghost, Some("{}")).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(r.get(&ghost).await.unwrap(), None, "never creates");
    let got = r
        .set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap();
    assert_eq!(
        (got.agent_token.clone(), got.agent_config.as_deref()),
        (first.clone(), Some(r#"{"model":"m2"}"#)),
        "status changes keep credential and configuration"
    );
    r.set_status(&id, TenantStatus::Provisioning, &StatusUpdate::idle())
        .await
        .unwrap();

    // Touch.
    let later = now() + Duration::minutes(5);
    r.touch(&id, later).await.unwrap();
    assert_eq!(r.get(&id).await.unwrap().unwrap().last_active_at, later);
    assert_eq!(r.touch(&ghost, later).await, Err(StoreError::NotFound));
    assert_eq!(r.get(&ghost).await.unwrap(), None, "touch never creates");

    // List: sorted by id, optionally filtered by status.
    for name in ["carol", "alice", "dave"] {
        r.create(&record(name, "1:t")).await.unwrap();
    }
    r.set_status(
        &tid("dave"),
        TenantStatus::Idle,
        &StatusUpdate::provisioning(),
    )
    .await
    .unwrap();
    let all: Vec<String> = r
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|t| t.tenant_id.to_string())
        .collect();
    assert_eq!(all, ["alice", "bob", "carol", "dave"]);
    let idle: Vec<String> = r
        .list(Some(TenantStatus::Idle))
        .await
        .unwrap()
        .iter()
        .map(|t| t.tenant_id.to_string())
        .collect();
    assert_eq!(idle, ["alice", "bob", "carol"]);
    let prov = r.list(Some(TenantStatus::Provisioning)).await.unwrap();
    assert_eq!(prov.len(), 1);
    assert_eq!(prov[0].tenant_id.as_str(), "dave");
    assert!(r
        .list(Some(TenantStatus::Terminated))
        .await
        .unwrap()
        .is_empty());

    // Delete is idempotent and reports whether the tenant was there.
    assert!(r.delete(&id).await.unwrap());
    assert_eq!(r.get(&id).await.unwrap(), None);
    assert!(!r.delete(&id).await.unwrap());
    assert!(!r.delete(&ghost).await.unwrap());
    r.create(&bob)
        .await
        .expect("a deleted id can be created again");
}

/// `list` returns every tenant even when they fill many pages (DynamoDB Scan pages are ≤ 1 MB):
/// creates `count` tenants with `token_len`-byte tokens through the port. Returns the time `list` took.
pub async fn list_pages(r: &dyn Registry, count: usize, token_len: usize) -> std::time::Duration {
    let token = "t".repeat(token_len);
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let rec = record(&format!("page-{i:06}"), &token);
        ids.push(rec.tenant_id.to_string());
        r.create(&rec).await.unwrap();
    }
    let running = format!("page-{:06}", count / 2);
    r.set_status(
        &tid(&running),
        TenantStatus::Idle,
        &StatusUpdate::provisioning(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let all = r.list(None).await.unwrap();
    let took = started.elapsed();
    let got: Vec<String> = all.iter().map(|t| t.tenant_id.to_string()).collect();
    assert_eq!(got.len(), count, "every page is read");
    assert_eq!(got, ids, "sorted by id, none missing, none twice");
    assert!(all.iter().all(|t| t.bot_token.expose().len() == token_len));
    let (chunks, mut read) = tokio::sync::mpsc::unbounded_channel();
    r.list_chunks(None, chunks).await.unwrap();
    let mut chunked = Vec::new();
    while let Some(chunk) = read.recv().await {
        chunked.extend(chunk);
    }
    assert_eq!(
        chunked, all,
        "list_chunks hands over what list returns, in order"
    );
    let filtered = r.list(Some(TenantStatus::Provisioning)).await.unwrap();
    assert_eq!(filtered.len(), 1, "the filter applies across pages");
    assert_eq!(filtered[0].tenant_id.as_str(), running);
    took
}

/// Lifecycle attributes (last error, suspended, deleting) and the bounded event history.
pub async fn lifecycle(r: &dyn Registry) {
    use crate::lifecycle::{reason, EventType, LastError, NewEvent, Phase, EVENTS_KEPT};

    let bob = record("bob", "1:bob-token");
    let id = bob.tenant_id.clone();
    let ghost = tid("ghost");
    r.create(&bob).await.unwrap();
    let got = r.get(&id).await.unwrap().unwrap();
    assert!(!got.suspended && !got.deleting && got.last_error.is_none());
    assert_eq!(got.phase(), Phase::Sleeping);

    // A failed start is remembered with its reason and time, and kept by later status changes
    // until a start succeeds.
    r.set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap();
    let failure = LastError {
        reason: reason::HEALTH_TIMEOUT.into(),
        message: "agent not ready after 5s".into(),
        at: now(),
    };
    let got = r
        .set_status(
            &id,
            TenantStatus::Provisioning,
            &StatusUpdate::failed(failure.clone()),
        )
        .await
        .unwrap();
    assert_eq!(got.last_error.as_ref(), Some(&failure));
    assert_eq!(got.phase(), Phase::Error);
    assert_eq!(r.get(&id).await.unwrap().unwrap(), got, "reads back");
    let got = r
        .set_status(&id, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap();
    assert_eq!(
        got.last_error.as_ref(),
        Some(&failure),
        "kept while retrying"
    );
    let got = r
        .set_status(
            &id,
            TenantStatus::Provisioning,
            &StatusUpdate::running("zeroclaw-bob".into(), "10.0.0.1".into(), None),
        )
        .await
        .unwrap();
    assert_eq!(got.last_error, None, "a start that succeeds clears it");
    assert_eq!(got.phase(), Phase::Ready);
    r.set_status(&id, TenantStatus::Running, &StatusUpdate::idle())
        .await
        .unwrap();

    // Suspended and deleting are flags beside the status, on existing tenants only.
    let got = r.set_suspended(&id, true).await.unwrap();
    assert!(got.suspended);
    assert_eq!(got.status, TenantStatus::Idle, "the status stays");
    assert_eq!(r.get(&id).await.unwrap().unwrap().phase(), Phase::Suspended);
    assert!(!r.set_suspended(&id, false).await.unwrap().suspended);
    assert!(!r.get(&id).await.unwrap().unwrap().suspended);
    assert_eq!(
        r.set_suspended(&ghost, true).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(r.get(&ghost).await.unwrap(), None, "never creates");
    assert!(r.set_deleting(&id).await.unwrap().deleting);
    assert_eq!(r.get(&id).await.unwrap().unwrap().phase(), Phase::Deleting);
    assert_eq!(
        r.set_deleting(&ghost).await.unwrap_err(),
        StoreError::NotFound
    );
    let mut full = record("carol", "1:t");
    full.suspended = true;
    full.last_error = Some(failure.clone());
    full.resources.cpu_request = Some("250m".into());
    r.create(&full).await.unwrap();
    assert_eq!(r.get(&full.tenant_id).await.unwrap().unwrap(), full);

    // Resource overrides: stored whole, fields left out go back to the defaults, other settings stay.
    let overrides = crate::resources::AgentResources {
        cpu_limit: Some("1500m".into()),
        memory_limit: Some("1Gi".into()),
        ..Default::default()
    };
    let set = SettingsUpdate {
        resources: Some(overrides.clone()),
        ..SettingsUpdate::default()
    };
    let got = r.update_settings(&full.tenant_id, &set).await.unwrap();
    assert_eq!(got.resources, overrides);
    assert!(got.suspended, "other attributes stay");
    assert_eq!(r.get(&full.tenant_id).await.unwrap().unwrap(), got);
    let fewer = crate::resources::AgentResources {
        memory_limit: Some("2Gi".into()),
        ..Default::default()
    };
    let set = SettingsUpdate {
        resources: Some(fewer.clone()),
        ..SettingsUpdate::default()
    };
    assert_eq!(
        r.update_settings(&full.tenant_id, &set)
            .await
            .unwrap()
            .resources,
        fewer
    );
    let token = SettingsUpdate {
        bot_token: Some(Secret::new("1:other")),
        ..SettingsUpdate::default()
    };
    assert_eq!(
        r.update_settings(&full.tenant_id, &token)
            .await
            .unwrap()
            .resources,
        fewer,
        "an update without resources keeps them"
    );

    // Events: numbered per tenant, oldest first, bounded, independent of the tenant's record.
    assert!(r.events(&id, 0, 10).await.unwrap().is_empty());
    let first = r
        .append_event(&id, &NewEvent::normal("Created", "tenant created"))
        .await
        .unwrap();
    assert_eq!(first, 1);
    r.append_event(
        &id,
        &NewEvent::warning("StartFailed", "HealthTimeout: slow"),
    )
    .await
    .unwrap();
    r.append_event(&ghost, &NewEvent::normal("Deleted", "gone"))
        .await
        .unwrap();
    let got = r.events(&id, 0, 10).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|e| (e.seq, e.reason.as_str()))
            .collect::<Vec<_>>(),
        [(1, "Created"), (2, "StartFailed")]
    );
    assert_eq!(got[1].kind, EventType::Warning);
    assert_eq!(got[1].message, "HealthTimeout: slow");
    assert_eq!(r.events(&id, 1, 10).await.unwrap().len(), 1, "after a seq");
    assert_eq!(r.events(&ghost, 0, 10).await.unwrap().len(), 1);
    for i in 0..EVENTS_KEPT + 5 {
        r.append_event(&id, &NewEvent::normal("Woke", format!("wake {i}")))
            .await
            .unwrap();
    }
    let all = r.events(&id, 0, 1000).await.unwrap();
    assert_eq!(all.len() as u64, EVENTS_KEPT, "bounded");
    assert_eq!(all.last().unwrap().seq, EVENTS_KEPT + 7);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "in order");
    let newest = r.events(&id, 0, 3).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [EVENTS_KEPT + 5, EVENTS_KEPT + 6, EVENTS_KEPT + 7],
        "the newest, oldest first"
    );
}

/// An idle tenant's fenced provisioning write raises its fence to `newer`; a write of the older
/// lock generation `older` is then refused.
pub async fn raise_then_refuse_older(r: &dyn Registry, id: &TenantId, newer: u64, older: u64) {
    let got = r
        .set_status(
            id,
            TenantStatus::Idle,
            &StatusUpdate::provisioning().fenced(newer),
        )
        .await
        .unwrap();
    assert_eq!(got.fence, newer);
    assert!(matches!(
        r.set_status(
            id,
            TenantStatus::Provisioning,
            &StatusUpdate::idle().fenced(older)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
}

/// Fenced status writes: a write carrying a lower lock generation than the stored one is refused
/// whatever the status, an equal or higher one goes through and is stored, an unfenced write
/// neither checks nor changes it; a record that never saw a fence (the Go platform's) takes any.
pub async fn fencing(r: &dyn Registry) {
    let rec = record("fenced", "1:t");
    let id = rec.tenant_id.clone();
    r.create(&rec).await.unwrap();
    assert_eq!(r.get(&id).await.unwrap().unwrap().fence, 0, "new: no fence");

    // The first holder (generation 3) starts the agent.
    let got = r
        .set_status(
            &id,
            TenantStatus::Idle,
            &StatusUpdate::provisioning().fenced(3),
        )
        .await
        .unwrap();
    assert_eq!(got.fence, 3, "an unfenced record takes any fence");
    // Its lock lapses; the next holder (generation 4) takes the wake over.
    let got = r
        .set_status(
            &id,
            TenantStatus::Provisioning,
            &StatusUpdate::provisioning().fenced(4),
        )
        .await
        .unwrap();
    assert_eq!(got.fence, 4);
    // The stale holder's write is refused although the status it expects is the stored one.
    let stale = StatusUpdate::running("tenant-fenced".into(), "10.0.0.1".into(), None).fenced(3);
    match r.set_status(&id, TenantStatus::Provisioning, &stale).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("superseded"), "{why}"),
        other => panic!("a stale generation's write must be refused, got {other:?}"),
    }
    let kept = r.get(&id).await.unwrap().unwrap();
    assert_eq!(kept.status, TenantStatus::Provisioning, "nothing written");
    assert_eq!(kept.pod_ip, "");
    assert_eq!(kept.fence, 4);
    // The current holder writes with its own generation, again and again.
    let current = StatusUpdate::running("tenant-fenced".into(), "10.0.0.2".into(), None).fenced(4);
    let got = r
        .set_status(&id, TenantStatus::Provisioning, &current)
        .await
        .unwrap();
    assert_eq!(
        (got.status, got.pod_ip.as_str(), got.fence),
        (TenantStatus::Running, "10.0.0.2", 4)
    );
    // A status mismatch is still a conflict for the current generation.
    assert!(matches!(
        r.set_status(&id, TenantStatus::Idle, &StatusUpdate::idle().fenced(4))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // An unfenced write (no lock generation) neither checks nor lowers the fence.
    let got = r
        .set_status(&id, TenantStatus::Running, &StatusUpdate::idle())
        .await
        .unwrap();
    assert_eq!((got.status, got.fence), (TenantStatus::Idle, 4));
    // A later generation raises it.
    raise_then_refuse_older(r, &id, 9, 4).await;
    assert_eq!(
        r.get(&id).await.unwrap().unwrap().status,
        TenantStatus::Provisioning
    );
    // Absent tenant: still NotFound.
    assert_eq!(
        r.set_status(
            &tid("fence-ghost"),
            TenantStatus::Idle,
            &StatusUpdate::idle().fenced(1)
        )
        .await,
        Err(StoreError::NotFound)
    );
}
