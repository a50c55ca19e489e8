//! Delivery behaviour against fake neighbours, with the real SQLite inbox and in-process cache.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::cache::{EndpointCache, MemoryCache};
use common::inbox::sqlite::SqliteInbox;
use common::inbox::Inbox;
use common::telegram::TelegramClient;
use common::TenantId;
use router::activity::Activity;
use router::agent::AgentClient;
use router::config::{DeliveryConfig, DEFAULT_DELAYED_MESSAGE};
use router::delivery::{Delivery, Dispatcher, AGENT_FAILED, FAILED_TO_START};
use router::metrics::Metrics;
use router::orchestrator_client::OrchestratorClient;
use router::reply::Sender;
use support::*;

const STARTING: &str = "⏳ Starting up...";
const WAIT: Duration = Duration::from_secs(15);

fn fast() -> DeliveryConfig {
    DeliveryConfig {
        scan_interval: Duration::from_millis(100),
        claim_ttl: Duration::from_secs(3),
        wake_attempts: 3,
        agent_attempts: 3,
        telegram_attempts: 2,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        agent_timeout: Duration::from_secs(10),
        wake_timeout: Duration::from_secs(10),
        ..DeliveryConfig::default()
    }
}

struct Harness {
    /// How long a dispatcher's shutdown lets the updates in flight finish.
    grace: Duration,
    inbox: Arc<SqliteInbox>,
    cache: Arc<MemoryCache>,
    dispatcher: Option<Dispatcher>,
    metrics: Arc<Metrics>,
    tg: Arc<Telegram>,
    orch: Arc<Orchestrator>,
    _servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(cfg: DeliveryConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Arc::new(SqliteInbox::open(&dir.path().join("inbox.db")).unwrap());
        let mut h = Harness::without_dispatcher(inbox, dir);
        h.start_dispatcher(cfg);
        h
    }

    fn without_dispatcher(inbox: Arc<SqliteInbox>, dir: tempfile::TempDir) -> Harness {
        let (tg, tg_srv) = Telegram::start();
        let (orch, orch_srv) = Orchestrator::start();
        Harness {
            grace: Duration::from_secs(5),
            inbox,
            cache: Arc::new(MemoryCache::new()),
            dispatcher: None,
            metrics: Arc::new(Metrics::default()),
            tg,
            orch,
            _servers: vec![tg_srv, orch_srv],
            _dir: dir,
        }
    }

    fn start_dispatcher(&mut self, cfg: DeliveryConfig) {
        let orch_url = self._servers[1].url();
        let tg_url = self._servers[0].url();
        let (activity, activity_rx) = Activity::new(cfg.activity_interval);
        let orch = Arc::new(OrchestratorClient::new(
            &orch_url,
            None,
            cfg.wake_timeout,
            cfg.bot_token_ttl,
        ));
        let delivery = Delivery {
            inbox: self.inbox.clone(),
            endpoints: router::endpoint::Endpoints::new(
                self.cache.clone(),
                orch.clone(),
                self.metrics.clone(),
                cfg.endpoint_ttl,
            ),
            orch: orch.clone(),
            agent: AgentClient::new(cfg.agent_timeout),
            telegram: Sender::new(
                TelegramClient::new(&tg_url),
                orch,
                self.metrics.clone(),
                &cfg,
            ),
            activity,
            metrics: self.metrics.clone(),
            cfg,
            replica: "test-replica".into(),
        };
        self.dispatcher = Some(Dispatcher::start(
            Arc::new(delivery),
            activity_rx,
            self.grace,
        ));
    }

    fn agent(&mut self, tenant: &str) -> Arc<Agent> {
        let (agent, srv) = Agent::start(tenant);
        self.orch.set(tenant, WakeReply::Endpoint(srv.endpoint()));
        self._servers.push(srv);
        agent
    }

    async fn post(&self, tenant: &str, update_id: i64, chat: i64, text: &str) {
        let id = TenantId::parse(tenant).unwrap();
        self.inbox
            .append(&id, update_id, &update(update_id, chat, text))
            .await
            .unwrap();
        self.dispatcher.as_ref().unwrap().notify(&id);
    }

    async fn depth(&self) -> u64 {
        self.inbox.stats().await.unwrap().depth
    }

    /// Caches the endpoint of `owner`'s agent for `tenant`: a stale entry, as when the address
    /// was reused by another tenant's agent.
    async fn cache_the_endpoint_of(&self, owner: &str, tenant: &str) {
        let endpoint = match self.orch.wake.lock().unwrap().get(owner).cloned() {
            Some(WakeReply::Endpoint(ep)) => ep,
            _ => unreachable!(),
        };
        self.cache
            .set(&tid(tenant), &endpoint, Duration::from_secs(300))
            .await
            .unwrap();
    }

    async fn wait_empty(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while self.depth().await > 0 {
            assert!(std::time::Instant::now() < deadline, "inbox never drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_tenant_gets_one_wake_one_starting_message_per_chat_and_ordered_replies() {
    let mut h = Harness::new(fast());
    let agent = h.agent("bob");
    h.orch.wake_delay_ms.store(400, Ordering::Relaxed);
    // Three chats, five messages each, interleaved; the first arrive before the wake, more during it.
    let mut expected = Vec::new();
    for i in 0..15 {
        let chat = 100 + (i % 3);
        let text = format!("m{i}");
        h.post("bob", i, chat, &text).await;
        expected.push(text);
        if i == 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    h.wait_empty().await;
    assert_eq!(h.orch.wakes("bob"), 1, "one wake for the whole burst");
    assert_eq!(
        agent.messages(),
        expected,
        "agent saw every message once, in order"
    );
    for chat in 100..103 {
        let got = h.tg.messages_to(chat);
        let want: Vec<String> = std::iter::once(STARTING.to_owned())
            .chain(
                (0..15)
                    .filter(|i| 100 + (i % 3) == chat)
                    .map(|i| format!("echo: m{i}")),
            )
            .collect();
        assert_eq!(got, want, "chat {chat}");
    }

    // Awake now: the next message is answered with no new starting message and no wake.
    h.post("bob", 99, 100, "again").await;
    eventually(WAIT, "reply to the message after the wake", || {
        h.tg.messages_to(100).last().map(String::as_str) == Some("echo: again")
    })
    .await;
    assert_eq!(
        h.tg.messages_to(100)
            .iter()
            .filter(|t| *t == STARTING)
            .count(),
        1
    );
    assert_eq!(h.orch.wakes("bob"), 1);
    let keys: Vec<String> = agent
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(keys[0], "bob:0");
    assert_eq!(keys.last().unwrap(), "bob:99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_update_id_is_delivered_once() {
    let mut h = Harness::new(fast());
    let agent = h.agent("dup");
    for _ in 0..3 {
        h.post("dup", 7, 1, "once").await;
    }
    h.post("dup", 8, 1, "twice").await;
    h.wait_empty().await;
    assert_eq!(agent.messages(), vec!["once", "twice"]);
    assert_eq!(
        h.tg.messages_to(1),
        vec![STARTING, "echo: once", "echo: twice"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_5xx_is_retried_a_bounded_number_of_times_then_the_user_is_told() {
    let mut h = Harness::new(fast());
    let agent = h.agent("flaky");
    agent.status.store(500, Ordering::Relaxed);
    h.post("flaky", 1, 5, "hello").await;
    h.wait_empty().await;
    assert_eq!(
        agent.call_count(),
        3,
        "AGENT_ATTEMPTS forwards, then give up"
    );
    assert_eq!(h.tg.messages_to(5), vec![STARTING, AGENT_FAILED]);
    assert_eq!(
        h.metrics.deliveries.get(router::metrics::Delivery::failed),
        1
    );
    let keys: Vec<String> = agent
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert!(
        keys.iter().all(|k| k == "flaky:1"),
        "retries reuse the idempotency key: {keys:?}"
    );

    // The failed entry left the inbox; the next one goes through once the agent recovers.
    agent.status.store(200, Ordering::Relaxed);
    h.post("flaky", 2, 5, "better").await;
    eventually(WAIT, "reply after recovery", || {
        h.tg.messages_to(5).last().map(String::as_str) == Some("echo: better")
    })
    .await;
    assert_eq!(agent.call_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failure_invalidates_the_cache_and_wakes_again() {
    let mut h = Harness::new(fast());
    let agent = h.agent("moved");
    let stale = dead_endpoint();
    h.cache
        .set(&tid("moved"), &stale, Duration::from_secs(300))
        .await
        .unwrap();
    h.post("moved", 1, 9, "where are you").await;
    h.wait_empty().await;
    assert_eq!(h.orch.wakes("moved"), 1, "the stale endpoint caused a wake");
    assert_eq!(agent.messages(), vec!["where are you"]);
    assert_eq!(
        h.tg.messages_to(9).last().map(String::as_str),
        Some("echo: where are you")
    );
    let cached = h.cache.get(&tid("moved")).await.unwrap();
    assert_ne!(
        cached.as_deref(),
        Some(stale.as_str()),
        "stale endpoint dropped"
    );
    assert!(h.metrics.retries.get(router::metrics::Retry::reconnect) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_tenant_answering_421_counts_as_a_stale_endpoint() {
    let mut h = Harness::new(fast());
    let _other = h.agent("other");
    let mine = h.agent("mine");
    h.cache_the_endpoint_of("other", "mine").await;
    h.post("mine", 1, 3, "hi").await;
    h.wait_empty().await;
    assert_eq!(h.orch.wakes("mine"), 1);
    assert_eq!(mine.messages(), vec!["hi"]);
    assert_eq!(
        h.tg.messages_to(3).last().map(String::as_str),
        Some("echo: hi")
    );
}

/// A reused address now serving another tenant's agent that ignores `X-Tenant-Id` (ZeroClaw):
/// it refuses this tenant's credential (401), so the answer never comes from it; the router drops
/// the cache entry, wakes again and delivers through the tenant's own agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refusing_the_credential_is_never_the_answer_and_costs_a_re_wake() {
    let mut h = Harness::new(fast());
    let other = h.agent("other");
    other
        .ignores_tenant_header
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mine = h.agent("mine");
    h.cache_the_endpoint_of("other", "mine").await;
    h.post("mine", 1, 3, "hi").await;
    h.wait_empty().await;
    assert_eq!(
        other.call_count(),
        0,
        "the other tenant's agent answered nothing"
    );
    assert_eq!(other.refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(h.orch.wakes("mine"), 1);
    assert_eq!(mine.messages(), vec!["hi"]);
    assert_eq!(
        h.tg.messages_to(3).last().map(String::as_str),
        Some("echo: hi")
    );
    assert!(
        h.orch
            .agent_token_calls
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2,
        "the credential is fetched again after a refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_wake_is_retried_then_every_waiting_chat_is_told() {
    let h = Harness::new(fast());
    h.orch.set("broken", WakeReply::AgentFailed);
    h.post("broken", 1, 11, "a").await;
    h.post("broken", 2, 12, "b").await;
    h.post("broken", 3, 11, "c").await;
    h.wait_empty().await;
    assert_eq!(h.orch.wakes("broken"), 3, "WAKE_ATTEMPTS wakes");
    assert_eq!(h.tg.messages_to(11), vec![STARTING, FAILED_TO_START]);
    assert_eq!(h.tg.messages_to(12), vec![STARTING, FAILED_TO_START]);
    assert_eq!(
        h.metrics.deliveries.get(router::metrics::Delivery::failed),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_outage_longer_than_the_wake_budget_keeps_every_update() {
    let mut h = Harness::new(fast());
    h.orch.set("bob", WakeReply::Status(503));
    for (i, chat) in [(1, 21), (2, 22), (3, 21)] {
        h.post("bob", i, chat, &format!("m{i}")).await;
    }
    // Far past WAKE_ATTEMPTS (3) wakes: today's budget would have answered "Failed to start".
    eventually(WAIT, "the outage to outlast the wake budget", || {
        h.orch.wakes("bob") >= 12
    })
    .await;
    assert_eq!(h.depth().await, 3, "every update is kept");
    assert_eq!(h.metrics.delayed_tenants.load(Ordering::Relaxed), 1);
    assert!(h.metrics.render(None).contains("router_delayed_tenants 1"));
    let agent = h.agent("bob"); // the orchestrator is back
    h.wait_empty().await;
    assert_eq!(
        agent.messages(),
        vec!["m1", "m2", "m3"],
        "each answered once, in order"
    );
    assert_eq!(
        h.tg.messages_to(21),
        vec![STARTING, DEFAULT_DELAYED_MESSAGE, "echo: m1", "echo: m3"]
    );
    assert_eq!(
        h.tg.messages_to(22),
        vec![STARTING, DEFAULT_DELAYED_MESSAGE, "echo: m2"]
    );
    assert_eq!(
        h.metrics.deliveries.get(router::metrics::Delivery::failed),
        0
    );
    assert_eq!(h.metrics.delayed_tenants.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_older_than_the_maximum_age_are_given_up_during_an_outage() {
    let h = Harness::new(DeliveryConfig {
        inbox_max_age: Duration::from_millis(800),
        ..fast()
    });
    h.orch.set("bob", WakeReply::Status(503));
    h.post("bob", 1, 31, "old").await;
    h.wait_empty().await;
    assert!(
        h.orch.wakes("bob") > 3,
        "retried past the wake budget first"
    );
    assert_eq!(
        h.tg.messages_to(31),
        vec![STARTING, DEFAULT_DELAYED_MESSAGE, FAILED_TO_START]
    );
    assert_eq!(
        h.metrics.deliveries.get(router::metrics::Delivery::expired),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_an_unknown_tenant_are_dropped_without_replies() {
    let h = Harness::new(fast());
    h.post("ghost", 1, 1, "anyone?").await;
    h.post("ghost", 2, 1, "hello?").await;
    h.wait_empty().await;
    assert!(h.tg.calls().is_empty());
    assert_eq!(
        h.metrics.deliveries.get(router::metrics::Delivery::dropped),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_does_not_stall_another_tenant() {
    let mut h = Harness::new(fast());
    let slow = h.agent("slow");
    let _fast = h.agent("quick");
    slow.delay_ms.store(3000, Ordering::Relaxed);
    h.post("slow", 1, 1, "take your time").await;
    h.post("slow", 2, 1, "still there?").await;
    eventually(WAIT, "slow agent got the first message", || {
        slow.call_count() == 1
    })
    .await;
    h.post("quick", 1, 2, "fast please").await;
    eventually(
        Duration::from_secs(2),
        "quick tenant answered while slow one works",
        || h.tg.messages_to(2).last().map(String::as_str) == Some("echo: fast please"),
    )
    .await;
    assert!(h.tg.messages_to(1).iter().all(|t| !t.starts_with("echo")));
    h.wait_empty().await;
    assert_eq!(
        h.tg.messages_to(1),
        vec![STARTING, "echo: take your time", "echo: still there?"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_by_a_previous_process_are_delivered_by_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(SqliteInbox::open(&dir.path().join("inbox.db")).unwrap());
    for i in 0..3 {
        inbox
            .append(&tid("left"), i, &update(i, 4, &format!("old{i}")))
            .await
            .unwrap();
    }
    let mut h = Harness::without_dispatcher(inbox, dir);
    let agent = h.agent("left");
    h.start_dispatcher(fast()); // no notify: only the periodic scan can find them
    h.wait_empty().await;
    assert_eq!(agent.messages(), vec!["old0", "old1", "old2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_without_text_are_acknowledged_and_skipped() {
    let mut h = Harness::new(fast());
    let agent = h.agent("pics");
    let id = tid("pics");
    let sticker =
        serde_json::json!({"update_id": 1, "message": {"chat": {"id": 1}, "sticker": {}}});
    h.inbox
        .append(&id, 1, sticker.to_string().as_bytes())
        .await
        .unwrap();
    h.post("pics", 2, 1, "text").await;
    h.wait_empty().await;
    assert_eq!(agent.messages(), vec!["text"]);
    assert_eq!(
        h.metrics.deliveries.get(router::metrics::Delivery::skipped),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_reported_once_per_interval_not_per_message() {
    let mut h = Harness::new(fast());
    let _agent = h.agent("busy");
    for i in 0..5 {
        h.post("busy", i, 1, "msg").await;
    }
    h.wait_empty().await;
    eventually(WAIT, "activity reported", || h.orch.activity("busy") >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.orch.activity("busy"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_update_in_flight_finish() {
    let mut h = Harness::new(fast());
    let agent = h.agent("inflight");
    agent.delay_ms.store(500, Ordering::Relaxed);
    h.post("inflight", 1, 1, "first").await;
    h.post("inflight", 2, 1, "second").await;
    eventually(WAIT, "first forwarded", || agent.call_count() == 1).await;
    h.dispatcher.take().unwrap().shutdown().await;
    assert_eq!(
        h.tg.messages_to(1).last().map(String::as_str),
        Some("echo: first")
    );
    assert_eq!(agent.call_count(), 1, "nothing new starts during shutdown");
    let left = h.inbox.pending(&tid("inflight"), 10).await.unwrap();
    assert_eq!(left.len(), 1, "the second update stays in the inbox");
    assert_eq!(left[0].update_id, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_that_starts_waiting_during_the_wake_is_told_once_too() {
    let mut h = Harness::new(fast());
    let agent = h.agent("late");
    h.orch.wake_delay_ms.store(1500, Ordering::Relaxed);
    h.post("late", 1, 1, "first").await;
    eventually(WAIT, "starting message to the first chat", || {
        h.tg.messages_to(1) == vec![STARTING]
    })
    .await;
    eventually(WAIT, "wake under way", || h.orch.wakes("late") == 1).await;
    h.post("late", 2, 2, "second").await;
    h.post("late", 3, 2, "third").await;
    eventually(
        WAIT,
        "starting message to the late chat before the wake ends",
        || h.tg.messages_to(2) == vec![STARTING],
    )
    .await;
    assert!(agent.messages().is_empty(), "still waking");
    h.wait_empty().await;
    assert_eq!(h.orch.wakes("late"), 1);
    assert_eq!(h.tg.messages_to(1), vec![STARTING, "echo: first"]);
    assert_eq!(
        h.tg.messages_to(2),
        vec![STARTING, "echo: second", "echo: third"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_that_starts_waiting_during_a_fast_wake_is_told_before_its_reply() {
    let mut h = Harness::new(fast());
    let _agent = h.agent("quickwake");
    h.orch.wake_delay_ms.store(200, Ordering::Relaxed); // ends before the first look for new chats
    h.post("quickwake", 1, 1, "first").await;
    eventually(WAIT, "wake under way", || h.orch.wakes("quickwake") == 1).await;
    h.post("quickwake", 2, 2, "second").await;
    h.wait_empty().await;
    assert_eq!(h.tg.messages_to(1), vec![STARTING, "echo: first"]);
    assert_eq!(h.tg.messages_to(2), vec![STARTING, "echo: second"]);
}

const PAUSED: &str = "paused (test notice)";

fn with_notice() -> DeliveryConfig {
    DeliveryConfig {
        suspended_message: PAUSED.into(),
        ..fast()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenants_waiting_chats_get_the_notice_once_each_and_nothing_reaches_the_agent()
{
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(SqliteInbox::open(&dir.path().join("inbox.db")).unwrap());
    let mut h = Harness::without_dispatcher(inbox, dir);
    let agent = h.agent("paused");
    h.orch.set_suspended("paused", true);
    // Six messages from two chats wait before delivery starts: one delivery round for all of them.
    for i in 0..6 {
        h.inbox
            .append(&tid("paused"), i, &update(i, 100 + i % 2, &format!("m{i}")))
            .await
            .unwrap();
    }
    h.start_dispatcher(with_notice());
    h.wait_empty().await;
    assert_eq!(
        h.tg.messages_to(100),
        [PAUSED],
        "one notice, no starting message"
    );
    assert_eq!(h.tg.messages_to(101), [PAUSED]);
    assert_eq!(h.orch.wakes("paused"), 0, "never woken");
    assert!(agent.messages().is_empty());

    // Resumed: the next message wakes the agent as usual.
    h.orch.set_suspended("paused", false);
    h.post("paused", 10, 100, "after").await;
    eventually(WAIT, "the reply after resume", || {
        h.tg.messages_to(100).last().map(String::as_str) == Some("echo: after")
    })
    .await;
    assert_eq!(h.tg.messages_to(100), [PAUSED, STARTING, "echo: after"]);
    assert_eq!(agent.messages(), ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_refused_as_suspended_is_not_retried_and_the_chats_are_told_why() {
    let h = Harness::new(with_notice());
    h.orch.set("late", WakeReply::Status(423));
    h.post("late", 1, 7, "hi").await;
    h.wait_empty().await;
    // Suspended between the router's look and its wake: told "starting", then why it is not.
    assert_eq!(h.tg.messages_to(7), [STARTING, PAUSED]);
    assert_eq!(
        h.orch.wakes("late"),
        1,
        "no retries against a suspended tenant"
    );
}

/// A reply held by Telegram's flood control (`retry_after` far longer than the shutdown grace)
/// does not hold shutdown: the wait ends at once, the update stays in the inbox unacknowledged,
/// and the router that starts next delivers the reply (the agent answers the same key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_send_waiting_on_retry_after_and_the_reply_follows_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(SqliteInbox::open(&dir.path().join("inbox.db")).unwrap());
    let mut h = Harness::without_dispatcher(inbox, dir);
    h.grace = Duration::from_secs(30);
    let agent = h.agent("flood");
    let ep = match h.orch.wake.lock().unwrap().get("flood").cloned() {
        Some(WakeReply::Endpoint(ep)) => ep,
        _ => unreachable!(),
    };
    h.cache
        .set(&tid("flood"), &ep, Duration::from_secs(300))
        .await
        .unwrap();
    h.tg.flood_retry_after.store(120, Ordering::Relaxed);
    h.start_dispatcher(fast());
    h.post("flood", 1, 8, "hold on").await;
    eventually(WAIT, "the reply refused by flood control", || {
        h.tg.flooded.load(Ordering::Relaxed) >= 1
    })
    .await;

    let began = std::time::Instant::now();
    h.dispatcher.take().unwrap().shutdown().await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}: neither the 120 s retry_after nor the 30 s grace",
        began.elapsed()
    );
    assert_eq!(h.tg.flooded.load(Ordering::Relaxed), 1, "no send after it");
    assert!(h.tg.messages_to(8).is_empty());
    let left = h.inbox.pending(&tid("flood"), 10).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.update_id).collect::<Vec<_>>(),
        [1],
        "the update stays for redelivery"
    );

    // The next router (flood control over): the reply goes out once.
    h.tg.flood_retry_after.store(0, Ordering::Relaxed);
    h.start_dispatcher(fast());
    h.wait_empty().await;
    assert_eq!(h.tg.messages_to(8), ["echo: hold on"]);
    let keys: Vec<String> = agent
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(
        keys,
        ["flood:1", "flood:1"],
        "forwarded again under its key"
    );
}
