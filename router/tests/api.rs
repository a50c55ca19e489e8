//! The router's HTTP contract, served in-process against fake neighbours.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use common::cache::MemoryCache;
use common::inbox::sqlite::SqliteInbox;
use common::inbox::Inbox;
use common::{Secret, TenantId};
use router::app;
use router::config::{Config, DeliveryConfig};
use serde_json::{json, Value};
use support::*;

struct Setup {
    inbox: Arc<SqliteInbox>,
    tg: Arc<Telegram>,
    orch: Arc<Orchestrator>,
    servers: Vec<Server>,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(SqliteInbox::open(&dir.path().join("inbox.db")).unwrap());
    let (tg, tg_srv) = Telegram::start();
    let (orch, orch_srv) = Orchestrator::start();
    Setup {
        inbox,
        tg,
        orch,
        servers: vec![tg_srv, orch_srv],
        dir,
    }
}

impl Setup {
    fn config(&self) -> Config {
        Config {
            port: 0,
            data_dir: self.dir.path().to_owned(),
            backend: common::config::SharedBackend::Local,
            orchestrator_addr: self.servers[1].url(),
            public_base_url: None,
            api_token: None,
            webhook_secret: None,
            webhook_secret_optional: false,
            telegram_api_url: self.servers[0].url(),
            pod_name: None,
            agent_port: 3000,
            delivery: DeliveryConfig {
                scan_interval: Duration::from_millis(100),
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                wake_attempts: 2,
                ..DeliveryConfig::default()
            },
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    fn agent(&mut self, tenant: &str) -> Arc<Agent> {
        let (agent, srv) = Agent::start(tenant);
        self.orch.set(tenant, WakeReply::Endpoint(srv.endpoint()));
        self.servers.push(srv);
        agent
    }
}

macro_rules! service {
    ($s:expr, $cfg:expr) => {{
        let state = app::build(
            &$cfg,
            "test".into(),
            $s.inbox.clone(),
            Arc::new(MemoryCache::new()),
        );
        (test::init_service(app::app(state.clone())).await, state)
    }};
}

async fn body_json<B: actix_web::body::MessageBody>(
    resp: actix_web::dev::ServiceResponse<B>,
) -> Value {
    let bytes = test::read_body(resp).await;
    serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
}

#[actix_web::test]
async fn tg_refuses_bad_input_and_stores_nothing() {
    let s = setup();
    let (svc, _state) = service!(s, s.config());
    let long = "a".repeat(80);
    for id in ["Bad_ID", long.as_str(), "-x", "..%2Fx", "x-"] {
        let resp = test::call_service(
            &svc,
            TestRequest::post()
                .uri(&format!("/tg/{id}"))
                .set_payload(update(1, 1, "hi"))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "id {id:?}");
        assert!(body_json(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("tenant id"));
    }
    for body in [
        &b"not json"[..],
        br#"{"message": {}}"#,
        br#"{"update_id": "1"}"#,
        b"[]",
    ] {
        let resp = test::call_service(
            &svc,
            TestRequest::post()
                .uri("/tg/bob")
                .set_payload(body.to_vec())
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(body_json(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("update_id"));
    }
    let mut big = br#"{"update_id": 1, "pad": ""#.to_vec();
    big.resize(1024 * 1024 + 10, b'x');
    big.extend_from_slice(br#""}"#);
    let resp = test::call_service(
        &svc,
        TestRequest::post()
            .uri("/tg/bob")
            .set_payload(big)
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_json(resp).await["error"].is_string());
    let resp = test::call_service(&svc, TestRequest::post().uri("/tg/").to_request()).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.inbox.stats().await.unwrap().depth, 0, "nothing stored");
}

#[actix_web::test]
async fn tg_stores_before_acknowledging_and_acknowledges_duplicates() {
    let s = setup();
    let mut cfg = s.config();
    cfg.orchestrator_addr = format!("http://{}", dead_endpoint()); // delivery cannot progress
    cfg.webhook_secret = Some(Secret::new("hook-secret")); // proves the tenant without asking
    let (svc, _state) = service!(s, cfg);
    let secret = common::webhook::secret_token("hook-secret", &TenantId::parse("bob").unwrap());
    for _ in 0..3 {
        let resp = test::call_service(
            &svc,
            TestRequest::post()
                .uri("/tg/bob")
                .insert_header(("X-Telegram-Bot-Api-Secret-Token", secret.as_str()))
                .set_payload(update(42, 1, "hi"))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_json(resp).await, json!({"ok": true}));
    }
    let pending = s
        .inbox
        .pending(&TenantId::parse("bob").unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].update_id, 42);
}

/// Issue 15: without `WEBHOOK_SECRET`, an update for a tenant the orchestrator does not know is
/// refused before anything is written; answers are cached (a "no" only briefly).
#[actix_web::test]
async fn tg_without_a_secret_refuses_unknown_tenants_before_writing() {
    let mut s = setup();
    let mut cfg = s.config();
    cfg.delivery.unknown_tenant_ttl = Duration::from_millis(300);
    let (svc, _state) = service!(s, cfg);
    let post = |tenant: &str, u: i64| {
        TestRequest::post()
            .uri(&format!("/tg/{tenant}"))
            .set_payload(update(u, 1, "hi"))
            .to_request()
    };
    for u in 1..=5 {
        let resp = test::call_service(&svc, post("ghost", u)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(s.inbox.stats().await.unwrap().depth, 0, "nothing stored");
    assert_eq!(
        s.orch.view_calls.load(Ordering::Relaxed),
        1,
        "a no is cached"
    );

    // The tenant is created: accepted once the short "no" is forgotten, and update 1 is no duplicate.
    let _agent = s.agent("ghost");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while test::call_service(&svc, post("ghost", 1)).await.status() != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the new tenant is refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for u in 2..=5 {
        let resp = test::call_service(&svc, post("ghost", u)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // One view for the "no", one for the "yes", and at most one more: delivery reads the view
    // before its wake (is the tenant suspended?). Without the cache each update would add one.
    let views = s.orch.view_calls.load(Ordering::Relaxed);
    assert!((2..=3).contains(&views), "a yes is cached: {views} views");
}

#[actix_web::test]
async fn tg_retried_update_is_answered_once() {
    let mut s = setup();
    let agent = s.agent("bob");
    let (svc, _state) = service!(s, s.config());
    for _ in 0..3 {
        let resp = test::call_service(
            &svc,
            TestRequest::post()
                .uri("/tg/bob")
                .set_payload(update(5, 77, "hi"))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    eventually(Duration::from_secs(10), "reply", || {
        s.tg.messages_to(77).contains(&"echo: hi".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.tg.messages_to(77), vec!["⏳ Starting up...", "echo: hi"]);
    assert_eq!(agent.call_count(), 1);
    let call = &s.tg.calls()[0];
    assert_eq!(call.token, BOT_TOKEN, "replies use the tenant's bot token");
}

#[actix_web::test]
async fn tg_checks_the_per_tenant_secret_token() {
    let s = setup();
    let mut cfg = s.config();
    cfg.webhook_secret = Some(Secret::new("hook-secret"));
    cfg.api_token = Some(Secret::new("api-token"));
    let (svc, _state) = service!(s, cfg);
    let bob = TenantId::parse("bob").unwrap();
    let alice = TenantId::parse("alice").unwrap();
    let good = common::webhook::secret_token("hook-secret", &bob);
    let alices = common::webhook::secret_token("hook-secret", &alice);
    for (token, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("nope"), StatusCode::UNAUTHORIZED),
        (Some(alices.as_str()), StatusCode::UNAUTHORIZED),
        (Some(good.as_str()), StatusCode::OK),
    ] {
        let mut req = TestRequest::post()
            .uri("/tg/bob")
            .set_payload(update(1, 1, "hi"));
        if let Some(t) = token {
            req = req.insert_header(("X-Telegram-Bot-Api-Secret-Token", t));
        }
        let resp = test::call_service(&svc, req.to_request()).await;
        assert_eq!(resp.status(), want, "token {token:?}");
    }
    assert_eq!(
        s.inbox.stats().await.unwrap().depth,
        1,
        "only the verified update is stored"
    );
}

#[actix_web::test]
async fn api_token_guards_chat_and_admin_but_not_probes() {
    let s = setup();
    let mut cfg = s.config();
    cfg.api_token = Some(Secret::new("api-token"));
    let (svc, _state) = service!(s, cfg);
    for auth in [None, Some("Bearer wrong"), Some("api-token")] {
        for (method, uri) in [
            ("POST", "/chat/bob"),
            ("POST", "/admin/webhook/bob"),
            ("DELETE", "/admin/webhook/bob"),
        ] {
            let mut req = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(uri)
                .set_json(json!({"message": "hi"}));
            if let Some(a) = auth {
                req = req.insert_header(("Authorization", a));
            }
            let resp = test::call_service(&svc, req.to_request()).await;
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {auth:?}"
            );
            assert_eq!(
                body_json(resp).await,
                json!({"error": "missing or invalid API token"})
            );
        }
    }
    for uri in ["/healthz", "/readyz", "/metrics"] {
        let resp = test::call_service(&svc, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    }
    // /tg is for Telegram: no API token needed (WEBHOOK_SECRET unset here, so bob must exist).
    s.orch.set("bob", WakeReply::AgentFailed);
    let resp = test::call_service(
        &svc,
        TestRequest::post()
            .uri("/tg/bob")
            .set_payload(update(1, 1, "hi"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Deny by default: the test walks the router's own route table, so a new route is covered.
#[actix_web::test]
async fn every_route_off_the_public_list_needs_the_token() {
    use common::http_auth::{sample_path, Access};
    let s = setup();
    let mut cfg = s.config();
    cfg.api_token = Some(Secret::new("api-token"));
    let (svc, state) = service!(s, cfg);
    let routes = router::api::routes();
    let open: Vec<_> = routes
        .table()
        .routes()
        .iter()
        .filter(|r| r.access != Access::Token)
        .map(|r| (r.method.as_str(), r.path, r.access))
        .collect();
    assert_eq!(
        open,
        [
            ("GET", "/healthz", Access::Public),
            ("GET", "/readyz", Access::Public),
            ("GET", "/metrics", Access::Public),
            ("POST", "/tg/{id}", Access::Handler),
        ]
    );
    for r in routes.table().routes() {
        let req = TestRequest::default()
            .method(r.method.clone())
            .uri(&sample_path(r.path, "bob"))
            .set_payload(update(1, 1, "hi"))
            .to_request();
        let status = test::call_service(&svc, req).await.status();
        match r.access {
            Access::Token => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path)
            }
            _ => assert_ne!(status, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path),
        }
    }
    for (method, uri) in [("GET", "/nope"), ("GET", "/tg/bob"), ("POST", "/metrics")] {
        let req = TestRequest::default()
            .method(method.parse().unwrap())
            .uri(uri)
            .to_request();
        let status = test::call_service(&svc, req).await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    state.dispatcher.shutdown().await;
}

#[actix_web::test]
async fn chat_wakes_forwards_and_maps_failures() {
    let mut s = setup();
    let agent = s.agent("bob");
    let mut cfg = s.config();
    cfg.api_token = Some(Secret::new("api-token"));
    let (svc, _state) = service!(s, cfg);
    let chat = |id: &str, body: Value| {
        TestRequest::post()
            .uri(&format!("/chat/{id}"))
            .insert_header(("Authorization", "Bearer api-token"))
            .set_json(body)
            .to_request()
    };
    let resp = test::call_service(&svc, chat("bob", json!({"message": "hello"}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_json(resp).await, json!({"response": "echo: hello"}));
    assert_eq!(s.orch.wakes("bob"), 1);
    let resp = test::call_service(&svc, chat("bob", json!({"message": "again"}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.orch.wakes("bob"), 1, "endpoint cached");
    assert!(s.tg.calls().is_empty(), "no Telegram traffic for /chat");

    for bad in [
        json!({"message": "x", "extra": 1}),
        json!({"message": 5}),
        json!({}),
        json!({"message": ""}),
    ] {
        let resp = test::call_service(&svc, chat("bob", bad.clone())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let resp = test::call_service(&svc, chat("Bad_ID", json!({"message": "x"}))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = test::call_service(&svc, chat("ghost", json!({"message": "x"}))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    s.orch.set("broken", WakeReply::AgentFailed);
    let resp = test::call_service(&svc, chat("broken", json!({"message": "x"}))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_json(resp).await["error"]
        .as_str()
        .unwrap()
        .contains("agent did not start"));
    agent.status.store(500, Ordering::Relaxed);
    let resp = test::call_service(&svc, chat("bob", json!({"message": "x"}))).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

#[actix_web::test]
async fn admin_webhook_registers_with_the_secret_token_and_deletes() {
    let mut s = setup();
    s.agent("bob");
    let (svc, _state) = service!(s, s.config());
    let resp = test::call_service(
        &svc,
        TestRequest::post().uri("/admin/webhook/bob").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_json(resp).await["error"]
        .as_str()
        .unwrap()
        .contains("PUBLIC_BASE_URL"));

    let mut cfg = s.config();
    cfg.public_base_url = Some("https://bots.example.com".into());
    cfg.webhook_secret = Some(Secret::new("hook-secret"));
    let (svc, _state) = service!(s, cfg);
    let resp = test::call_service(
        &svc,
        TestRequest::post().uri("/admin/webhook/bob").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = body_json(resp).await;
    assert_eq!(
        body,
        // `webhook_url` is the Go router's name of the same field.
        json!({"ok": true, "url": "https://bots.example.com/tg/bob",
               "webhook_url": "https://bots.example.com/tg/bob"})
    );
    assert!(!body.to_string().contains(BOT_TOKEN));
    let call = s.tg.calls().pop().unwrap();
    assert_eq!(call.method, "setWebhook");
    assert_eq!(call.token, BOT_TOKEN);
    assert_eq!(call.body["url"], "https://bots.example.com/tg/bob");
    let bob = TenantId::parse("bob").unwrap();
    assert_eq!(
        call.body["secret_token"],
        common::webhook::secret_token("hook-secret", &bob)
    );

    let resp = test::call_service(
        &svc,
        TestRequest::delete().uri("/admin/webhook/bob").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_json(resp).await, json!({"ok": true}));
    assert_eq!(s.tg.calls().pop().unwrap().method, "deleteWebhook");

    let resp = test::call_service(
        &svc,
        TestRequest::post().uri("/admin/webhook/ghost").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn probes_and_metrics() {
    let s = setup();
    let (svc, state) = service!(s, s.config());
    test::call_service(
        &svc,
        TestRequest::post()
            .uri("/tg/secret-tenant")
            .set_payload(b"nope".to_vec())
            .to_request(),
    )
    .await;
    let resp = test::call_service(&svc, TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(test::read_body(resp).await, "ok");
    let resp = test::call_service(&svc, TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(
        text.contains(r#"router_http_requests_total{route="/tg/{id}",status="400"} 1"#),
        "{text}"
    );
    assert!(text.contains("router_inbox_depth 0"));
    assert!(!text.contains("secret-tenant"), "no tenant ids in metrics");

    state.draining.store(true, Ordering::Relaxed);
    let resp = test::call_service(&svc, TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    state.dispatcher.shutdown().await;
}

/// Issue 8: a delivery moves the delivery, wake, cache, forward-latency and Telegram series.
#[actix_web::test]
async fn metrics_move_after_a_delivery() {
    let mut s = setup();
    s.agent("bob");
    let (svc, state) = service!(s, s.config());
    let resp = test::call_service(
        &svc,
        TestRequest::post()
            .uri("/tg/bob")
            .set_payload(update(9, 78, "hi"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    eventually(
        Duration::from_secs(10),
        "the delivery to be counted",
        || {
            state
                .metrics
                .deliveries
                .get(router::metrics::Delivery::delivered)
                == 1
        },
    )
    .await;
    let resp = test::call_service(&svc, TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    for line in [
        r#"router_deliveries_total{result="delivered"} 1"#,
        "router_forward_duration_seconds_count 1",
        r#"router_wakes_total{result="ok"} 1"#,
        r#"router_endpoint_cache_lookups_total{result="miss"} 1"#,
        r#"router_telegram_calls_total{method="sendMessage",result="ok"} 2"#,
        r#"router_http_requests_total{route="/tg/{id}",status="200"} 1"#,
        "router_inbox_depth 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("bob"), "no tenant ids in metrics");
    state.dispatcher.shutdown().await;
}

/// The router started in-process on a listener the test bound (port 0) and stopped by a future,
/// no binary and no signal: a `/chat` in flight when shutdown starts is still answered (drained),
/// `serve` returns, and the port is closed.
#[actix_web::test]
async fn serve_on_a_bound_listener_drains_a_request_in_flight_and_stops_on_the_shutdown_future() {
    let mut s = setup();
    let agent = s.agent("bob");
    agent.delay_ms.store(700, Ordering::Relaxed);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(
        s.config(),
        "test".into(),
        s.inbox.clone(),
        Arc::new(MemoryCache::new()),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let chat = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{addr}/chat/bob"))
            .json(&json!({"message": "hi"}))
            .send()
            .await
    });
    eventually(Duration::from_secs(10), "the agent has the request", || {
        agent.call_count() == 1
    })
    .await;
    stop.send(()).unwrap();
    let resp = chat
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["response"], "echo: hi");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after the shutdown future")
        .unwrap()
        .expect("serve ends cleanly");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens once serve returned"
    );
}
