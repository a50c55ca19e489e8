//! Warm agents through the real `router` and `orchestrator` binaries on the fake cluster, with the
//! strict Telegram stand-in and S3 (moto) for the state grants: a warm pod that fails its assignment
//! is deleted, the wake falls back to a cold start through the same assignment, and the user's
//! message reaches the agent once and is answered once, with the memory an earlier warm agent saved.

mod k8s_support;

use std::time::{Duration, Instant};

use k8s_support::{spend_warm_agent, NS};
use platform_tests::backends::{unique_name, Moto};
use platform_tests::fake_k8s::{FakeK8s, FakeK8sOptions};
use platform_tests::platform::{bot_token, Opts, Platform};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const CHAT: i64 = 7;

async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one claimable warm pod whose agent answers `/health`, once there is one.
async fn ready_warm_pod(fake: &FakeK8s) -> Value {
    let http = reqwest::Client::new();
    let end = Instant::now() + T;
    loop {
        for p in fake.list("pods") {
            let claimable =
                p["metadata"]["labels"]["warm"] == "true" && p["status"]["phase"] == "Running";
            let Some(ip) = p["status"]["podIP"].as_str().filter(|_| claimable) else {
                continue;
            };
            let health = http.get(format!("http://{ip}:3000/health")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return p;
            }
        }
        assert!(Instant::now() < end, "no warm agent came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap().to_owned()
}

/// Messages the agent of pod `name` received (its `message answered` lines).
fn receipts(fake: &FakeK8s, name: &str) -> usize {
    std::fs::read_to_string(fake.agent_log(name))
        .unwrap_or_default()
        .matches("message answered")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_assignment_falls_back_to_a_cold_start_and_the_message_is_answered_once() {
    let moto = Moto::start().await;
    let bucket = unique_name("wrouter");
    let store = moto.state_store(&bucket).await;
    let fake = FakeK8s::start_with(FakeK8sOptions {
        // Each message an agent takes is logged, so receipts can be counted.
        agent_env: vec![("RUST_LOG".into(), "info,tenant_agent=debug".into())],
        ..FakeK8sOptions::default()
    })
    .await;
    let mut opts = Opts::default()
        .orchestrator_env("RUNTIME", "kubernetes")
        .orchestrator_env("LOCAL_MODE", "false")
        .orchestrator_env("KUBECONFIG", fake.kubeconfig().display())
        .orchestrator_env("ALLOW_SINGLE_REPLICA", "true")
        .orchestrator_env("K8S_NAMESPACE", NS)
        .orchestrator_env("WARM_POOL_TARGET", 1)
        .orchestrator_env("WARM_POOL_MODE", "agent")
        .orchestrator_env("POD_NAME", "orchestrator-0")
        .orchestrator_env("STATE_STORE", "s3")
        .orchestrator_env("S3_BUCKET", &bucket)
        .orchestrator_env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in moto.env() {
        opts = opts.orchestrator_env(&k, v);
    }
    let p = Platform::start_with(opts).await;
    p.orchestrator
        .wait_for_log("warm pool: warm agents (WARM_POOL_MODE=agent)", 1, T)
        .await;
    p.create_tenant("wcold", &bot_token(), None).await;

    // A first session on a warm hit: its memory is saved through the grants at sleep.
    let first = name(&ready_warm_pod(&fake).await);
    p.send_text("wcold", 1, CHAT, "one").await;
    p.telegram
        .wait_for("the first answer", T, |calls| {
            calls.iter().any(|c| c.text() == Some("echo: one (#1)"))
        })
        .await;
    p.orchestrator
        .wait_for_log("warm pool hit: assigned warm agent", 1, T)
        .await;
    assert_eq!(receipts(&fake, &first), 1);
    p.sleep_tenant("wcold").await;
    let saved = || async {
        let out = store
            .client()
            .list_objects_v2()
            .bucket(&bucket)
            .prefix("tenants/wcold/")
            .send()
            .await
            .unwrap();
        out.contents().len()
    };
    let end = Instant::now() + T;
    while saved().await < 2 {
        assert!(
            Instant::now() < end,
            "the first session's memory was not saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until("the first pod to go", T, || {
        fake.get("pods", NS, &first).is_none()
    })
    .await;

    // The pool's next pod is spent behind the orchestrator's back: its assignment will be refused.
    let spent = ready_warm_pod(&fake).await;
    let secret = fake.get("secrets", NS, "warm-pool").unwrap();
    let token: k8s_openapi::ByteString =
        serde_json::from_value(secret["data"]["ASSIGN_TOKEN"].clone()).unwrap();
    spend_warm_agent(&spent, &String::from_utf8(token.0).unwrap()).await;
    let spent = name(&spent);

    let before = p.telegram.messages_to(CHAT).len();
    p.send_text("wcold", 2, CHAT, "two").await;
    p.telegram
        .wait_for("the answer after the fallback", T, |calls| {
            calls.iter().any(|c| c.text() == Some("echo: two (#2)"))
        })
        .await;
    p.orchestrator
        .wait_for_log("warm pool: assignment failed", 1, T)
        .await;
    p.orchestrator
        .wait_for_log("cold start: assigned a new agent pod", 1, T)
        .await;
    until("the spent warm pod to go", T, || {
        fake.get("pods", NS, &spent).is_none()
    })
    .await;
    // Delivery is ordered per tenant: once a later message is answered, "two" is not redelivered.
    p.send_text("wcold", 3, CHAT, "three").await;
    p.telegram
        .wait_for("the next answer", T, |calls| {
            calls.iter().any(|c| c.text() == Some("echo: three (#3)"))
        })
        .await;

    let sent: Vec<String> = p.telegram.messages_to(CHAT).split_off(before);
    let answers: Vec<&String> = sent.iter().filter(|m| m.starts_with("echo: ")).collect();
    assert_eq!(answers, ["echo: two (#2)", "echo: three (#3)"], "{sent:?}");
    assert_eq!(
        receipts(&fake, &spent),
        0,
        "the spent pod never got the message"
    );
    assert_eq!(
        receipts(&fake, "zeroclaw-wcold"),
        2,
        "the cold agent got each message once"
    );
    let tenant = p.get_tenant("wcold").await.unwrap();
    assert_eq!(tenant["pod_name"], "zeroclaw-wcold");
    for (kind, obj) in [
        ("persistentvolumeclaims", "pvc-tenant-wcold"),
        ("secrets", "tenant-wcold"),
        ("configmaps", "tenant-config-wcold"),
    ] {
        assert!(fake.get(kind, NS, obj).is_none(), "{kind}/{obj} created");
    }
}
