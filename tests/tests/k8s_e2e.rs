//! The real `orchestrator` and `router` binaries with `RUNTIME=kubernetes`, talking to the fake cluster
//! through an ordinary kubeconfig file: a Telegram message wakes a tenant pod on a warm pool node
//! and its real agent answers; delete removes every object the tenant owned.

use std::time::{Duration, Instant};

use platform_tests::fake_k8s::FakeK8s;
use platform_tests::platform::{bot_token, Opts, Platform};
use reqwest::Method;

const T: Duration = Duration::from_secs(60);
const NS: &str = "tenants";

async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One orchestrator replica on the Kubernetes runtime, pointed at `fake` through its kubeconfig.
fn on_the_fake_cluster(fake: &FakeK8s) -> Opts {
    Opts::default()
        .orchestrator_env("RUNTIME", "kubernetes")
        .orchestrator_env("LOCAL_MODE", "false")
        .orchestrator_env("KUBECONFIG", fake.kubeconfig().display())
        .orchestrator_env("ALLOW_SINGLE_REPLICA", "true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_wakes_a_tenant_pod_on_a_warm_node_through_the_kubeconfig() {
    let fake = FakeK8s::start().await;
    let p = Platform::start_with(
        on_the_fake_cluster(&fake)
            .orchestrator_env("K8S_NAMESPACE", NS)
            .orchestrator_env("ZEROCLAW_IMAGE", "zeroclaw:e2e")
            .orchestrator_env("WARM_POOL_TARGET", 1)
            .orchestrator_env("POD_NAME", "orchestrator-0"),
    )
    .await;

    let warm_node = || {
        fake.list("pods")
            .into_iter()
            .find(|p| {
                p["metadata"]["labels"]["warm"] == "true" && p["status"]["phase"] == "Running"
            })
            .map(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
    };
    until("a Running warm pod", T, || warm_node().is_some()).await;
    let deployment = fake.get("deployments", NS, "warm-pool").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "zeroclaw:e2e"
    );
    let node = warm_node().unwrap();
    until("the lease", T, || {
        fake.get("leases", NS, "orchestrator-leader").is_some()
    })
    .await;
    let lease = fake.get("leases", NS, "orchestrator-leader").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "orchestrator-0");
    p.orchestrator
        .wait_for_log("leader election: became leader", 1, T)
        .await;

    p.create_tenant("kube", &bot_token(), None).await;
    p.send_text("kube", 1, 7, "hi").await;
    let msgs = p.telegram.wait_for_messages(7, 2, T).await;
    assert!(msgs.iter().any(|m| m == "echo: hi (#1)"), "{msgs:?}");

    let pod = fake.get("pods", NS, "zeroclaw-kube").expect("tenant pod");
    assert_eq!(
        pod["spec"]["nodeName"],
        node.as_str(),
        "pinned to the claimed warm pod's node"
    );
    assert_eq!(pod["spec"]["containers"][0]["image"], "zeroclaw:e2e");
    p.orchestrator
        .wait_for_log("warm pool hit: reusing node", 1, T)
        .await;
    let tenant = p.get_tenant("kube").await.unwrap();
    assert_eq!(tenant["status"], "running");
    assert_eq!(tenant["pod_name"], "zeroclaw-kube");
    assert_eq!(tenant["pod_ip"], pod["status"]["podIP"]);
    assert!(
        !p.orchestrator.log().contains(&bot_token()),
        "token never logged"
    );

    // Node loss: the reconciler (RECONCILE_INTERVAL_S=1 here) notices within one interval.
    fake.delete_out_of_band(NS, "zeroclaw-kube");
    let lost = Instant::now();
    while p.tenant_status("kube").await != "idle" {
        assert!(lost.elapsed() < Duration::from_secs(5), "not reset to idle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.orchestrator
        .wait_for_log("reconciler: pod missing, resetting state", 1, T)
        .await;

    let r = p
        .request(Method::DELETE, &p.orch_url("/tenants/kube"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    until("the tenant's objects to go", T, || {
        fake.get("pods", NS, "zeroclaw-kube").is_none()
            && fake.get("secrets", NS, "tenant-kube").is_none()
            && fake
                .get("persistentvolumeclaims", NS, "pvc-tenant-kube")
                .is_none()
            && fake
                .get("persistentvolumes", "", "pv-tenant-kube")
                .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pull_failure_tells_the_user_and_leaves_the_tenant_idle() {
    let fake = FakeK8s::start().await;
    let p =
        Platform::start_with(on_the_fake_cluster(&fake).orchestrator_env("WARM_POOL_TARGET", 0))
            .await;
    fake.fail_pod("zeroclaw-broken", "ErrImagePull");
    p.create_tenant("broken", &bot_token(), None).await;

    let started = Instant::now();
    p.send_text("broken", 1, 9, "hello").await;
    p.telegram
        .wait_for("a failure message", T, |calls| {
            calls.iter().any(|c| {
                c.method == "sendMessage"
                    && c.chat_id() == Some(9)
                    && c.text().is_some_and(|t| t.contains("Failed to start"))
            })
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(p.tenant_status("broken").await, "idle");
    p.orchestrator.wait_for_log("ErrImagePull", 1, T).await;
    until("the failed pod to go", T, || {
        fake.get("pods", NS, "zeroclaw-broken").is_none()
    })
    .await;
}
