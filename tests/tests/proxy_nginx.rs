//! Behind an ordinary reverse proxy: two orchestrators behind a real nginx with its default upstream
//! settings (HTTP/1.0 to the upstream), the router and `ztm` calling through it. Every bodiless POST
//! and PUT the platform's clients send carries `Content-Length: 0`, so wakes and messages work.

use std::time::Duration;

use platform_tests::cluster::{Cluster, ClusterOpts};
use platform_tests::nginx::Nginx;
use platform_tests::platform::{bot_token, free_port, text_update};
use platform_tests::ztm::Ztm;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(60);

/// A POST with no body and no `Content-Length`, as hyper sends one, straight through nginx.
async fn raw_bodiless_post(nginx: &Nginx, path: &str, token: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", nginx.port()))
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: orchestrator\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines().next().unwrap_or_default().to_owned()
}

async fn ztm(nginx: &Nginx, token: &str, args: &[&str]) -> (i32, String) {
    let run = Ztm::new()
        .orchestrator(&nginx.url())
        .token(token)
        .timeout(T)
        .run(args)
        .await;
    (run.code, run.output())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_and_messages_work_through_nginx_with_default_upstream_settings() {
    let nginx_port = free_port();
    let cluster = Cluster::start(
        ClusterOpts {
            orchestrators: 2,
            routers: 1,
            ..ClusterOpts::default()
        }
        .router_env(
            "ORCHESTRATOR_ADDR",
            format!("http://127.0.0.1:{nginx_port}"),
        ),
    )
    .await;
    let ports: Vec<u16> = cluster.orchestrators.iter().map(|s| s.port).collect();
    let nginx = Nginx::start_on(nginx_port, &ports).await;
    let token = cluster.api_token.clone();

    // The proxy really is the troublesome kind: without a length, the service refuses the POST.
    let status = raw_bodiless_post(&nginx, "/wake/nobody", &token).await;
    assert!(
        status.contains(" 400 "),
        "a bodiless POST of unknown length: {status}"
    );

    let http = reqwest::Client::new();
    let mut tenants = Vec::new();
    for i in 0..2 {
        let id = format!("px-{i}");
        let resp = http
            .post(format!("{}/tenants", nginx.url()))
            .bearer_auth(&token)
            .json(&json!({"tenant_id": id, "bot_token": bot_token()}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "create {id}");
        tenants.push(id);
    }

    // ztm's bodiless POSTs through the proxy.
    let (code, out) = ztm(&nginx, &token, &["tenant", "wake", "px-0"]).await;
    assert_eq!(code, 0, "ztm tenant wake: {out}");
    let (code, out) = ztm(&nginx, &token, &["tenant", "sleep", "px-0"]).await;
    assert_eq!(code, 0, "ztm tenant sleep: {out}");

    // The router wakes each tenant through nginx and the agents answer.
    let router = cluster.routers[0].url();
    for (i, id) in tenants.iter().enumerate() {
        let chat = 500 + i as i64;
        let status = cluster
            .post_update(&router, id, &text_update(1, chat, "via proxy"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let msgs = cluster.telegram.wait_for_messages(chat, 2, T).await;
        assert!(
            msgs.iter().any(|m| m.starts_with("echo: via proxy")),
            "{id}: {msgs:?}"
        );
    }

    let access = nginx.access_log();
    let wakes = access
        .lines()
        .filter(|l| l.contains("\"POST /wake/px-") && l.contains("\" 200 "))
        .count();
    assert!(wakes >= 3, "wakes went through nginx:\n{access}");
    let refused: Vec<&str> = access
        .lines()
        .filter(|l| l.contains("\" 400 ") && !l.contains("/wake/nobody"))
        .collect();
    assert!(
        refused.is_empty(),
        "no request of the platform refused: {refused:#?}"
    );
}
