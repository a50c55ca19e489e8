//! Lease leader election against the fake cluster: one leader at a time, fail-over after a crash
//! within 20 s with the production timing, fast hand-over on a clean shutdown, and only the leader's
//! idle controller stops tenants.

mod k8s_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Secret, TenantId, TenantRecord, TenantStatus};
use orchestrator::leader::LeaderElector;
use orchestrator::leader_lease::{LeaseElector, LeaseTiming};
use platform_tests::fake_k8s::FakeK8s;
use tokio_util::sync::CancellationToken;

use k8s_support::*;

async fn elector(fake: &FakeK8s, identity: &str, timing: LeaseTiming) -> Arc<LeaseElector> {
    Arc::new(LeaseElector::new(
        fake.client().await,
        NS,
        "orchestrator-leader",
        identity,
        timing,
    ))
}

fn spawn(e: &Arc<LeaseElector>, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let (e, stop) = (e.clone(), stop.clone());
    tokio::spawn(async move { e.run(stop).await })
}

#[tokio::test]
async fn one_leader_and_the_other_takes_over_within_20s_after_the_leader_dies() {
    capture_logs();
    let fake = FakeK8s::start().await;
    let stop = CancellationToken::new();
    let a = elector(&fake, "replica-a", LeaseTiming::default()).await;
    let b = elector(&fake, "replica-b", LeaseTiming::default()).await;
    let ta = spawn(&a, &stop);
    let tb = spawn(&b, &stop);
    assert!(eventually(Duration::from_secs(5), || a.is_leader() || b.is_leader()).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.is_leader() ^ b.is_leader(), "exactly one leader");
    let lease = fake.get("leases", NS, "orchestrator-leader").unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

    let (dead, dead_task, survivor) = if a.is_leader() {
        (a, ta, b)
    } else {
        (b, tb, a)
    };
    dead_task.abort(); // a crash: no release, the lease must expire
    let killed = Instant::now();
    while !survivor.is_leader() {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no take-over within 20 s"
        );
        assert!(!(dead.is_leader() && survivor.is_leader()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dead.is_leader(), "the dead leader's lease had expired");
    let took = killed.elapsed();
    eprintln!("take-over after {took:?}");
    assert!(!log_lines(&["leader election: became leader"]).is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_clean_shutdown_hands_the_lease_over_at_once() {
    let fake = FakeK8s::start().await;
    let timing = LeaseTiming {
        lease_duration: Duration::from_secs(15),
        renew_interval: Duration::from_secs(10),
        retry_period: Duration::from_millis(200),
    };
    let a = elector(&fake, "replica-a", timing).await;
    let stop_a = CancellationToken::new();
    let ta = spawn(&a, &stop_a);
    assert!(eventually(Duration::from_secs(5), || a.is_leader()).await);
    let b = elector(&fake, "replica-b", timing).await;
    let stop_b = CancellationToken::new();
    let _tb = spawn(&b, &stop_b);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!b.is_leader());

    stop_a.cancel();
    ta.await.unwrap();
    assert!(!a.is_leader());
    assert!(
        eventually(Duration::from_secs(3), || b.is_leader()).await,
        "released lease taken at once"
    );
    stop_b.cancel();
}

#[tokio::test]
async fn only_the_leader_stops_idle_tenants_and_each_once() {
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let stop = CancellationToken::new();
    let ea = elector(&fake, "replica-a", LeaseTiming::default()).await;
    let eb = elector(&fake, "replica-b", LeaseTiming::default()).await;
    let _ta = spawn(&ea, &stop);
    let _tb = spawn(&eb, &stop);
    assert!(eventually(Duration::from_secs(5), || ea.is_leader() || eb.is_leader()).await);
    let a = replica_with(&fake, &shared, Duration::from_secs(30), ea.clone()).await;
    let b = replica_with(&fake, &shared, Duration::from_secs(30), eb.clone()).await;

    let id = TenantId::parse("kidle").unwrap();
    let mut rec = TenantRecord::new(id.clone(), Secret::new("1:A"), 10, NS, Utc::now());
    rec.last_active_at = Utc::now() - chrono::Duration::hours(1);
    shared.registry.create(&rec).await.unwrap();
    orchestrator::wake::wake(&a, &id).await.unwrap();
    // The wake may count as activity; age the record again.
    let mut r = shared.registry.get(&id).await.unwrap().unwrap();
    r.last_active_at = Utc::now() - chrono::Duration::hours(1);
    shared.registry.touch(&id, r.last_active_at).await.unwrap();

    let (leader, follower) = if ea.is_leader() { (&a, &b) } else { (&b, &a) };
    // The leader expires on its own clock: it sees the stamp, then has watched it for an hour.
    assert_eq!(
        orchestrator::lifecycle::idle_check(leader).await.unwrap(),
        0
    );
    leader.idle_clock.age(Duration::from_secs(3600));
    let (nl, nf) = tokio::join!(
        orchestrator::lifecycle::idle_check(leader),
        orchestrator::lifecycle::idle_check(follower)
    );
    assert_eq!((nl.unwrap(), nf.unwrap()), (1, 0));
    assert_eq!(
        shared.registry.get(&id).await.unwrap().unwrap().status,
        TenantStatus::Idle
    );
    assert_eq!(fake.count("delete", "pods"), 1, "stopped exactly once");
    stop.cancel();
}
