//! Rolling deploy drill (issue 7): 2 orchestrators and 2 routers on real Redis and the AWS emulator
//! (local runtime) under a steady stream of Telegram updates to 20 tenants; each router, then each
//! orchestrator, is replaced one at a time (start new, wait ready, stop old). Every acknowledged
//! update is answered, and the worst extra delay is printed.

use std::time::{Duration, Instant};

use platform_tests::cluster::{Cluster, ClusterOpts, Report};

const TENANTS: usize = 20;
const RATE: u32 = 15;

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// Starts the cluster, wakes every tenant, then replaces every replica under traffic.
async fn drill(stop: Stop) -> Report {
    let mut cluster =
        Cluster::start(ClusterOpts::default().orchestrator_env("AGENT_DELAY_MS", 50)).await;
    let tenants = cluster.create_tenants("drill", TENANTS).await;
    let mut warm = cluster.traffic(&tenants);
    for i in 0..TENANTS {
        warm.send(i);
    }
    warm.all_acked().await;
    warm.wait_answered(&cluster.telegram, Duration::from_secs(60))
        .await;

    let mut traffic = cluster.traffic(&tenants);
    let began = Instant::now();
    let steps = traffic
        .steady(RATE, async {
            let mut steps = Vec::new();
            tokio::time::sleep(Duration::from_secs(2)).await;
            for _ in 0..2 {
                let t = Instant::now();
                cluster.add_router().await;
                match stop {
                    Stop::Term => cluster.terminate_router(0).await,
                    Stop::Kill => cluster.kill_router(0),
                }
                steps.push(format!("router replaced in {:?}", t.elapsed()));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            for _ in 0..2 {
                let t = Instant::now();
                cluster.add_orchestrator().await;
                match stop {
                    Stop::Term => cluster.terminate_orchestrator(0).await,
                    Stop::Kill => cluster.kill_orchestrator(0),
                }
                steps.push(format!("orchestrator replaced in {:?}", t.elapsed()));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            steps
        })
        .await;
    let traffic_for = began.elapsed();
    traffic.all_acked().await;
    let report = traffic
        .wait_answered(&cluster.telegram, Duration::from_secs(90))
        .await;
    println!(
        "rolling deploy drill ({stop:?}): {TENANTS} tenants, {RATE} updates/s for {traffic_for:?}; {}; {report}",
        steps.join(", ")
    );
    assert_eq!(
        report.answered, report.acked,
        "every acknowledged update answered: {report}"
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report.reprocessed().is_empty(),
        "a duplicate the agent handled twice (not the same X-Idempotency-Key): {:?}",
        report.reprocessed()
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_deploy_with_sigterm_answers_every_update_exactly_once() {
    let report = drill(Stop::Term).await;
    assert!(
        report.duplicates.is_empty(),
        "exactly once: {:?}",
        report.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_deploy_with_sigkill_loses_nothing() {
    let report = drill(Stop::Kill).await;
    println!(
        "SIGKILL drill: {} updates answered more than once, all with the agent's stored reply for the same X-Idempotency-Key",
        report.duplicates.len()
    );
}
