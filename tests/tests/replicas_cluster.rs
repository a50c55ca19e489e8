//! Two orchestrators and two routers sharing real Redis, DynamoDB and S3 (moto), local runtime:
//! the platform's guarantees hold across replicas and through crashes and a Redis outage.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use platform_tests::cluster::{Cluster, ClusterOpts};
use platform_tests::platform::wait_until;
use reqwest::StatusCode;

/// The `N` of an `echo: <text> (#N)` reply.
fn message_number(reply: &str) -> Option<u64> {
    reply.rsplit_once("(#")?.1.strip_suffix(')')?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_chats_at_once_over_two_routers_wake_exactly_one_agent() {
    // A slow start widens the window in which both orchestrators are asked to wake the tenant.
    let cluster =
        Cluster::start(ClusterOpts::default().orchestrator_env("AGENT_STARTUP_MS", 1000)).await;
    let tenants = cluster.create_tenants("crowd", 1).await;
    let mut traffic = cluster.traffic(&tenants);
    let began = Instant::now();
    for chat in 0..100 {
        traffic.send_as("crowd-0", 10_000 + chat);
    }
    traffic.all_acked().await;
    let report = traffic
        .wait_answered(&cluster.telegram, Duration::from_secs(60))
        .await;
    println!(
        "100 chats at once: {report}; all answered after {:?}",
        began.elapsed()
    );
    println!(
        "agent starts across both orchestrators: {}",
        cluster.agent_starts("crowd-0")
    );

    assert_eq!(report.acked, 100);
    assert_eq!(report.answered, 100, "{report}");
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        cluster.agent_starts("crowd-0"),
        1,
        "exactly one agent started"
    );
    assert_eq!(
        cluster.agent_pids("crowd-0").len(),
        1,
        "exactly one agent runs"
    );
    // One brain: the replies count 1..=100 between them.
    let numbers: BTreeSet<u64> = cluster
        .telegram
        .calls_to("sendMessage")
        .iter()
        .filter_map(|c| c.text().and_then(message_number))
        .collect();
    assert_eq!(
        numbers,
        (1..=100).collect(),
        "one agent counted every message once"
    );
    for chat in 0..100 {
        let echoes = cluster
            .telegram
            .messages_to(10_000 + chat)
            .into_iter()
            .filter(|m| m.starts_with("echo: "))
            .count();
        assert_eq!(echoes, 1, "chat {chat}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_wake_lock_holder_mid_wake_lets_the_other_finish_it() {
    const STARTUP: Duration = Duration::from_secs(4);
    let mut cluster = Cluster::start(
        ClusterOpts::default().orchestrator_env("AGENT_STARTUP_MS", STARTUP.as_millis()),
    )
    .await;
    let tenants = cluster.create_tenants("crash", 1).await;
    let mut traffic = cluster.traffic(&tenants);
    traffic.send_as("crash-0", 7001);
    traffic.all_acked().await;

    // The holder is the orchestrator whose runtime spawned the (still starting) agent.
    let mut holder = None;
    wait_until(
        "an orchestrator to start the agent",
        Duration::from_secs(20),
        || {
            holder = cluster.orchestrator_running("crash-0");
            async move { holder.is_some() }
        },
    )
    .await;
    let holder = holder.unwrap();
    let mut redis = common::redis_pool::conn(&cluster.redis.pool())
        .await
        .expect("redis");
    let owner: Option<String> = redis::cmd("GET")
        .arg("tenant:waking:crash-0")
        .query_async(&mut redis)
        .await
        .expect("GET wake lock");
    assert!(
        owner.is_some(),
        "the wake lock is held while the agent starts"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg("tenant:waking:crash-0")
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert!(
        pttl <= 20_000,
        "a crashed holder's lock must free within 20 s (PTTL {pttl} ms)"
    );
    cluster.kill_orchestrator(holder);
    let killed_at = Instant::now();

    let report = traffic
        .wait_answered(&cluster.telegram, Duration::from_secs(60))
        .await;
    let echoes: Vec<_> = cluster
        .telegram
        .calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.text().is_some_and(|t| t.starts_with("echo: ")))
        .collect();
    let took = echoes[0].at.duration_since(killed_at);
    println!(
        "holder SIGKILLed mid-wake: answered {took:?} after the kill (lock PTTL then {pttl} ms, agent start {STARTUP:?}); {report}"
    );
    assert!(
        took < Duration::from_secs(30) + STARTUP,
        "answered {took:?} after the kill"
    );
    assert_eq!(report.answered, 1);
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    // The agent orphaned by the killed orchestrator neither answers nor blocks the tenant.
    let mut more = cluster.traffic(&tenants);
    more.send_as("crash-0", 7002);
    more.all_acked().await;
    let report = more
        .wait_answered(&cluster.telegram, Duration::from_secs(30))
        .await;
    assert_eq!(report.answered, 1, "{report}");
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert_eq!(cluster.tenant("crash-0").await["status"], "running");
    assert_eq!(
        cluster
            .telegram
            .messages_to(7001)
            .iter()
            .filter(|m| m.starts_with("echo: "))
            .count(),
        1
    );
    println!(
        "agent starts: {} (the killed holder's orphan and the survivor's)",
        cluster.agent_starts("crash-0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_killed_with_updates_in_flight_is_taken_over_by_the_other() {
    let mut cluster = Cluster::start(
        ClusterOpts {
            routers: 1,
            ..ClusterOpts::default()
        }
        .orchestrator_env("AGENT_DELAY_MS", 1000),
    )
    .await;
    let tenants = cluster.create_tenants("inflight", 3).await;
    let mut warm = cluster.traffic(&tenants);
    for i in 0..3 {
        warm.send(i);
    }
    warm.all_acked().await;
    warm.wait_answered(&cluster.telegram, Duration::from_secs(30))
        .await;

    // Every update is stored by the only router, which claims every tenant; then a second router
    // comes up and the first one dies with deliveries in flight.
    let mut traffic = cluster.traffic(&tenants);
    for i in 0..15 {
        traffic.send(i);
    }
    traffic.all_acked().await;
    cluster.add_router().await;
    let before = cluster.telegram.calls_to("sendMessage").len();
    wait_until("a delivery of the batch", Duration::from_secs(20), || {
        let n = cluster.telegram.calls_to("sendMessage").len();
        async move { n > before }
    })
    .await;
    cluster.kill_router(0);
    let killed_at = Instant::now();
    let delivered_by_killed = cluster.telegram.calls_to("sendMessage").len() - before;

    let report = traffic
        .wait_answered(&cluster.telegram, Duration::from_secs(60))
        .await;
    println!(
        "router SIGKILLed with {} of 15 updates delivered: all answered {:?} after the kill; {report}",
        delivered_by_killed,
        killed_at.elapsed()
    );
    assert_eq!(report.answered, 15, "{report}");
    assert!(
        report.duplicates.is_empty(),
        "each once: {:?}",
        report.duplicates
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        delivered_by_killed < 15,
        "the kill came too late to leave work in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_under_traffic_refuses_with_503_and_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(ClusterOpts {
        persistent_redis: true,
        ..ClusterOpts::default()
    })
    .await;
    let tenants = cluster.create_tenants("outage", 4).await;
    let mut warm = cluster.traffic(&tenants);
    for i in 0..4 {
        warm.send(i);
    }
    warm.all_acked().await;
    warm.wait_answered(&cluster.telegram, Duration::from_secs(30))
        .await;
    let pids: Vec<Option<u32>> = cluster
        .orchestrators
        .iter()
        .chain(&cluster.routers)
        .map(|s| s.pid())
        .collect();
    let urls: Vec<String> = cluster
        .orchestrators
        .iter()
        .chain(&cluster.routers)
        .map(|s| s.url())
        .collect();

    let mut traffic = cluster.traffic(&tenants);
    let outage = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.redis.stop();
        let stopped = Instant::now();
        for url in &urls {
            wait_until(
                &format!("{url}/readyz 503"),
                Duration::from_secs(8),
                || async { cluster.readyz(url).await == Some(StatusCode::SERVICE_UNAVAILABLE) },
            )
            .await;
        }
        let all_unready_after = stopped.elapsed();
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
        cluster.redis.restart().await;
        let restarted = Instant::now();
        for url in &urls {
            wait_until(
                &format!("{url}/readyz 200"),
                Duration::from_secs(20),
                || async { cluster.readyz(url).await == Some(StatusCode::OK) },
            )
            .await;
        }
        let ready_after = restarted.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        (all_unready_after, ready_after)
    };
    let (unready_after, ready_after) = traffic.steady(10, outage).await;
    traffic.all_acked().await;
    let report = traffic
        .wait_answered(&cluster.telegram, Duration::from_secs(60))
        .await;
    let refused_updates = traffic.sent().iter().filter(|s| s.refused > 0).count();
    println!(
        "Redis down 10 s under 10 updates/s: every /readyz 503 within {unready_after:?}, all 200 again {ready_after:?} after the restart; \
         {refused_updates} updates refused at least once ({} refusals); {report}",
        report.refused
    );
    assert!(
        refused_updates > 0,
        "updates were refused during the outage"
    );
    assert_eq!(report.answered, report.acked, "{report}");
    assert!(
        report.reprocessed().is_empty(),
        "{:?}",
        report.reprocessed()
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let after: Vec<Option<u32>> = cluster
        .orchestrators
        .iter()
        .chain(&cluster.routers)
        .map(|s| s.pid())
        .collect();
    assert_eq!(pids, after, "no service was restarted");
    for pid in after.into_iter().flatten() {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} alive"
        );
    }
}
