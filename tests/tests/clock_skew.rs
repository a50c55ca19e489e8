//! Clock skew between orchestrator replicas (issue 18 point 6), through the real binaries: two
//! orchestrators on shared Redis and DynamoDB, one of them with its wall clock ten minutes behind
//! (libfaketime). The replica that serves a tenant stamps `last_active_at` with its own clock; the
//! idle controller must neither stop an active tenant early nor keep an idle one awake because the
//! stamp came from a clock that disagrees with its own.
//!
//! In local mode every replica runs the idle controller: the replica under test checks every
//! second, the other one hourly (once at its start, before any tenant runs), so exactly one clock
//! decides. The tenant's wake and its activity reports reach the other replica, whose clock stamps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform_tests::backends::faketime_env;
use platform_tests::cluster::{Cluster, ClusterOpts};
use platform_tests::platform::bot_token;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The skewed replica's wall clock, relative to the real one.
const SKEW: &str = "-10m";
const SKEW_S: i64 = 600;
/// The shortest idle timeout the API accepts.
const IDLE_TIMEOUT: Duration = Duration::from_secs(common::tenant::MIN_IDLE_TIMEOUT_S);
/// Like the router: an activity report every two seconds while the chat is busy...
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// ...for two and a half idle timeouts.
const ACTIVE_FOR: Duration = Duration::from_secs(25);
/// How late after its timeout an idle tenant may be stopped on a loaded machine (the check runs
/// every second).
const STOP_SLACK: Duration = Duration::from_secs(20);
const TENANT: &str = "skewed";

/// Which replica's clock the idle controller reads.
#[derive(Clone, Copy, PartialEq)]
enum Checker {
    /// The true clock checks stamps made ten minutes behind it (they look ten minutes old).
    TrueClock,
    /// The clock ten minutes behind checks true stamps (they look ten minutes in the future).
    SkewedClock,
}

struct Pair {
    cluster: Cluster,
    http: reqwest::Client,
    /// The replica that serves the tenant and stamps its activity.
    stamper: String,
    checker: String,
}

impl Pair {
    async fn start(checker: Checker) -> Pair {
        let mut cluster = Cluster::start(ClusterOpts {
            orchestrators: 0,
            routers: 0,
            ..ClusterOpts::default()
        })
        .await;
        let every = |s: u64| ("IDLE_CHECK_INTERVAL_S".to_owned(), s.to_string());
        let (true_every, skewed_every) = match checker {
            Checker::TrueClock => (1, 3600),
            Checker::SkewedClock => (3600, 1),
        };
        let true_clock = cluster.add_orchestrator_with(vec![every(true_every)]).await;
        let mut env = faketime_env(SKEW);
        env.push(every(skewed_every));
        let skewed = cluster.add_orchestrator_with(env).await;
        let (stamper, checker) = match checker {
            Checker::TrueClock => (skewed, true_clock),
            Checker::SkewedClock => (true_clock, skewed),
        };
        let pair = Pair {
            stamper: cluster.orchestrators[stamper].url(),
            checker: cluster.orchestrators[checker].url(),
            cluster,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        };
        // The premise: the two replicas' clocks really are ten minutes apart.
        let (t, s) = (
            pair.clock(&pair.cluster.orchestrators[true_clock].url())
                .await,
            pair.clock(&pair.cluster.orchestrators[skewed].url()).await,
        );
        let apart = (t - s).num_seconds();
        assert!(
            (SKEW_S - 5..=SKEW_S + 5).contains(&apart),
            "the skewed replica's clock is {apart} s behind, not {SKEW_S} s"
        );
        pair
    }

    /// A replica's wall clock, from the `Date` header of its answer.
    async fn clock(&self, url: &str) -> DateTime<Utc> {
        let resp = self
            .http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .expect("GET /healthz");
        let date = resp.headers()["date"].to_str().expect("Date header");
        DateTime::parse_from_rfc2822(date)
            .unwrap_or_else(|e| panic!("Date {date:?}: {e}"))
            .with_timezone(&Utc)
    }

    async fn send(&self, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.cluster.api_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates the tenant with the shortest idle timeout and wakes it, both on the stamper.
    async fn wake(&self) {
        let body = json!({"tenant_id": TENANT, "bot_token": bot_token(),
                          "idle_timeout_s": IDLE_TIMEOUT.as_secs()});
        let resp = self
            .http
            .post(format!("{}/tenants", self.stamper))
            .bearer_auth(&self.cluster.api_token)
            .json(&body)
            .send()
            .await
            .expect("POST /tenants");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let url = format!("{}/wake/{TENANT}", self.stamper);
        self.send(reqwest::Method::POST, url, None).await;
    }

    /// An activity report to the stamper, as the router sends while a chat is busy.
    async fn report_activity(&self) {
        let url = format!("{}/tenants/{TENANT}/activity", self.stamper);
        self.send(reqwest::Method::PUT, url, None).await;
    }

    /// The tenant as the checking replica reads it.
    async fn tenant(&self) -> Value {
        let url = format!("{}/tenants/{TENANT}", self.checker);
        self.send(reqwest::Method::GET, url, None).await
    }

    async fn status(&self) -> String {
        self.tenant().await["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// (a) While activity keeps coming the tenant runs, for well past its idle timeout; (b) once it
/// stops, the tenant is stopped about one idle timeout after the last report, never before.
async fn kept_awake_while_active_then_stopped_after_its_timeout(checker: Checker) {
    let pair = Pair::start(checker).await;
    pair.wake().await;
    assert_eq!(pair.status().await, "running");
    let stamp: DateTime<Utc> =
        serde_json::from_value(pair.tenant().await["last_active_at"].clone())
            .expect("last_active_at");
    let stamp_age = (Utc::now() - stamp).num_seconds();
    let expected_age = if checker == Checker::TrueClock {
        SKEW_S
    } else {
        0
    };
    assert!(
        (stamp_age - expected_age).abs() <= 30,
        "the stamp is {stamp_age} s old by the true clock, expected about {expected_age} s"
    );

    let active_since = Instant::now();
    let mut last_report = Instant::now();
    while active_since.elapsed() < ACTIVE_FOR {
        last_report = Instant::now();
        pair.report_activity().await;
        while last_report.elapsed() < REPORT_EVERY {
            let status = pair.status().await;
            assert_eq!(
                status,
                "running",
                "stopped {:?} after its last activity report ({:?} into its activity), with an \
                 idle timeout of {IDLE_TIMEOUT:?}",
                last_report.elapsed(),
                active_since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let deadline = IDLE_TIMEOUT + STOP_SLACK;
    loop {
        let status = pair.status().await;
        if status == "idle" {
            break;
        }
        assert!(
            last_report.elapsed() < deadline,
            "still {status} {:?} after its last activity, with an idle timeout of {IDLE_TIMEOUT:?}",
            last_report.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slept_after = last_report.elapsed();
    eprintln!(
        "stopped {slept_after:?} after the last activity report (idle timeout {IDLE_TIMEOUT:?})"
    );
    assert!(
        slept_after >= IDLE_TIMEOUT,
        "stopped {slept_after:?} after its last activity: before its idle timeout of {IDLE_TIMEOUT:?}"
    );
    // The agent process itself goes too (on the stamper, whose reconciler stops what is idle).
    let gone_by = Instant::now() + Duration::from_secs(30);
    while !pair.cluster.agent_pids(TENANT).is_empty() {
        assert!(
            Instant::now() < gone_by,
            "the idle tenant's agent still runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The idle controller on the true clock reads stamps made by a replica ten minutes behind: to it
/// they look ten minutes old, and comparing them with its clock stopped the tenant at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_from_a_replica_ten_minutes_behind_do_not_stop_an_active_tenant_early() {
    kept_awake_while_active_then_stopped_after_its_timeout(Checker::TrueClock).await;
}

/// The idle controller on a clock ten minutes behind reads true stamps: to it they lie ten minutes
/// in the future, and comparing them with its clock kept the idle tenant awake ten minutes longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_from_a_replica_ten_minutes_ahead_do_not_keep_an_idle_tenant_awake() {
    kept_awake_while_active_then_stopped_after_its_timeout(Checker::SkewedClock).await;
}
