//! `POST /tenants` writes the record before it registers the webhook: an update Telegram delivers
//! the moment the webhook is set is answered; when Telegram refuses the webhook nothing is left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_tests::platform::{bot_token, text_update, Platform};
use reqwest::{Method, StatusCode};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_delivered_while_the_webhook_is_set_is_answered() {
    let p = Platform::start().await;
    // Like Telegram, deliver a pending update to the new URL before answering setWebhook, and look
    // at what the orchestrator says about the tenant at that moment.
    let seen: Arc<Mutex<Vec<(u16, u16)>>> = Arc::default();
    let (orch, router, token, http) = (
        p.orch_url(""),
        p.router_url(""),
        p.api_token.clone().unwrap(),
        reqwest::Client::new(),
    );
    let secret = p.secret_for("early");
    let log = seen.clone();
    p.telegram.before_answering(
        "setWebhook",
        Arc::new(move |_call| {
            let (orch, router, token, http, secret, log) = (
                orch.clone(),
                router.clone(),
                token.clone(),
                http.clone(),
                secret.clone(),
                log.clone(),
            );
            Box::pin(async move {
                let record = http
                    .get(format!("{orch}/tenants/early"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                let delivered = http
                    .post(format!("{router}/tg/early"))
                    .header("X-Telegram-Bot-Api-Secret-Token", &secret)
                    .json(&text_update(1, 42, "first"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                log.lock().unwrap().push((record, delivered));
            }) as futures::future::BoxFuture<'static, ()>
        }),
    );

    p.create_tenant("early", &bot_token(), None).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [(200, 200)],
        "the record existed when Telegram was told about the webhook"
    );
    let msgs = p.telegram.wait_for_messages(42, 2, T).await;
    assert!(msgs.iter().any(|m| m == "echo: first (#1)"), "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_webhook_leaves_no_tenant_behind() {
    let p = Platform::start().await;
    let token = bot_token();
    p.telegram.fail_next("setWebhook", 1);
    let resp = p
        .request(Method::POST, &p.orch_url("/tenants"))
        .json(&json!({"tenant_id": "refused", "bot_token": token}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("setWebhook"), "{body}");
    assert!(!body.contains(&token), "no token in the answer");
    assert_eq!(p.get_tenant("refused").await, None, "no record left");
    let list: Vec<serde_json::Value> = p
        .request(Method::GET, &p.orch_url("/tenants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty(), "{list:?}");
    // Nothing partial: the same create succeeds once Telegram accepts it.
    p.create_tenant("refused", &token, None).await;
    assert_eq!(p.telegram.webhooks().len(), 1);
}
