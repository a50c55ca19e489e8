//! `ztm` over HTTP against the running services: every command, its output formats and exit codes.

use std::time::Duration;

use platform_tests::platform::{bot_token, wait_until, Platform};
use platform_tests::ztm::ZtmRun;
use reqwest::Method;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

type Run = ZtmRun;

/// Runs and asserts exit 0.
async fn ok(p: &Platform, args: &[&str]) -> Run {
    let run = p.ztm(args).await;
    assert_eq!(
        run.code, 0,
        "ztm {args:?}: stdout {:?} stderr {:?}",
        run.stdout, run.stderr
    );
    run
}

/// Runs and asserts the exit code and a one-line error on stderr.
async fn fails(p: &Platform, args: &[&str], code: i32) -> Run {
    let run = p.ztm(args).await;
    assert_eq!(
        run.code, code,
        "ztm {args:?}: stdout {:?} stderr {:?}",
        run.stdout, run.stderr
    );
    assert!(
        !run.stderr.trim().is_empty(),
        "ztm {args:?} says why on stderr"
    );
    run
}

async fn bot_token_of(p: &Platform, id: &str) -> String {
    let v: Value = p
        .request(
            Method::GET,
            &p.orch_url(&format!("/tenants/{id}/bot_token")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["bot_token"].as_str().unwrap().to_owned()
}

/// Issue 3, test 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztm_drives_every_command_over_http() {
    let p = Platform::start().await;
    let (token, token2, token3) = (bot_token(), bot_token(), bot_token());

    // version, status, completion
    let v = ok(&p, &["version"]).await;
    assert!(v.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", v.stdout);
    let v = ok(&p, &["version", "-o", "json"]).await.json();
    for service in ["orchestrator", "router"] {
        assert_eq!(v[service]["version"], env!("CARGO_PKG_VERSION"), "{v}");
    }
    let s = ok(&p, &["status"]).await;
    assert!(!s.stdout.trim().is_empty());
    let s = ok(&p, &["status", "-o", "json"]).await;
    s.json();
    let c = ok(&p, &["completion", "bash"]).await;
    assert!(c.stdout.contains("ztm"), "a bash completion script");

    // create: JSON output, token from the command line and from stdin
    let created = ok(
        &p,
        &[
            "tenant",
            "create",
            "zt1",
            &token,
            "--idle-timeout",
            "600",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(created["tenant_id"], "zt1");
    assert_eq!(created["idle_timeout_s"], 600);
    assert_eq!(created["bot_token_set"], true);
    let from_stdin = p
        .ztm_cmd()
        .stdin(&format!("{token2}\n"))
        .run(&["tenant", "create", "zt2", "-"])
        .await;
    assert_eq!(
        from_stdin.code, 0,
        "create from stdin: {}",
        from_stdin.stderr
    );
    assert!(!from_stdin.stdout.contains(&token2));
    assert_eq!(
        bot_token_of(&p, "zt2").await,
        token2,
        "token read from stdin"
    );
    let dup = fails(&p, &["tenant", "create", "zt1", &token], 1).await;
    assert_eq!(dup.stderr.trim().lines().count(), 1, "{}", dup.stderr);

    // list and get in all three formats
    let list = ok(&p, &["tenant", "list", "-o", "json"]).await.json();
    let mut ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["zt1", "zt2"]);
    let idle = ok(&p, &["tenant", "list", "--status", "idle", "-o", "json"])
        .await
        .json();
    assert_eq!(idle.as_array().unwrap().len(), 2);
    let running = ok(&p, &["tenant", "list", "--status", "running", "-o", "json"])
        .await
        .json();
    assert_eq!(running.as_array().unwrap().len(), 0);
    let table = ok(&p, &["tenant", "list"]).await.stdout;
    assert!(
        table.contains("zt1") && table.contains("zt2") && table.contains("idle"),
        "{table}"
    );
    assert!(
        table.lines().count() >= 3,
        "a header and one row per tenant: {table}"
    );
    let yaml = ok(&p, &["tenant", "get", "zt1", "-o", "yaml"]).await.stdout;
    let y: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(y["tenant_id"], "zt1");
    assert_eq!(y["idle_timeout_s"], 600);
    let got = ok(&p, &["tenant", "get", "zt1", "--output", "json"])
        .await
        .json();
    assert_eq!(got["status"], "idle");
    let table = ok(&p, &["tenant", "get", "zt1"]).await.stdout;
    assert!(table.contains("zt1") && table.contains("600"), "{table}");
    for out in [&yaml, &table] {
        assert!(!out.contains(&token), "ztm prints no token");
    }

    // update: timeout and token (a new token re-registers the webhook)
    let updated = ok(
        &p,
        &[
            "tenant",
            "update",
            "zt1",
            "--idle-timeout",
            "900",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(updated["idle_timeout_s"], 900);
    ok(&p, &["tenant", "update", "zt1", "--bot-token", &token3]).await;
    assert_eq!(bot_token_of(&p, "zt1").await, token3);
    assert!(
        p.telegram.webhooks().iter().any(|w| w.token == token3),
        "webhook re-registered with the new token"
    );
    fails(&p, &["tenant", "update", "zt1", "--idle-timeout", "0"], 1).await;

    // wake, chat, sleep
    let woke = ok(&p, &["tenant", "wake", "zt1", "-o", "json"])
        .await
        .json();
    assert!(
        woke["endpoint"].as_str().is_some_and(|e| e.contains(':')),
        "{woke}"
    );
    assert_eq!(p.tenant_status("zt1").await, "running");
    let chat = ok(&p, &["chat", "zt1", "hello"]).await;
    assert!(chat.stdout.contains("echo: hello (#1)"), "{}", chat.stdout);
    let chat = ok(&p, &["chat", "zt1", "again", "-o", "json"]).await.json();
    assert_eq!(chat["response"], "echo: again (#2)");
    ok(&p, &["tenant", "sleep", "zt1"]).await;
    assert_eq!(p.tenant_status("zt1").await, "idle");
    wait_until("zt1's agent to stop", T, || async {
        p.agent_pids("zt1").is_empty()
    })
    .await;
    let chat = ok(&p, &["chat", "zt1", "awake?"]).await;
    assert!(
        chat.stdout.contains("echo: awake? (#3)"),
        "memory kept: {}",
        chat.stdout
    );

    // webhook register / delete
    let hooks_before = p.telegram.webhooks().len();
    let reg = ok(&p, &["webhook", "register", "zt2", "-o", "json"])
        .await
        .json();
    assert_eq!(reg["ok"], true);
    assert_eq!(reg["url"], p.router_url("/tg/zt2"));
    let hooks = p.telegram.webhooks();
    assert_eq!(hooks.len(), hooks_before + 1);
    let last = hooks.last().unwrap();
    assert_eq!(
        (last.token.as_str(), last.url.as_str()),
        (token2.as_str(), p.router_url("/tg/zt2").as_str())
    );
    assert_eq!(
        last.secret_token.as_deref(),
        Some(p.secret_for("zt2").as_str())
    );
    ok(&p, &["webhook", "delete", "zt2"]).await;
    assert!(p
        .telegram
        .calls_to("deleteWebhook")
        .iter()
        .any(|c| c.token == token2));

    // failed operations: exit 1, one line naming what failed
    for args in [
        &["tenant", "get", "nope"][..],
        &["tenant", "wake", "nope"],
        &["tenant", "sleep", "nope"],
        &["tenant", "update", "nope", "--idle-timeout", "60"],
        &["chat", "nope", "hi"],
    ] {
        let run = fails(&p, args, 1).await;
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
        if args[0] == "tenant" {
            assert!(
                run.stderr.contains(r#"tenant "nope" not found"#),
                "{args:?}: {}",
                run.stderr
            );
        }
    }
    fails(&p, &["tenant", "create", "Bad_ID", &token], 1).await;
    let denied = p.ztm_cmd().token("wrong").run(&["tenant", "list"]).await;
    assert_eq!(denied.code, 1, "wrong API token: {}", denied.stderr);
    let down = p
        .ztm_cmd()
        .orchestrator("http://127.0.0.1:1")
        .run(&["tenant", "list"])
        .await;
    assert_eq!(down.code, 1, "unreachable orchestrator: {}", down.stderr);
    assert!(!down.stderr.trim().is_empty());

    // usage errors: exit 2
    for args in [
        &["bogus"][..],
        &["tenant"],
        &["tenant", "create"],
        &["tenant", "get"],
        &["-o", "xml", "tenant", "list"],
        &["tenant", "create", "x", "t", "--idle-timeout", "soon"],
        &["completion", "no-such-shell"],
    ] {
        fails(&p, args, 2).await;
    }

    // delete: idempotent, with or without purge
    ok(&p, &["tenant", "delete", "zt1"]).await;
    assert!(p.get_tenant("zt1").await.is_none());
    ok(&p, &["tenant", "delete", "zt1"]).await;
    ok(&p, &["tenant", "delete", "zt2", "--purge-state"]).await;
    let list = ok(&p, &["tenant", "list", "-o", "json"]).await.json();
    assert_eq!(list, serde_json::json!([]));
    wait_until("no agent left", T, || async {
        p.agent_pids("zt1").is_empty()
    })
    .await;
    assert!(p.logs_containing(&token).is_empty() && p.logs_containing(&token3).is_empty());
}
