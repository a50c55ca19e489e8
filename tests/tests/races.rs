//! Races between the lifecycle loops and delivery, through the real binaries: the idle controller
//! against a reply in flight, and a router frozen past its delivery claim.

use std::time::Duration;

use platform_tests::cluster::{Cluster, ClusterOpts};
use platform_tests::platform::{text_update, wait_until, Opts, Platform};

const CHAT: i64 = 4242;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reply_across_the_idle_deadline_is_delivered_by_the_agent_that_started_it() {
    // The shortest idle timeout (10 s), checked every second, against a model that takes 13 s.
    let p = Platform::start_with(
        Opts::default()
            .orchestrator_env("IDLE_CHECK_INTERVAL_S", 1)
            .orchestrator_env("AGENT_DELAY_MS", 13_000),
    )
    .await;
    p.create_tenant("slowpoke", &platform_tests::platform::bot_token(), Some(10))
        .await;
    p.send_text("slowpoke", 1, CHAT, "think hard").await;

    let messages = p
        .telegram
        .wait_for_messages(CHAT, 2, Duration::from_secs(60))
        .await;
    assert_eq!(
        messages,
        vec![
            "⏳ Starting up...".to_owned(),
            "echo: think hard (#1)".to_owned()
        ],
        "one start, one reply: the idle controller left the busy agent alone"
    );
    assert!(
        !p.logs().contains("idle check: terminating idle tenant"),
        "the agent was stopped while it worked on a reply"
    );
    // And it still sleeps once it really is idle.
    p.wait_for_status("slowpoke", "idle", Duration::from_secs(30))
        .await;
}

/// An agent busy with a long task (`/busy 20`, twice its 10 s idle timeout) reports its own
/// activity and is not put to sleep; once it stops reporting it sleeps after its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reporting_its_own_activity_stays_awake_until_it_stops() {
    let p = Platform::start_with(
        Opts::default()
            .orchestrator_env("IDLE_CHECK_INTERVAL_S", 1)
            // Inherited by the local agents: report every 2 s while busy.
            .orchestrator_env("AGENT_ACTIVITY_EVERY_MS", 2_000),
    )
    .await;
    p.create_tenant("worker", &platform_tests::platform::bot_token(), Some(10))
        .await;
    p.send_text("worker", 1, CHAT, "/busy 20").await;
    let messages = p
        .telegram
        .wait_for_messages(CHAT, 2, Duration::from_secs(60))
        .await;
    assert_eq!(messages[1], "echo: /busy 20 (#1)");
    let busy_since = tokio::time::Instant::now();
    // Nothing but the agent's own reports keeps it awake now: it must stay up for its task.
    while busy_since.elapsed() < Duration::from_secs(18) {
        assert_eq!(
            p.tenant_status("worker").await,
            "running",
            "stopped {:?} into its 20 s task",
            busy_since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.wait_for_status("worker", "idle", Duration::from_secs(30))
        .await;
    assert!(
        busy_since.elapsed() >= Duration::from_secs(25),
        "slept {:?} after the task began: before its last report aged past the timeout",
        busy_since.elapsed()
    );
    assert!(p.logs().contains("idle check: terminating idle tenant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_frozen_past_its_claim_does_not_send_what_another_replica_delivered() {
    // A 2 s claim, a 5 s model: router 0 is frozen mid-forward, router 1 takes the claim over.
    let cluster = Cluster::start(
        ClusterOpts::default()
            .router_env("INBOX_CLAIM_TTL_S", 2)
            .router_env("INBOX_SCAN_INTERVAL_MS", 200)
            .orchestrator_env("AGENT_DELAY_MS", 5_000),
    )
    .await;
    let tenants = cluster.create_tenants("frozen", 1).await;
    let tenant = tenants.keys().next().unwrap().clone();
    let status = cluster
        .post_update(
            &cluster.routers[0].url(),
            &tenant,
            &text_update(1, CHAT, "hello"),
        )
        .await
        .expect("router 0 answers");
    assert!(status.is_success(), "{status}");

    // Router 0 delivers: it announced the wake, and the agent is up and working on the message.
    cluster
        .telegram
        .wait_for_messages(CHAT, 1, Duration::from_secs(30))
        .await;
    wait_until("the agent to run", Duration::from_secs(30), || async {
        cluster.tenant(&tenant).await["status"] == "running"
    })
    .await;
    // Typing shows once the forward has started: freeze the router inside it, not before.
    cluster
        .telegram
        .wait_for("router 0 to forward", Duration::from_secs(30), |calls| {
            calls
                .iter()
                .any(|c| c.method == "sendChatAction" && c.chat_id() == Some(CHAT))
        })
        .await;
    let frozen = cluster.routers[0].pid().expect("router 0 runs") as i32;
    // SAFETY: signalling a child process of this test.
    assert_eq!(unsafe { libc::kill(frozen, libc::SIGSTOP) }, 0);

    let replies = |c: &Cluster| {
        c.telegram
            .messages_to(CHAT)
            .into_iter()
            .filter(|m| m.starts_with("echo: hello"))
            .count()
    };
    cluster
        .telegram
        .wait_for(
            "router 1 to deliver the update",
            Duration::from_secs(60),
            |calls| {
                calls
                    .iter()
                    .any(|c| c.text().is_some_and(|t| t.starts_with("echo: hello")))
            },
        )
        .await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(frozen, libc::SIGCONT) }, 0);
    // Router 0's forward returns within the model's 5 s: it either gives the entry up (its claim
    // lapsed while it was frozen) or sends a second reply.
    wait_until(
        "router 0 to finish its forward",
        Duration::from_secs(30),
        || async {
            let log = cluster.routers[0].log();
            // Whichever check sees the lapse first: the renewal, or the one before the send.
            let stopped = [
                "delivery claim expired",
                "delivery claim lost",
                "could not be renewed",
            ]
            .iter()
            .any(|line| log.contains(line));
            stopped || replies(&cluster) >= 2
        },
    )
    .await;
    assert_eq!(
        replies(&cluster),
        1,
        "one reply: {:?}",
        cluster.telegram.messages_to(CHAT)
    );
}
