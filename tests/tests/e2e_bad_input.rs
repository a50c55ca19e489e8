//! Bad input gets a clear 4xx, writes nothing, and no bot token ever leaves in a response or a log.

use std::sync::Mutex;
use std::time::Duration;

use platform_tests::platform::{bot_token, text_update, Platform};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Sends requests and keeps every response body, to check none of them carries a token.
struct Probe<'a> {
    p: &'a Platform,
    bodies: Mutex<Vec<String>>,
}

impl Probe<'_> {
    async fn send(&self, what: &str, req: RequestBuilder) -> (StatusCode, String) {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        self.bodies.lock().unwrap().push(body.clone());
        (status, body)
    }

    /// Asserts the status and, for orchestrator errors, the `{"error": "..."}` shape.
    async fn expect(&self, what: &str, req: RequestBuilder, want: StatusCode) -> String {
        let (status, body) = self.send(what, req).await;
        assert_eq!(status, want, "{what}: body {body}");
        body
    }

    async fn expect_error(&self, what: &str, req: RequestBuilder, want: StatusCode) {
        let body = self.expect(what, req, want).await;
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{what}: error body is not JSON: {body:?}"));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(!msg.is_empty(), "{what}: no error message in {body}");
    }

    fn orch(&self, method: Method, path: &str) -> RequestBuilder {
        self.p.request(method, &self.p.orch_url(path))
    }

    fn create_raw(&self, body: &str) -> RequestBuilder {
        self.orch(Method::POST, "/tenants")
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    }

    fn tg(&self, path_id: &str, secret: Option<&str>, body: String) -> RequestBuilder {
        let mut req = self
            .p
            .anonymous(Method::POST, &self.p.router_url(&format!("/tg/{path_id}")))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        req
    }

    async fn tenant_ids(&self) -> Vec<String> {
        let body = self
            .expect("list", self.orch(Method::GET, "/tenants"), StatusCode::OK)
            .await;
        let list: Vec<Value> = serde_json::from_str(&body).expect("list JSON");
        let mut ids: Vec<String> = list
            .iter()
            .map(|v| v["tenant_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// Issue 3, test 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_with_no_partial_write_and_no_token_leak() {
    let p = Platform::start().await;
    let token = bot_token();
    let probe = Probe {
        p: &p,
        bodies: Mutex::new(Vec::new()),
    };
    p.create_tenant("good", &token, None).await;
    let good_before = p.get_tenant("good").await.unwrap();
    let webhooks_before = p.telegram.webhooks().len();

    // Invalid ids on create, get, wake and the Telegram webhook.
    let long = "a".repeat(80);
    for bad in ["Bad_ID", long.as_str(), "../x", "", "-x"] {
        let body = json!({"tenant_id": bad, "bot_token": token}).to_string();
        probe
            .expect_error(
                &format!("create {bad:?}"),
                probe.create_raw(&body),
                StatusCode::BAD_REQUEST,
            )
            .await;
    }
    for bad in ["Bad_ID", long.as_str(), "..%2Fx", "-x"] {
        probe
            .expect_error(
                &format!("get {bad:?}"),
                probe.orch(Method::GET, &format!("/tenants/{bad}")),
                StatusCode::BAD_REQUEST,
            )
            .await;
        probe
            .expect_error(
                &format!("wake {bad:?}"),
                probe.orch(Method::POST, &format!("/wake/{bad}")),
                StatusCode::BAD_REQUEST,
            )
            .await;
        probe
            .expect(
                &format!("tg {bad:?}"),
                probe.tg(bad, Some("0"), text_update(1, 1, "x").to_string()),
                StatusCode::BAD_REQUEST,
            )
            .await;
    }
    // An empty id does not name a tenant: no route may treat it as one.
    for (method, path) in [(Method::GET, "/tenants/"), (Method::POST, "/wake/")] {
        let (status, body) = probe
            .send(
                &format!("{method} {path}"),
                probe.orch(method.clone(), path),
            )
            .await;
        assert!(
            status.is_client_error(),
            "{method} {path} with an empty id: {status} {body}"
        );
    }
    let (status, _) = probe
        .send(
            "tg empty id",
            probe.tg("", None, text_update(1, 1, "x").to_string()),
        )
        .await;
    assert!(status.is_client_error(), "/tg/ with an empty id: {status}");

    // Malformed JSON, wrong types, out-of-range timeouts, unknown and missing fields.
    let bad_bodies = [
        (
            "malformed JSON",
            r#"{"tenant_id": "mj", "bot_token": "#.to_owned(),
        ),
        ("not an object", r#"["mj"]"#.to_owned()),
        (
            "token as number",
            json!({"tenant_id": "wt1", "bot_token": 12345}).to_string(),
        ),
        (
            "id as number",
            json!({"tenant_id": 5, "bot_token": token}).to_string(),
        ),
        (
            "timeout as string",
            json!({"tenant_id": "wt2", "bot_token": token, "idle_timeout_s": "300"}).to_string(),
        ),
        (
            "zero timeout",
            json!({"tenant_id": "zt", "bot_token": token, "idle_timeout_s": 0}).to_string(),
        ),
        (
            "negative timeout",
            json!({"tenant_id": "nt", "bot_token": token, "idle_timeout_s": -5}).to_string(),
        ),
        (
            "timeout below 10",
            json!({"tenant_id": "st", "bot_token": token, "idle_timeout_s": 9}).to_string(),
        ),
        (
            "timeout over 30 days",
            json!({"tenant_id": "lt", "bot_token": token, "idle_timeout_s": 2_592_001}).to_string(),
        ),
        (
            "unknown field",
            json!({"tenant_id": "uf", "bot_token": token, "extra": true}).to_string(),
        ),
        ("missing bot_token", json!({"tenant_id": "mb"}).to_string()),
        (
            "empty bot_token",
            json!({"tenant_id": "eb", "bot_token": ""}).to_string(),
        ),
    ];
    for (what, body) in &bad_bodies {
        probe
            .expect_error(what, probe.create_raw(body), StatusCode::BAD_REQUEST)
            .await;
    }
    let big = json!({"tenant_id": "big", "bot_token": "x".repeat(70 * 1024)}).to_string();
    probe
        .expect(
            "create body over 64 KiB",
            probe.create_raw(&big),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
    assert_eq!(
        probe.tenant_ids().await,
        ["good"],
        "no rejected create left a tenant behind"
    );

    // Updates of an existing tenant: rejected ones change nothing.
    for (what, body) in [
        (
            "patch zero timeout",
            json!({"idle_timeout_s": 0}).to_string(),
        ),
        ("patch unknown field", json!({"owner": "x"}).to_string()),
        ("patch wrong type", json!({"bot_token": 1}).to_string()),
        ("patch malformed", "{".to_owned()),
    ] {
        let req = probe
            .orch(Method::PATCH, "/tenants/good")
            .header("Content-Type", "application/json")
            .body(body);
        probe.expect_error(what, req, StatusCode::BAD_REQUEST).await;
    }
    let req = probe
        .orch(Method::PATCH, "/tenants/ghost")
        .json(&json!({"idle_timeout_s": 60}));
    probe
        .expect_error("patch unknown tenant", req, StatusCode::NOT_FOUND)
        .await;
    let good_after = p.get_tenant("good").await.unwrap();
    assert_eq!(good_after, good_before, "rejected patches changed nothing");
    assert_eq!(p.telegram.webhooks().len(), webhooks_before);

    // Unknown tenant on wake: 404, and it is not created.
    probe
        .expect_error(
            "wake unknown",
            probe.orch(Method::POST, "/wake/ghost"),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(
        p.get_tenant("ghost").await.is_none(),
        "wake never auto-creates"
    );

    // API token: missing or wrong → 401 on every API route; health stays open.
    let orch = |m: Method, path: &str| p.anonymous(m, &p.orch_url(path));
    let wrong = |m: Method, url: String| p.anonymous(m, &url).bearer_auth("wrong-token");
    let create_body = json!({"tenant_id": "sneaky", "bot_token": token});
    for (what, req) in [
        ("list, no token", orch(Method::GET, "/tenants")),
        ("get, no token", orch(Method::GET, "/tenants/good")),
        (
            "bot_token, no token",
            orch(Method::GET, "/tenants/good/bot_token"),
        ),
        (
            "create, no token",
            orch(Method::POST, "/tenants").json(&create_body),
        ),
        (
            "create, wrong token",
            wrong(Method::POST, p.orch_url("/tenants")).json(&create_body),
        ),
        ("wake, no token", orch(Method::POST, "/wake/good")),
        ("delete, no token", orch(Method::DELETE, "/tenants/good")),
        (
            "chat, no token",
            p.anonymous(Method::POST, &p.router_url("/chat/good"))
                .json(&json!({"message": "hi"})),
        ),
        (
            "admin webhook, wrong token",
            wrong(Method::POST, p.router_url("/admin/webhook/good")),
        ),
    ] {
        probe.expect(what, req, StatusCode::UNAUTHORIZED).await;
    }
    for url in [p.orch_url("/healthz"), p.router_url("/healthz")] {
        probe
            .expect(&url, p.anonymous(Method::GET, &url), StatusCode::OK)
            .await;
    }
    assert_eq!(probe.tenant_ids().await, ["good"]);
    assert_eq!(p.tenant_status("good").await, "idle", "nothing woke it");

    // The Telegram webhook: secret token, update shape, size.
    let secret = p.secret_for("good");
    let update = text_update(1, 5, "must not be delivered").to_string();
    probe
        .expect(
            "tg missing secret",
            probe.tg("good", None, update.clone()),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    probe
        .expect(
            "tg wrong secret",
            probe.tg("good", Some("0123abcd"), update.clone()),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    probe
        .expect(
            "tg another tenant's secret",
            probe.tg("good", Some(&p.secret_for("other")), update.clone()),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    let no_update_id = json!({"message": {"chat": {"id": 5}, "text": "x"}}).to_string();
    probe
        .expect(
            "tg without update_id",
            probe.tg("good", Some(&secret), no_update_id),
            StatusCode::BAD_REQUEST,
        )
        .await;
    probe
        .expect(
            "tg non-JSON",
            probe.tg("good", Some(&secret), "hello there".to_owned()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    let huge = text_update(2, 5, &"y".repeat(1024 * 1024 + 10)).to_string();
    probe
        .expect(
            "tg body over 1 MiB",
            probe.tg("good", Some(&secret), huge),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;

    // None of the rejected updates reached the agent: the first accepted one is its message #1.
    probe
        .expect(
            "tg valid",
            probe.tg("good", Some(&secret), text_update(3, 5, "real").to_string()),
            StatusCode::OK,
        )
        .await;
    p.telegram
        .wait_for("the reply to the valid update", T, |calls| {
            calls
                .iter()
                .any(|c| c.text().is_some_and(|t| t.starts_with("echo:")))
        })
        .await;
    let echoes: Vec<String> = p
        .telegram
        .messages_to(5)
        .into_iter()
        .filter(|m| m.starts_with("echo:"))
        .collect();
    assert_eq!(echoes, ["echo: real (#1)"]);

    // Public views and errors never carry the token; the logs neither.
    for url in [p.orch_url("/tenants"), p.orch_url("/tenants/good")] {
        probe.send(&url, p.request(Method::GET, &url)).await;
    }
    let bodies = probe.bodies.lock().unwrap();
    let leaks: Vec<&String> = bodies.iter().filter(|b| b.contains(&token)).collect();
    assert!(leaks.is_empty(), "bot token in a response: {leaks:?}");
    assert!(
        p.logs_containing(&token).is_empty(),
        "bot token in a log: {:?}",
        p.logs_containing(&token)
    );
}
