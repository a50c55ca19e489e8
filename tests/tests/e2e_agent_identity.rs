//! The per-tenant agent credential and configuration through the real binaries (local runtime):
//! an address that now serves another tenant's agent never answers this tenant's users; the
//! credential stays out of logs, views and errors; the configuration reaches the agent at its next
//! start; `ztm tenant config` round-trips.

use std::time::Duration;

use chrono::Utc;
use common::registry::sqlite::SqliteRegistry;
use common::registry::{Registry, StatusUpdate};
use common::{TenantId, TenantStatus};
use platform_tests::platform::{bot_token, wait_until, Platform};
use platform_tests::ztm::ZtmRun;
use reqwest::Method;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const STARTING: &str = "⏳ Starting up...";

async fn agent_token(p: &Platform, id: &str) -> String {
    let v: Value = p
        .request(
            Method::GET,
            &p.orch_url(&format!("/tenants/{id}/agent_token")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["agent_token"].as_str().unwrap().to_owned()
}

fn registry(p: &Platform) -> SqliteRegistry {
    SqliteRegistry::open(&p.root().join("orchestrator").join("registry.db")).unwrap()
}

/// Tenant A's record is pointed at tenant B's running agent (a pod IP reused by another tenant).
/// A's next update is never answered by B's agent: the wake's identity check refuses it and A's
/// own agent, restarted, answers with A's memory; B's agent saw nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_reused_by_another_tenants_agent_never_answers_this_tenant() {
    let p = Platform::start().await;
    let (ta, tb) = (bot_token(), bot_token());
    p.create_tenant("ida", &ta, None).await;
    p.create_tenant("idb", &tb, None).await;
    p.send_text("ida", 1, 1, "a1").await;
    p.send_text("idb", 1, 2, "b1").await;
    assert_eq!(
        p.telegram.wait_for_messages(1, 2, T).await,
        [STARTING, "echo: a1 (#1)"]
    );
    assert_eq!(
        p.telegram.wait_for_messages(2, 2, T).await,
        [STARTING, "echo: b1 (#1)"]
    );

    // A sleeps (memory saved); then its record says running at B's agent's address.
    p.sleep_tenant("ida").await;
    p.wait_for_agents("ida", 0, T).await;
    let (_, b_port) = p.agent_pid_file("idb").expect("B's agent");
    let reg = registry(&p);
    let a = TenantId::parse("ida").unwrap();
    reg.set_status(&a, TenantStatus::Idle, &StatusUpdate::provisioning())
        .await
        .unwrap();
    let mut stale = StatusUpdate::running(a.pod_name(), "127.0.0.1".into(), Some(b_port));
    stale.touch = Some(Utc::now());
    reg.set_status(&a, TenantStatus::Provisioning, &stale)
        .await
        .unwrap();

    p.send_text("ida", 2, 1, "a2").await;
    p.telegram
        .wait_for("A's second answer", T, |_| {
            p.telegram
                .messages_to(1)
                .iter()
                .any(|m| m.starts_with("echo: a2"))
        })
        .await;
    // The record said `running`, so the router announces the restart only if it takes a while.
    let answers: Vec<String> = p.telegram.messages_to(1)[2..]
        .iter()
        .filter(|m| m.as_str() != STARTING)
        .cloned()
        .collect();
    assert_eq!(
        answers,
        ["echo: a2 (#2)"],
        "A's own agent, with A's memory, answered"
    );
    assert_eq!(p.agent_pids("ida").len(), 1, "A's agent runs again");
    // B's agent answered nothing for A: its own counter goes on at #2.
    p.send_text("idb", 2, 2, "b2").await;
    let msgs = p.telegram.wait_for_messages(2, 3, T).await;
    assert_eq!(msgs[2], "echo: b2 (#2)");
    assert!(
        p.telegram
            .calls_to("sendMessage")
            .iter()
            .filter(|c| c.body["chat_id"] == 1)
            .all(|c| c.token == ta),
        "every message to A's chat went out with A's bot"
    );
    let rec = reg.get(&a).await.unwrap().unwrap();
    assert_ne!(
        rec.agent_port,
        Some(b_port),
        "A's record points at A's agent"
    );
}

/// The credential is generated at create, handed only to the router's internal route, and never
/// written to a log, a view or an error; the agent refuses requests without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_never_leaves_the_internal_route() {
    let p = Platform::start().await;
    let token = bot_token();
    p.create_tenant("idc", &token, None).await;
    p.send_text("idc", 1, 5, "hi").await;
    p.telegram.wait_for_messages(5, 2, T).await;
    let credential = agent_token(&p, "idc").await;
    assert_eq!(credential.len(), 64);

    let view = p.get_tenant("idc").await.unwrap();
    assert!(!view.to_string().contains(&credential), "{view}");
    let list = p.get_text(&p.orch_url("/tenants")).await;
    assert!(!list.contains(&credential));
    let bad = p
        .request(Method::PUT, &p.orch_url("/tenants/idc/config"))
        .json(&json!({"files": {"EVIL.md": credential}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(!bad.text().await.unwrap().contains(&credential));

    // The agent answers only with it.
    let (_, port) = p.agent_pid_file("idc").unwrap();
    let http = reqwest::Client::new();
    let send = |auth: Option<String>| {
        let mut r = http
            .post(format!("http://127.0.0.1:{port}/webhook"))
            .json(&json!({"message": "direct"}));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        r.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401);
    assert_eq!(send(Some("x".repeat(64))).await.unwrap().status(), 401);
    assert_eq!(send(Some(credential.clone())).await.unwrap().status(), 200);
    let probe = http
        .get(format!("http://127.0.0.1:{port}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 401);

    p.sleep_tenant("idc").await;
    p.wait_for_agents("idc", 0, T).await;
    assert!(
        p.logs_containing(&credential).is_empty(),
        "credential in a log: {:?}",
        p.logs_containing(&credential)
    );
    assert!(p.logs_containing(&token).is_empty(), "bot token in a log");
}

/// `PUT /tenants/{id}/config` is in force from the agent's next start: the runtime writes
/// `tenant.json` (platform defaults applied) and the agent reports the persona files it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_reaches_the_agent_at_its_next_start() {
    let p = Platform::start_with(
        platform_tests::platform::Opts::default()
            .orchestrator_env("LLM_MODEL", "platform-model")
            .orchestrator_env("LLM_API_URL", "http://127.0.0.1:9/v1"),
    )
    .await;
    p.create_tenant("idd", &bot_token(), None).await;
    let put = |body: Value| {
        p.request(Method::PUT, &p.orch_url("/tenants/idd/config"))
            .json(&body)
            .send()
    };
    let r = put(json!({"files": {"SOUL.md": "You are terse."}, "temperature": 0.1}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    p.send_text("idd", 1, 9, "hi").await;
    p.telegram.wait_for_messages(9, 2, T).await;
    let file = p.root().join("orchestrator/agents/idd/config/tenant.json");
    let rendered: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(rendered["tenant_id"], "idd");
    assert_eq!(rendered["files"]["SOUL.md"], "You are terse.");
    assert_eq!(rendered["temperature"], 0.1);
    assert_eq!(rendered["model"], "platform-model");
    assert_eq!(rendered["provider"], "llamacpp");
    assert_eq!(rendered["api_url"], "http://127.0.0.1:9/v1");
    // The agent's own output goes to its log file (`ztm tenant logs`).
    wait_until("the agent to log its persona files", T, || async {
        p.agent_log("idd").contains("persona_files=SOUL.md")
    })
    .await;
    assert!(
        !p.agent_log("idd").contains("You are terse.") && !p.logs().contains("You are terse."),
        "contents not logged"
    );

    // A change waits for the next start.
    let r = put(json!({"files": {"SOUL.md": "Be kind.", "IDENTITY.md": "Ada"}, "model": "m2"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let still: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        still["files"]["SOUL.md"], "You are terse.",
        "not while it runs"
    );
    p.sleep_tenant("idd").await;
    p.wait_for_agents("idd", 0, T).await;
    p.send_text("idd", 2, 9, "again").await;
    p.telegram.wait_for_messages(9, 4, T).await;
    let next: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(next["files"]["SOUL.md"], "Be kind.");
    assert_eq!(next["model"], "m2");
    wait_until("the agent to log its new persona files", T, || async {
        p.agent_log("idd")
            .contains("persona_files=IDENTITY.md,SOUL.md")
    })
    .await;
}

/// `ztm` against the platform with `env` added (the shared runner of `platform_tests::ztm`).
async fn ztm(p: &Platform, args: &[&str], env: &[(&str, &str)]) -> ZtmRun {
    p.ztm_cmd().envs(env).run(args).await
}

/// `ztm tenant config set` from files, a directory and flags, `get` in every format, `edit`
/// through $EDITOR; bad input is a one-line error with exit 1 (2 for usage) and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztm_tenant_config_set_get_and_edit() {
    let p = Platform::start().await;
    p.create_tenant("ide", &bot_token(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let soul = dir.path().join("soul.md");
    std::fs::write(&soul, "You are calm.").unwrap();
    let persona = dir.path().join("persona");
    std::fs::create_dir_all(persona.join("agents/coder")).unwrap();
    std::fs::write(persona.join("IDENTITY.md"), "Ada").unwrap();
    std::fs::write(persona.join("agents/coder/skill_rust.md"), "Rust").unwrap();

    let soul_arg = format!("SOUL.md={}", soul.display());
    let persona_arg = persona.display().to_string();
    let run = ztm(
        &p,
        &[
            "tenant",
            "config",
            "set",
            "ide",
            "--file",
            &soul_arg,
            "--dir",
            &persona_arg,
            "--model",
            "qwen",
            "--temperature",
            "0.4",
            "-o",
            "json",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = ztm(&p, &["tenant", "config", "get", "ide", "-o", "json"], &[]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    let v: Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(
        v,
        json!({"model": "qwen", "temperature": 0.4,
               "files": {"IDENTITY.md": "Ada", "SOUL.md": "You are calm."},
               "agents": {"coder": {"files": {"skill_rust.md": "Rust"}}}})
    );
    let yaml = ztm(&p, &["tenant", "config", "get", "ide"], &[]).await;
    assert!(yaml.stdout.contains("model: qwen"), "{}", yaml.stdout);
    // A second set keeps what it does not change.
    assert_eq!(
        ztm(
            &p,
            &["tenant", "config", "set", "ide", "--provider", "openai"],
            &[]
        )
        .await
        .code,
        0
    );
    let v: Value = serde_json::from_str(
        &ztm(&p, &["tenant", "config", "get", "ide", "-o", "json"], &[])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(
        (v["provider"].as_str(), v["model"].as_str()),
        (Some("openai"), Some("qwen"))
    );

    // Refused: server-side validation, local parsing, usage.
    let bad = ztm(
        &p,
        &["tenant", "config", "set", "ide", "--temperature", "5"],
        &[],
    )
    .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("temperature must be a number from 0 to 2"),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.trim().lines().count(), 1);
    let evil = format!("EVIL.md={}", soul.display());
    let bad = ztm(
        &p,
        &["tenant", "config", "set", "ide", "--file", &evil],
        &[],
    )
    .await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("not a persona file"), "{}", bad.stderr);
    let json_file = dir.path().join("c.json");
    std::fs::write(&json_file, r#"{"modle": "x"}"#).unwrap();
    let from = json_file.display().to_string();
    let bad = ztm(
        &p,
        &["tenant", "config", "set", "ide", "--from-json", &from],
        &[],
    )
    .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown field `modle`"),
        "{}",
        bad.stderr
    );
    let bad = ztm(
        &p,
        &["tenant", "config", "set", "ide", "--file", "SOUL.md"],
        &[],
    )
    .await;
    assert_eq!(bad.code, 2, "NAME=PATH is a usage error: {}", bad.stderr);
    let missing = ztm(&p, &["tenant", "config", "get", "nobody"], &[]).await;
    assert_eq!(missing.code, 1);
    let v: Value = serde_json::from_str(
        &ztm(&p, &["tenant", "config", "get", "ide", "-o", "json"], &[])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(v["model"], "qwen", "nothing refused was stored");

    // Edit: an "editor" that changes the model; one that writes junk stores nothing.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^model: qwen$/model: llama3/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let ed = editor.display().to_string();
    let run = ztm(
        &p,
        &["tenant", "config", "edit", "ide"],
        &[("EDITOR", &ed), ("VISUAL", "")],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let junk = dir.path().join("junk.sh");
    std::fs::write(&junk, "#!/bin/sh\necho 'temperature: hot' > \"$1\"\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&junk)
        .status()
        .unwrap();
    let jk = junk.display().to_string();
    let run = ztm(
        &p,
        &["tenant", "config", "edit", "ide"],
        &[("EDITOR", &jk), ("VISUAL", "")],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let v: Value = serde_json::from_str(
        &ztm(&p, &["tenant", "config", "get", "ide", "-o", "json"], &[])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(v["model"], "llama3");
    assert_eq!(v["files"]["SOUL.md"], "You are calm.");
}
