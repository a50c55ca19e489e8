//! Cut-over drill (issue 19): state written the way the Go platform writes it — Go registry items in
//! DynamoDB (moto), a bare-IP endpoint cache value and a `"1"` wake lock in Redis, a Go pod's plain
//! `brain.db`, Go-shaped cluster objects — and the services swapped in the order of
//! docs/migration.md: the router first (against a stand-in that answers as the Go orchestrator
//! does), then the orchestrator, then the webhook secret. Every acknowledged update is answered
//! exactly once, every Go tenant keeps its memory, and `ztm migrate check` names the Go state's
//! breaks (exit 1), then passes (exit 0) once they are fixed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use common::stub::Stub;
use platform_tests::backends::{aws_env, unique_name, Moto, Redis};
use platform_tests::platform::{bin_path, free_port, text_update, wait_until, Service};
use platform_tests::telegram::FakeTelegram;
use reqwest::StatusCode;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "drill-webhook-secret";

/// A tenant as the Go platform left it: its item and how many messages its `brain.db` holds.
struct GoTenant {
    id: &'static str,
    status: &'static str,
    idle_timeout_s: i64,
    history: usize,
    chat: i64,
}

const TENANTS: [GoTenant; 3] = [
    // Running on a Go pod, reached through a bare-IP cache value.
    GoTenant {
        id: "alice",
        status: "running",
        idle_timeout_s: 600,
        history: 2,
        chat: 1001,
    },
    // Asleep, its memory saved by a Go pod; a Go orchestrator holds its wake lock ("1").
    GoTenant {
        id: "bob",
        status: "idle",
        idle_timeout_s: 300,
        history: 1,
        chat: 1002,
    },
    // Created by the Go API without an idle timeout: 0, which meant five minutes.
    GoTenant {
        id: "carol",
        status: "idle",
        idle_timeout_s: 0,
        history: 0,
        chat: 1003,
    },
];

fn token(id: &str) -> String {
    format!("{}:drill-token-{id}", 100 + id.len())
}

/// A `brain.db` as the agent writes it, holding `n` earlier messages.
fn write_brain(path: &Path, n: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             idempotency_key TEXT UNIQUE,
             text TEXT NOT NULL,
             response TEXT NOT NULL,
             created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
         );",
    )
    .unwrap();
    for i in 1..=n {
        conn.execute(
            "INSERT INTO messages (idempotency_key, text, response) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                format!("go:{i}"),
                format!("go-era {i}"),
                format!("reply {i}")
            ],
        )
        .unwrap();
    }
}

/// The Go item of `t`, attribute for attribute as the Go registry's `attributevalue.MarshalMap` writes it.
fn go_item(t: &GoTenant, pod_ip: &str) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let mut item = HashMap::from([
        ("tenant_id".to_owned(), s(t.id)),
        ("status".to_owned(), s(t.status)),
        ("namespace".to_owned(), s("tenants")),
        ("s3_prefix".to_owned(), s(&format!("tenants/{}/", t.id))),
        ("bot_token".to_owned(), s(&token(t.id))),
        ("created_at".to_owned(), s("2026-01-05T10:00:00.123456789Z")),
        ("last_active_at".to_owned(), s("2026-01-05T10:04:59.5Z")),
        (
            "idle_timeout_s".to_owned(),
            AttributeValue::N(t.idle_timeout_s.to_string()),
        ),
    ]);
    if t.status == "running" {
        item.insert("pod_name".into(), s(&format!("zeroclaw-{}", t.id)));
        item.insert("pod_ip".into(), s(pod_ip));
    }
    item
}

/// The Go orchestrator's API as the new router and `ztm` meet it: PascalCase records,
/// `{"BotToken": ...}`, `{"pod_ip": ...}`, no agent-credential route.
fn go_orchestrator() -> Stub {
    async fn list() -> HttpResponse {
        let items: Vec<Value> = TENANTS
            .iter()
            .map(|t| {
                json!({"TenantID": t.id, "Status": t.status,
                       "PodName": if t.status == "running" { format!("zeroclaw-{}", t.id) } else { String::new() },
                       "PodIP": if t.status == "running" { "127.0.0.1" } else { "" },
                       "Namespace": "tenants", "S3Prefix": format!("tenants/{}/", t.id), "BotToken": "",
                       "CreatedAt": "2026-01-05T10:00:00.123456789Z",
                       "LastActiveAt": "2026-01-05T10:04:59.5Z", "IdleTimeoutS": t.idle_timeout_s})
            })
            .collect();
        HttpResponse::Ok().json(items)
    }
    async fn bot_token(id: web::Path<String>) -> HttpResponse {
        match TENANTS.iter().find(|t| t.id == id.as_str()) {
            Some(t) => HttpResponse::Ok().json(json!({ "BotToken": token(t.id) })),
            None => HttpResponse::NotFound().body("tenant not found\n"),
        }
    }
    async fn wake(id: web::Path<String>) -> HttpResponse {
        if id.as_str() == "alice" {
            HttpResponse::Ok().json(json!({ "pod_ip": "127.0.0.1" }))
        } else {
            HttpResponse::InternalServerError().body("drill: only alice runs on the Go platform\n")
        }
    }
    Stub::routes(|cfg| {
        cfg.route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        )
        .route("/tenants", web::get().to(list))
        .route("/tenants/{id}/bot_token", web::get().to(bot_token))
        .route("/wake/{id}", web::post().to(wake))
        .route(
            "/tenants/{id}/activity",
            web::put().to(|| async { HttpResponse::Ok().finish() }),
        )
        .default_service(web::to(|| async {
            HttpResponse::NotFound().body("404 page not found\n")
        }));
    })
}

/// A Go-era agent pod: the reference agent on `port`, no agent credential.
struct GoPod {
    child: Child,
    data_dir: PathBuf,
}

impl GoPod {
    async fn start(root: &Path, t: &GoTenant, port: u16) -> GoPod {
        let dir = root.join(format!("gopod-{}", t.id));
        // What the pod restored at its start: the brain.db the Go platform saved.
        write_brain(&dir.join("state/brain.db"), t.history);
        let child = Command::new(bin_path("tenant-agent"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TENANT_ID", t.id)
            .env("TELEGRAM_BOT_TOKEN", token(t.id))
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", port.to_string())
            .env("DATA_DIR", dir.join("data"))
            .env("STATE_DIR", dir.join("state"))
            // A Go-era agent checks no credential.
            .env("AGENT_REQUIRE_CREDENTIAL", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tenant-agent");
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/health");
        wait_until("the Go pod to answer", T, || {
            let r = http.get(&url).send();
            async move { r.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        GoPod {
            child,
            data_dir: dir.join("data"),
        }
    }

    /// SIGTERM, as `ztm tenant sleep` (or a node drain) stops it; then the Go pod's SIGTERM handler's
    /// work: a plain copy of its brain.db where the state store keeps it.
    fn stop_and_save(mut self, state_file: &Path) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
        std::fs::create_dir_all(state_file.parent().unwrap()).unwrap();
        let conn = rusqlite::Connection::open(self.data_dir.join("brain.db")).unwrap();
        conn.execute("VACUUM INTO ?1", [state_file.display().to_string()])
            .unwrap();
    }
}

impl Drop for GoPod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake `kubectl` that prints the cluster state of `dir` (`list.json`, `namespace.json`).
fn fake_kubectl(root: &Path) -> PathBuf {
    let bin = root.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("kubectl");
    std::fs::write(
        &script,
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = namespace ] && exec cat \"$FAKE_KUBE_DIR/namespace.json\"; done\nexec cat \"$FAKE_KUBE_DIR/list.json\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The cluster objects of a Go deployment (its 00-prerequisites and the objects it creates).
fn go_cluster() -> (Value, Value) {
    let list = json!({"kind": "List", "items": [
        {"kind": "PriorityClass", "metadata": {"name": "tenant-normal"}, "value": 1000},
        {"kind": "PriorityClass", "metadata": {"name": "tenant-low"}, "value": 100, "preemptionPolicy": "Never"},
        {"kind": "ClusterRole", "metadata": {"name": "orchestrator"}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get", "list", "watch", "create", "delete", "update", "patch"]},
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "create", "delete"]},
            {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "create", "delete"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update", "patch"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "orchestrator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "orchestrator"},
         "subjects": [{"kind": "ServiceAccount", "name": "orchestrator", "namespace": "tenants"}]},
        {"kind": "Deployment", "metadata": {"name": "redis", "namespace": "tenants"}},
        {"kind": "Deployment", "metadata": {"name": "warm-pool", "namespace": "tenants"},
         "spec": {"template": {"spec": {"priorityClassName": "tenant-low",
            "containers": [{"name": "zeroclaw", "image": "zeroclaw:latest"}]}}}},
        {"kind": "Service", "metadata": {"name": "router", "namespace": "tenants"},
         "spec": {"ports": [{"port": 80, "targetPort": 9090}]}},
        {"kind": "PersistentVolume", "metadata": {"name": "pv-tenant-alice"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                  "storageClassName": "s3-tenant-state", "persistentVolumeReclaimPolicy": "Retain",
                  "csi": {"driver": "s3.csi.aws.com", "volumeHandle": "tenant-alice",
                          "volumeAttributes": {"bucketName": "zeroclaw-tenant-state", "subPath": "tenants/alice"}}}}
    ]});
    (
        list,
        json!({"kind": "Namespace", "metadata": {"name": "tenants"}}),
    )
}

/// The same cluster after the guide's fixes (RBAC applied, Go PV replaced, warm pool recreated,
/// namespace labelled; the Go Redis kept for the swap).
fn fixed_cluster() -> (Value, Value) {
    let list = json!({"kind": "List", "items": [
        {"kind": "PriorityClass", "metadata": {"name": "tenant-normal"}, "value": 1000},
        {"kind": "PriorityClass", "metadata": {"name": "tenant-low"}, "value": 100},
        {"kind": "Role", "metadata": {"name": "orchestrator", "namespace": "tenants"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update", "patch", "delete"]}]},
        {"kind": "RoleBinding", "metadata": {"name": "orchestrator", "namespace": "tenants"},
         "roleRef": {"kind": "Role", "name": "orchestrator"},
         "subjects": [{"kind": "ServiceAccount", "name": "orchestrator", "namespace": "tenants"}]},
        {"kind": "Deployment", "metadata": {"name": "redis", "namespace": "tenants"}},
        {"kind": "PersistentVolume", "metadata": {"name": "pv-tenant-alice"},
         "spec": {"mountOptions": ["allow-delete", "allow-other", "uid=1000", "gid=1000", "prefix tenants/alice/"]}}
    ]});
    let ns = json!({"kind": "Namespace", "metadata": {"name": "tenants",
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    (list, ns)
}

struct Ztm {
    fakebin: PathBuf,
    kube_dir: PathBuf,
}

struct ZtmRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ztm {
    fn set_cluster(&self, (list, ns): (Value, Value)) {
        std::fs::create_dir_all(&self.kube_dir).unwrap();
        std::fs::write(self.kube_dir.join("list.json"), list.to_string()).unwrap();
        std::fs::write(self.kube_dir.join("namespace.json"), ns.to_string()).unwrap();
    }

    async fn run(&self, orch: &str, router: &str, args: &[&str]) -> ZtmRun {
        let path = format!(
            "{}:{}",
            self.fakebin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = tokio::process::Command::new(bin_path("ztm"))
            .args(args)
            .env("PATH", path)
            .env("FAKE_KUBE_DIR", &self.kube_dir)
            .env("ZTM_ORCHESTRATOR_URL", orch)
            .env("ZTM_ROUTER_URL", router)
            .env_remove("ZTM_API_TOKEN")
            .env("NO_COLOR", "1")
            .output()
            .await
            .expect("run ztm");
        ZtmRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `(area, item, blocks)` of every finding of a `migrate check -o json` run.
fn findings(run: &ZtmRun) -> Vec<(String, String, bool)> {
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("migrate check JSON: {e}\n{}\n{}", run.stdout, run.stderr));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["area"].as_str().unwrap().to_owned(),
                f["item"].as_str().unwrap().to_owned(),
                f["blocks"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// `(item, change, action, blocks)` of the webhook findings of a `migrate check -o json` run.
fn webhook_findings(run: &ZtmRun) -> Vec<(String, String, String, bool)> {
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("migrate check JSON: {e}\n{}\n{}", run.stdout, run.stderr));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["area"] == "webhook")
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("item"), s("change"), s("action"), f["blocks"] == true)
        })
        .collect()
}

/// No bot token, webhook secret or tenant secret token in what ztm printed.
fn assert_no_secrets(run: &ZtmRun) {
    for t in &TENANTS {
        let tid = common::TenantId::parse(t.id).unwrap();
        for secret in [token(t.id), common::webhook::secret_token(SECRET, &tid)] {
            assert!(
                !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
                "a secret of {} printed:\n{}\n{}",
                t.id,
                run.stdout,
                run.stderr
            );
        }
    }
    assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET));
}

async fn post_tg(
    http: &reqwest::Client,
    router: &str,
    id: &str,
    update: &Value,
    secret: bool,
) -> StatusCode {
    let mut req = http
        .post(format!("{router}/tg/{id}"))
        .header("Content-Type", "application/json")
        .body(update.to_string());
    if secret {
        let tid = common::TenantId::parse(id).unwrap();
        req = req.header(
            "X-Telegram-Bot-Api-Secret-Token",
            common::webhook::secret_token(SECRET, &tid),
        );
    }
    req.send().await.expect("POST /tg").status()
}

/// The replies to `text` (the agent answers `echo: <text> (#N)`): the N of each.
fn replies(tg: &FakeTelegram, chat: i64, text: &str) -> Vec<u64> {
    let prefix = format!("echo: {text} (#");
    tg.messages_to(chat)
        .iter()
        .filter_map(|m| m.strip_prefix(&prefix))
        .filter_map(|rest| rest.trim_end_matches(')').parse().ok())
        .collect()
}

async fn redis_get(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_go_deployment_swapped_per_the_guide_answers_every_update_once_and_keeps_every_memory() {
    let moto = Moto::start().await;
    let redis_server = Redis::start().await;
    let tg = FakeTelegram::start().await;
    let root = tempfile::Builder::new()
        .prefix("zt-cutover-")
        .tempdir()
        .unwrap();
    let root = root.path();
    let http = reqwest::Client::builder().timeout(T).build().unwrap();
    let mut rc = redis::Client::open(redis_server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // ── The Go platform's state ──────────────────────────────────────────────────────────────
    let table = unique_name("tenant-registry");
    let registry = moto.registry(&table).await;
    let go_port = free_port();
    for t in &TENANTS {
        registry
            .client()
            .put_item()
            .table_name(&table)
            .set_item(Some(go_item(t, "127.0.0.1")))
            .send()
            .await
            .expect("put Go item");
    }
    let orch_data = root.join("orchestrator");
    // bob slept on the Go platform: its pod saved a plain brain.db (`tenants/bob/brain.db`).
    write_brain(&orch_data.join("state/bob/brain.db"), TENANTS[1].history);
    // alice runs on a Go pod; the Go router cached its bare IP.
    let go_pod = GoPod::start(root, &TENANTS[0], go_port).await;
    let _: () = redis::cmd("SET")
        .arg("router:endpoint:alice")
        .arg("127.0.0.1")
        .arg("EX")
        .arg(300)
        .query_async(&mut rc)
        .await
        .unwrap();
    // A Go orchestrator is waking bob (lock value "1", released by a plain DEL in Go).
    let _: () = redis::cmd("SET")
        .arg("tenant:waking:bob")
        .arg("1")
        .arg("EX")
        .arg(120)
        .query_async(&mut rc)
        .await
        .unwrap();

    // The new orchestrator takes over this port at the swap.
    let go_orch = go_orchestrator();
    let orch_port = go_orch.port();
    let orch_url = go_orch.url();

    // The Go platform registered every bot's webhook at the public URL, without a secret token
    // (and without allowed_updates).
    let router_port = free_port();
    let router_url = format!("http://127.0.0.1:{router_port}");
    for t in &TENANTS {
        tg.point_webhook(&token(t.id), &format!("{router_url}/tg/{}", t.id));
    }

    // ── migrate check against the running Go deployment: exit 1, every break named ──────────
    let ztm = Ztm {
        fakebin: fake_kubectl(root),
        kube_dir: root.join("cluster"),
    };
    ztm.set_cluster(go_cluster());
    // `ztm migrate check` against Redis and the cluster the test last described.
    let migrate_check = async || {
        let redis = redis_server.addr();
        let args = ["migrate", "check", "--redis-addr", &redis, "-o", "json"];
        ztm.run(&orch_url, &router_url, &args).await
    };
    let check = migrate_check().await;
    assert_eq!(
        check.code, 1,
        "blocking items give exit 1: {}\n{}",
        check.stdout, check.stderr
    );
    assert!(
        check.stderr.contains("block the cut-over"),
        "{}",
        check.stderr
    );
    let found = findings(&check);
    for (area, item, blocks) in [
        ("registry", "api/responses", false),
        ("registry", "tenant/alice", false),
        ("registry", "tenant/carol", false),
        // The Go router has no webhook info route and the new one is not running yet.
        ("webhook", "router", true),
        ("redis", "router:endpoint:alice", false),
        ("redis", "tenant:waking:bob", true),
        ("kubernetes", "serviceaccount/orchestrator", true),
        ("kubernetes", "deployment/warm-pool", true),
        ("kubernetes", "persistentvolume/pv-tenant-alice", true),
        ("kubernetes", "deployment/redis", false),
        ("kubernetes", "clusterrole/orchestrator", false),
        ("kubernetes", "service/router", false),
    ] {
        assert!(
            found
                .iter()
                .any(|f| f.0 == area && f.1 == item && f.2 == blocks),
            "migrate check names {area} {item} (blocks: {blocks}): {found:#?}"
        );
    }
    assert!(
        !found.iter().any(|f| f.1.starts_with("priorityclass/")),
        "the manifests keep the Go PriorityClass values: {found:#?}"
    );
    let unreachable = webhook_findings(&check);
    assert!(
        unreachable.len() == 1 && unreachable[0].1.contains("could not check"),
        "an unreachable router is one blocking 'could not check': {unreachable:#?}"
    );
    assert_no_secrets(&check);

    // ── Step 2: the router swaps first, the orchestrator is still Go ────────────────────────
    let router_env = |optional: bool| {
        let mut env: Vec<(String, String)> = [
            ("PORT", router_port.to_string()),
            ("DATA_DIR", root.join("router").display().to_string()),
            ("REDIS_ADDR", redis_server.addr()),
            ("ORCHESTRATOR_ADDR", orch_url.clone()),
            ("PUBLIC_BASE_URL", router_url.clone()),
            ("TELEGRAM_API_URL", tg.url().to_owned()),
            ("WEBHOOK_SECRET", SECRET.to_owned()),
            ("AGENT_PORT", go_port.to_string()),
            ("INBOX_SCAN_INTERVAL_MS", "200".to_owned()),
            ("RETRY_BACKOFF_MS", "200".to_owned()),
            ("RETRY_BACKOFF_MAX_MS", "1000".to_owned()),
            ("WAKE_ATTEMPTS", "40".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
        if optional {
            env.push(("WEBHOOK_SECRET_OPTIONAL".into(), "true".into()));
        }
        env
    };
    let mut router = Service::new("router", root, router_env(true), router_port);
    router.start().await;

    // The new router reads each webhook off Telegram: the Go ones have no secret token.
    let check = ztm
        .run(
            &orch_url,
            &router_url,
            &["migrate", "check", "--no-kubernetes", "-o", "json"],
        )
        .await;
    let hooks = webhook_findings(&check);
    for t in &TENANTS {
        let item = format!("tenant/{}", t.id);
        assert!(
            hooks.iter().any(|(i, change, action, blocks)| *i == item
                && change.contains("without this platform's secret token")
                && change.contains("401 once WEBHOOK_SECRET is enforced")
                && action.contains("ztm webhook register --all")
                && !blocks),
            "the Go webhook of {} is named (todo during the optional window): {hooks:#?}",
            t.id
        );
        assert!(
            hooks
                .iter()
                .any(|(i, change, _, _)| *i == item && change.contains("update types")),
            "the Go registration's update types: {hooks:#?}"
        );
    }
    assert_no_secrets(&check);

    let mut sent: Vec<(usize, String)> = Vec::new();
    let mut next_id = 1i64;
    let mut send = |t: usize, text: &str, secret: bool| {
        let update = text_update(next_id, TENANTS[t].chat, text);
        next_id += 1;
        sent.push((t, text.to_owned()));
        let (http, router_url) = (http.clone(), router_url.clone());
        let id = TENANTS[t].id;
        async move {
            let status = post_tg(&http, &router_url, id, &update, secret).await;
            assert_eq!(status, StatusCode::OK, "POST /tg/{id} {update}");
        }
    };
    // Go-registered webhooks send no secret token: accepted during the window.
    for text in ["a1", "a2", "a3"] {
        send(0, text, false).await;
    }
    let alice = &TENANTS[0];
    tg.wait_for_messages(alice.chat, 3, T).await;
    assert_eq!(
        replies(&tg, alice.chat, "a3"),
        [alice.history as u64 + 3],
        "the Go pod answered"
    );
    router.wait_for_log("forwarded to pod", 3, T).await;
    // A wake through the Go orchestrator (`{"pod_ip"}`) caches the bare IP again, as a Go router reads it.
    let _: () = redis::cmd("DEL")
        .arg("router:endpoint:alice")
        .query_async(&mut rc)
        .await
        .unwrap();
    send(0, "a4", false).await;
    tg.wait_for("the reply to a4", T, |_| {
        !replies(&tg, alice.chat, "a4").is_empty()
    })
    .await;
    assert_eq!(replies(&tg, alice.chat, "a4"), [alice.history as u64 + 4]);
    assert_eq!(
        redis_get(&mut rc, "router:endpoint:alice").await.as_deref(),
        Some("127.0.0.1"),
        "an endpoint on AGENT_PORT is cached in the Go format"
    );

    // ── Step 3: the orchestrator swaps; Go pods are put to sleep; the cache is flushed ────────
    // The Go wake of bob ends; its "1" lock lives on for 3 s more and must be waited out, not broken.
    let _: () = redis::cmd("SET")
        .arg("tenant:waking:bob")
        .arg("1")
        .arg("PX")
        .arg(3000)
        .query_async(&mut rc)
        .await
        .unwrap();
    let lock_expires = Instant::now() + Duration::from_millis(3000);
    go_orch.shutdown().await;
    // Updates keep arriving while no orchestrator answers: they wait in the inbox.
    send(2, "c1", false).await;
    send(1, "b1", false).await;
    go_pod.stop_and_save(&orch_data.join("state/alice/brain.db"));
    send(0, "a5", false).await;
    let mut orch_env: Vec<(String, String)> = aws_env()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    orch_env.extend(
        [
            ("PORT", orch_port.to_string()),
            ("DATA_DIR", orch_data.display().to_string()),
            ("DYNAMODB_ENDPOINT", moto.endpoint()),
            ("DYNAMODB_TABLE", table.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("REDIS_ADDR", redis_server.addr()),
            ("RUNTIME", "local".to_owned()),
            ("LOCAL_MODE", "true".to_owned()),
            // The Go pods' port: what alice's Go item (a pod_ip, no port) means.
            ("AGENT_PORT", go_port.to_string()),
            ("ROUTER_PUBLIC_URL", router_url.clone()),
            ("TELEGRAM_API_URL", tg.url().to_owned()),
            ("WEBHOOK_SECRET", SECRET.to_owned()),
            ("IDLE_CHECK_INTERVAL_S", "1".to_owned()),
            ("RECONCILE_INTERVAL_S", "1".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut orchestrator = Service::new("orchestrator", root, orch_env, orch_port);
    orchestrator.start().await;
    // No Go pod is left: flush the endpoint cache (docs/migration.md step 3).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("router:endpoint:*")
        .query_async(&mut rc)
        .await
        .unwrap();
    for k in keys {
        let _: () = redis::cmd("DEL").arg(k).query_async(&mut rc).await.unwrap();
    }
    send(0, "a6", false).await;

    // Every Go tenant keeps its memory: the counts go on from the Go platform's brain.db.
    tg.wait_for("the replies after the swap", T, |_| {
        !replies(&tg, alice.chat, "a6").is_empty()
            && !replies(&tg, TENANTS[1].chat, "b1").is_empty()
            && !replies(&tg, TENANTS[2].chat, "c1").is_empty()
    })
    .await;
    assert_eq!(
        replies(&tg, alice.chat, "a5"),
        [alice.history as u64 + 5],
        "alice's memory"
    );
    assert_eq!(replies(&tg, alice.chat, "a6"), [alice.history as u64 + 6]);
    assert_eq!(
        replies(&tg, TENANTS[1].chat, "b1"),
        [TENANTS[1].history as u64 + 1],
        "bob's memory"
    );
    assert_eq!(replies(&tg, TENANTS[2].chat, "c1"), [1]);
    assert!(
        Instant::now() >= lock_expires,
        "bob was woken while the Go lock was still held"
    );

    // Go items read back: idle_timeout_s 0 means 300; the Go response shapes on request.
    let carol: Value = http
        .get(format!("{orch_url}/tenants/carol"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(carol["idle_timeout_s"], 300, "{carol}");
    let go: Value = http
        .get(format!("{orch_url}/tenants/carol"))
        .header("X-Api-Compat", "go")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &go["TenantID"],
            &go["IdleTimeoutS"],
            &go["BotToken"],
            go["Status"].is_string()
        ),
        (&json!("carol"), &json!(300), &json!(""), true),
        "{go}"
    );
    let go_list: Value = http
        .get(format!("{orch_url}/tenants"))
        .header("X-Api-Compat", "go")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(go_list.as_array().map(Vec::len), Some(3), "{go_list}");
    assert!(go_list[0].get("TenantID").is_some() && go_list[0].get("tenant_id").is_none());
    let tok: Value = http
        .get(format!("{orch_url}/tenants/bob/bot_token"))
        .header("X-Api-Compat", "go")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tok, json!({ "BotToken": token("bob") }));
    let noop = http
        .patch(format!("{orch_url}/tenants/carol"))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(noop.status(), StatusCode::OK, "PATCH {{}} is the Go no-op");

    // ── Step 4: every webhook re-registered with its secret token, then the secret enforced ──
    let reg = ztm
        .run(
            &orch_url,
            &router_url,
            &["webhook", "register", "--all", "-o", "json"],
        )
        .await;
    assert_eq!(reg.code, 0, "{}\n{}", reg.stdout, reg.stderr);
    for t in &TENANTS {
        let tid = common::TenantId::parse(t.id).unwrap();
        assert!(
            tg.webhooks().iter().any(|w| w.token == token(t.id)
                && w.url == format!("{router_url}/tg/{}", t.id)
                && w.secret_token.as_deref() == Some(&common::webhook::secret_token(SECRET, &tid))),
            "webhook of {} registered with its secret: {:?}",
            t.id,
            tg.webhooks()
                .iter()
                .map(|w| (&w.url, w.secret_token.is_some()))
                .collect::<Vec<_>>()
        );
    }
    router.terminate(Duration::from_secs(40)).await;
    let mut router = Service::new("router", root, router_env(false), router_port);
    router.start().await;
    let stale = post_tg(
        &http,
        &router_url,
        "carol",
        &text_update(999, TENANTS[2].chat, "x"),
        false,
    )
    .await;
    assert_eq!(
        stale,
        StatusCode::UNAUTHORIZED,
        "an update without the secret token once enforced"
    );
    send(2, "c2", true).await;
    send(1, "b2", true).await;
    tg.wait_for("the replies after the secret", T, |_| {
        !replies(&tg, TENANTS[2].chat, "c2").is_empty()
            && !replies(&tg, TENANTS[1].chat, "b2").is_empty()
    })
    .await;

    // Every acknowledged update answered exactly once.
    for (t, text) in &sent {
        let n = replies(&tg, TENANTS[*t].chat, text);
        assert_eq!(
            n.len(),
            1,
            "{text} to {} answered once: {n:?}",
            TENANTS[*t].id
        );
    }

    // ── migrate check once the guide's fixes are in: exit 0 ─────────────────────────────────
    ztm.set_cluster(fixed_cluster());
    let check = migrate_check().await;
    let found = findings(&check);
    assert_eq!(
        check.code, 0,
        "nothing blocks after the fixes: {found:#?}\n{}",
        check.stderr
    );
    assert!(!found.iter().any(|f| f.1 == "api/responses"), "{found:#?}");
    let hooks = webhook_findings(&check);
    for t in &TENANTS {
        let item = format!("tenant/{}", t.id);
        let mine: Vec<_> = hooks.iter().filter(|h| h.0 == item).collect();
        assert!(
            mine.len() == 1
                && mine[0]
                    .1
                    .contains("points at this router with its secret token")
                && mine[0].2.is_empty()
                && !mine[0].3,
            "after `ztm webhook register --all` the webhook of {} is fine: {hooks:#?}",
            t.id
        );
    }
    assert_no_secrets(&check);
    println!(
        "cut-over drill: {} updates answered once; Go memories kept (alice #{}, bob #{}); migrate check: {} items, exit 0",
        sent.len(),
        alice.history + 6,
        TENANTS[1].history + 2,
        found.len()
    );
}

/// `kubectl apply` over a Go deployment: the immutable PriorityClass values are the Go ones, and the
/// router Service still answers on the Go port 80 (an Ingress or ALB may target it).
#[test]
fn the_manifests_apply_over_a_go_deployment() {
    use serde::Deserialize;
    let base = platform_tests::backends::workspace_root().join("deploy/base");
    let docs = |file: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(base.join(file)).unwrap();
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    };
    let pcs = docs("priorityclasses.yaml");
    for (name, value) in [("tenant-normal", 1000), ("tenant-low", 100)] {
        let pc = pcs
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("PriorityClass {name}"));
        assert_eq!(
            pc["value"], value,
            "PriorityClass {name} keeps the Go value"
        );
    }
    let router = docs("router.yaml");
    let svc = router
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "router")
        .expect("Service router");
    let ports: Vec<(i64, &str)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["targetPort"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(ports.contains(&(9090, "http")), "{ports:?}");
    assert!(
        ports.contains(&(80, "http")),
        "the Go port 80 too: {ports:?}"
    );
}

/// `DYNAMODB_TABLE` unset meant DynamoDB `tenant-registry` on the Go platform: on Kubernetes the
/// orchestrator refuses to fall back to a per-replica SQLite file unless told to.
#[test]
fn on_kubernetes_the_orchestrator_refuses_a_sqlite_registry_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |allow: bool| {
        let mut cmd = Command::new(bin_path("orchestrator"));
        cmd.env_clear()
            .env("RUNTIME", "kubernetes")
            .env("REDIS_ADDR", "127.0.0.1:1")
            .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
            .env("DATA_DIR", dir.path())
            .env("PORT", free_port().to_string())
            .env("API_TOKEN", "drill-api-token")
            .env("WEBHOOK_SECRET", "drill-webhook-secret")
            .env("NO_COLOR", "1");
        if allow {
            cmd.env("ALLOW_SQLITE_REGISTRY", "true");
        }
        let out = cmd.output().expect("run orchestrator");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(false);
    assert!(!ok);
    assert!(
        stderr.contains("DYNAMODB_TABLE") && stderr.contains("ALLOW_SQLITE_REGISTRY=true"),
        "{stderr}"
    );
    let (ok, stderr) = run(true);
    assert!(!ok, "no cluster to connect to");
    assert!(
        !stderr.contains("ALLOW_SQLITE_REGISTRY"),
        "allowed: {stderr}"
    );
}
