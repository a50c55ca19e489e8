//! `ztm migrate check`: reads a running Go "Agentic Tenancy" deployment (through the orchestrator's
//! API, `kubectl get -o json` and optionally Redis) and lists, per item, what the swap to this
//! platform changes and what must be done first. Exit 1 while anything blocks (docs/migration.md).
//!
//! The checks are pure functions of the state read, so they are tested against Go-shaped JSON.

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::Api;
use crate::error::ZtmError;
use crate::transport::kubectl::Kubectl;
use crate::transport::{Method, Service};

/// The PriorityClass values of `deploy/base/priorityclasses.yaml` (the Go platform's; immutable).
pub const PRIORITY_CLASSES: [(&str, i64); 2] = [("tenant-normal", 1000), ("tenant-low", 100)];

/// The Kubernetes kinds read in one `kubectl get`.
pub const KINDS: &str = "priorityclasses,clusterroles,clusterrolebindings,roles,rolebindings,\
deployments,statefulsets,services,persistentvolumes,persistentvolumeclaims";

/// One thing the swap touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `registry`, `redis`, `kubernetes` or `webhook`.
    pub area: &'static str,
    /// The object, e.g. `tenant/alice`, `priorityclass/tenant-low`.
    pub item: String,
    /// What the new platform does differently with it.
    pub change: String,
    /// What to do, and when (empty when nothing).
    pub action: String,
    /// True while it must be fixed before the swap.
    pub blocks: bool,
}

fn finding(area: &'static str, item: impl Into<String>, change: impl Into<String>) -> Finding {
    Finding {
        area,
        item: item.into(),
        change: change.into(),
        action: String::new(),
        blocks: false,
    }
}

impl Finding {
    fn todo(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self
    }

    fn blocking(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self.blocks = true;
        self
    }
}

/// A tenant as either platform's `GET /tenants` shows it (Go: `TenantID`; here: `tenant_id`).
fn field<'a>(t: &'a Value, ours: &str, go: &str) -> Option<&'a Value> {
    t.get(ours).or_else(|| t.get(go))
}

/// Findings on the registry, from the raw `GET /tenants` answer.
pub fn check_tenants(tenants: &[Value]) -> Vec<Finding> {
    let mut out = Vec::new();
    if tenants.iter().any(|t| t.get("TenantID").is_some()) {
        out.push(
            finding(
                "registry",
                "api/responses",
                "the API answers snake_case (tenant_id, status, pod_ip); the Go API answered TenantID, Status, PodIP",
            )
            .todo("scripts: send the header `X-Api-Compat: go`, or change `.Status` to `.status` (docs/migration.md)"),
        );
    }
    for t in tenants {
        let id = field(t, "tenant_id", "TenantID")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let item = format!("tenant/{id}");
        if common::TenantId::parse(id).is_err() {
            out.push(
                finding("registry", &item, "the id is not a DNS label: the new platform cannot address it")
                    .blocking("recreate the tenant under a valid id (lower-case letters, digits, '-'; at most 53)"),
            );
            continue;
        }
        if field(t, "idle_timeout_s", "IdleTimeoutS").and_then(Value::as_i64) == Some(0) {
            out.push(finding(
                "registry",
                &item,
                "idle_timeout_s = 0 reads as 300 s (what it meant on the Go platform)",
            ));
        }
        match field(t, "status", "Status").and_then(Value::as_str) {
            Some("provisioning") => out.push(
                finding("registry", &item, "a wake is in progress on the Go platform")
                    .blocking("wait until it is running or idle (a Go wake must not straddle the swap)"),
            ),
            Some("running") => out.push(
                finding(
                    "registry",
                    &item,
                    "its Go pod (no agent credential) keeps answering until it is stopped",
                )
                .todo(format!(
                    "after the orchestrator swap: `ztm tenant sleep {id}` (memory is saved; the next message starts a new pod)"
                )),
            ),
            _ => {}
        }
    }
    out
}

/// How long ago a Telegram delivery error still says something about today's webhook.
const RECENT_ERROR_S: i64 = 3600;

const REGISTER: &str = "`ztm webhook register --all` (docs/migration.md step 4)";

/// Findings on one tenant's webhook, from the router's `GET /admin/webhook/{id}` answer
/// (Telegram's `getWebhookInfo` next to what the router registered); no token is in it.
pub fn check_webhook(id: &str, report: &Value) -> Vec<Finding> {
    let item = format!("tenant/{id}");
    let text = |k: &str| report.get(k).and_then(Value::as_str).unwrap_or_default();
    let url = text("url");
    let mode = text("webhook_secret");
    let mut out = Vec::new();
    let pending = report
        .get("pending_update_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let expected = report.get("expected_url").and_then(Value::as_str);
    let Some(expected) = expected else {
        out.push(
            finding("webhook", &item, "the router has no PUBLIC_BASE_URL: it cannot tell whether the webhook points at it, nor register one")
                .blocking("set PUBLIC_BASE_URL on the router (the URL Telegram reaches it at)"),
        );
        return out;
    };
    if url.is_empty() {
        out.push(
            finding(
                "webhook",
                &item,
                format!("no webhook is set: Telegram keeps the bot's updates ({pending} waiting) for getUpdates"),
            )
            .todo(format!("point it at this router: {REGISTER}")),
        );
    } else if url != expected {
        out.push(
            finding(
                "webhook",
                &item,
                format!("the webhook points at {url}, not at this router ({expected})"),
            )
            .todo(format!("re-point it: {REGISTER}")),
        );
    } else if text("secret_token") != "current" {
        let why = match text("secret_token") {
            "other_secret" => "registered under another WEBHOOK_SECRET (rotated since)",
            "none" => "registered by this platform without a secret token",
            _ => "set without this platform's secret token (the Go platform registered it; Telegram does not say which token it sends)",
        };
        out.push(match mode {
            "enforced" => finding(
                "webhook",
                &item,
                format!("{why}: this router enforces WEBHOOK_SECRET, so Telegram's updates get 401 now"),
            )
            .blocking(format!("re-register it now: {REGISTER}")),
            "optional" => finding(
                "webhook",
                &item,
                format!("{why}: accepted while WEBHOOK_SECRET_OPTIONAL=true, 401 once WEBHOOK_SECRET is enforced"),
            )
            .todo(format!("before removing WEBHOOK_SECRET_OPTIONAL: {REGISTER}")),
            _ => finding(
                "webhook",
                &item,
                format!("{why}: once WEBHOOK_SECRET is on, its updates get 401"),
            )
            .todo(format!("with WEBHOOK_SECRET set on the router: {REGISTER}")),
        });
    }
    if report.get("allowed_updates_match") == Some(&Value::Bool(false))
        || (!url.is_empty() && report.get("allowed_updates").is_none_or(Value::is_null))
    {
        out.push(
            finding(
                "webhook",
                &item,
                "Telegram sends the update types the webhook was set with (the Go platform set none: Telegram's default list), not the platform's",
            )
            .todo(REGISTER),
        );
    }
    let age = report.get("last_error_age_s").and_then(Value::as_i64);
    let recent_error = report
        .get("last_error_message")
        .and_then(Value::as_str)
        .zip(age)
        .filter(|(_, age)| *age <= RECENT_ERROR_S);
    if let Some((m, age)) = recent_error {
        let f = finding(
            "webhook",
            &item,
            format!("Telegram's last delivery to the webhook failed {age} s ago: {m:?}; {pending} updates waiting (Telegram retries them)"),
        );
        out.push(if m.contains("401") {
            f.blocking(format!("the webhook lacks the secret token this router wants: {REGISTER}"))
        } else {
            f.todo("check the router's logs and `ztm webhook info`; the swap should wait until deliveries succeed")
        });
    } else if pending > 0 {
        out.push(finding(
            "webhook",
            &item,
            format!("{pending} updates waiting at Telegram, no recent delivery error"),
        ));
    }
    if out.is_empty() {
        out.push(finding(
            "webhook",
            &item,
            "points at this router with its secret token",
        ));
    }
    out
}

/// Reads every tenant's webhook through the router. An unreachable router is one blocking finding
/// (the other tenants are not tried); a tenant the router or Telegram cannot answer for is one each.
pub async fn check_webhooks(api: &Api<'_>, ids: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    for id in ids {
        let Ok(tid) = common::TenantId::parse(id) else {
            continue;
        };
        match api.webhook(&tid, Method::Get).await {
            Ok(report) => out.extend(check_webhook(id, &report)),
            Err(ZtmError::Transport(e)) => {
                out.push(
                    finding("webhook", "router", format!("could not check the webhooks: {e}"))
                        .blocking("start the new router and point ztm at it (--router-url / ZTM_ROUTER_URL), or skip with --no-webhooks before the router swap"),
                );
                return out;
            }
            Err(e) => out.push(
                finding(
                    "webhook",
                    format!("tenant/{id}"),
                    format!("could not check the webhook: {e}"),
                )
                .blocking("fix what the message says (router, orchestrator or Telegram unreachable), then check again"),
            ),
        }
    }
    out
}

/// Findings on Redis: `(key, value, ttl_ms)` of the `router:endpoint:*` and `tenant:waking:*` keys.
pub fn check_redis(keys: &[(String, String, i64)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, value, ttl_ms) in keys {
        if let Some(id) = key.strip_prefix("router:endpoint:") {
            if value.parse::<std::net::IpAddr>().is_ok() {
                out.push(finding(
                    "redis",
                    key.as_str(),
                    format!("bare pod IP {value:?} (the Go format) is read as {value}:AGENT_PORT (3000); new values on that port are written the same way"),
                ));
            } else if value.parse::<std::net::SocketAddr>().is_err() {
                out.push(
                    finding(
                        "redis",
                        key.as_str(),
                        format!("unreadable endpoint {value:?} for tenant {id}"),
                    )
                    .todo(format!("DEL {key} (the next message wakes the tenant)")),
                );
            }
        } else if key.starts_with("tenant:waking:")
            // This platform's fencing counter (`INCR`, so often "1"), not a lock.
            && !key.ends_with(":generation")
            && value == "1"
        {
            let secs = ((*ttl_ms).max(0) as u64).div_ceil(1000);
            out.push(
                finding(
                    "redis",
                    key.as_str(),
                    format!("held by a Go orchestrator (value \"1\", expires in {secs} s); a new wake waits for it"),
                )
                .blocking("wait for the Go wake to finish (or the lock to expire) before swapping the orchestrator"),
            );
        }
    }
    out
}

fn items<'a>(list: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    list.get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |i| i.get("kind").and_then(Value::as_str) == Some(kind))
}

fn name(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn get<'a>(list: &'a Value, kind: &'a str, wanted: &str) -> Option<&'a Value> {
    items(list, kind).find(|i| name(i) == wanted)
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// True when one of `roles` (Role/ClusterRole objects) lets its holder create and read Secrets.
fn grants_secrets(roles: &[&Value]) -> bool {
    let mut verbs = std::collections::HashSet::new();
    for r in roles {
        for rule in r
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let core = strings(rule.get("apiGroups"))
                .iter()
                .any(|g| g.is_empty() || *g == "*");
            let res = strings(rule.get("resources"));
            if core && res.iter().any(|r| *r == "secrets" || *r == "*") {
                verbs.extend(strings(rule.get("verbs")));
            }
        }
    }
    verbs.contains("*") || (verbs.contains("create") && verbs.contains("get"))
}

/// Findings on the cluster, from `kubectl get KINDS -o json` and the namespace object.
pub fn check_cluster(list: &Value, namespace: Option<&Value>, ns: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (pc, value) in PRIORITY_CLASSES {
        if let Some(o) = get(list, "PriorityClass", pc) {
            let got = o.get("value").and_then(Value::as_i64).unwrap_or_default();
            if got != value {
                out.push(
                    finding(
                        "kubernetes",
                        format!("priorityclass/{pc}"),
                        format!("value {got}, the manifests apply {value}: values are immutable, `kubectl apply` fails"),
                    )
                    .blocking(format!(
                        "`kubectl delete priorityclass {pc}` then apply (running pods keep their priority)"
                    )),
                );
            }
        }
    }

    // RBAC: every wake now writes Secret tenant-{id}; the Go ClusterRole had no secrets rule.
    let sa_roles: Vec<&Value> = items(list, "RoleBinding")
        .chain(items(list, "ClusterRoleBinding"))
        .filter(|b| {
            b.get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| {
                    s.get("kind").and_then(Value::as_str) == Some("ServiceAccount")
                        && s.get("name").and_then(Value::as_str) == Some("orchestrator")
                })
        })
        .filter_map(|b| {
            let kind = b.pointer("/roleRef/kind").and_then(Value::as_str)?;
            let role = b.pointer("/roleRef/name").and_then(Value::as_str)?;
            get(list, kind, role)
        })
        .collect();
    if !grants_secrets(&sa_roles) {
        out.push(
            finding(
                "kubernetes",
                "serviceaccount/orchestrator",
                "may not create or read Secrets: every wake writes Secret tenant-{id} (bot token, agent credential) and would fail",
            )
            .blocking("apply deploy/base/rbac.yaml before the new orchestrator starts"),
        );
    }
    if get(list, "ClusterRole", "orchestrator").is_some() {
        out.push(
            finding(
                "kubernetes",
                "clusterrole/orchestrator",
                "the Go ClusterRole grants pod rights in every namespace; the new platform uses Role orchestrator and ClusterRole tenancy-orchestrator (PVs only)",
            )
            .todo("after the swap: `kubectl delete clusterrolebinding orchestrator clusterrole orchestrator`"),
        );
    }

    if get(list, "Deployment", "redis").is_some() {
        let f = finding(
            "kubernetes",
            "deployment/redis",
            "deploy/base runs Redis as statefulset/redis behind the same app=redis selector: both at once are two Redis servers behind one Service",
        );
        out.push(if get(list, "StatefulSet", "redis").is_some() {
            f.blocking("delete one of them now: `kubectl delete statefulset redis` (the swap keeps the Go Redis; docs/migration.md step 6 moves it)")
        } else {
            f.todo("keep the Go Redis for the swap (do not apply statefulset/redis yet); docs/migration.md step 6 moves it")
        });
    }

    let enforce = namespace
        .and_then(|n| n.pointer("/metadata/labels/pod-security.kubernetes.io~1enforce"))
        .and_then(Value::as_str);
    if enforce != Some("restricted") {
        if let Some(wp) = get(list, "Deployment", "warm-pool") {
            if !restricted(wp.pointer("/spec/template/spec")) {
                out.push(
                    finding(
                        "kubernetes",
                        "deployment/warm-pool",
                        format!("namespace {ns} will enforce Pod Security `restricted`, which rejects this Go-era pod template (the manager never patches it)"),
                    )
                    .blocking("`kubectl delete deployment warm-pool` before applying namespace.yaml (the new orchestrator recreates it)"),
                );
            }
        }
    }

    if let Some(svc) = get(list, "Service", "router") {
        let ports: Vec<i64> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        if ports.contains(&80) && !ports.contains(&9090) {
            out.push(finding(
                "kubernetes",
                "service/router",
                "port 80 stays (as http-go) and 9090 is added: an Ingress or ALB on port 80 keeps working",
            ));
        }
    }

    for pv in items(list, "PersistentVolume") {
        let pv_name = name(pv);
        let Some(id) = pv_name.strip_prefix("pv-tenant-") else {
            continue;
        };
        let opts = strings(pv.pointer("/spec/mountOptions"));
        let prefix = format!("prefix tenants/{id}/");
        if !opts.contains(&prefix.as_str()) || !opts.iter().any(|o| o.starts_with("uid=")) {
            out.push(
                finding(
                    "kubernetes",
                    format!("persistentvolume/{pv_name}"),
                    "Go-era state volume (no `prefix`/`uid` mount options; PV specs are immutable): the non-root agent cannot write /s3-state",
                )
                .blocking(format!(
                    "while tenant {id} is idle: `kubectl -n {ns} delete pvc pvc-tenant-{id}` and `kubectl delete pv {pv_name}` (reclaim Retain: the S3 objects stay; the next wake recreates both)"
                )),
            );
        }
    }
    out
}

/// Pod Security `restricted` essentials: non-root, no privilege escalation, capabilities dropped, seccomp.
fn restricted(spec: Option<&Value>) -> bool {
    let Some(spec) = spec else { return false };
    let pod_nonroot = spec.pointer("/securityContext/runAsNonRoot") == Some(&json!(true));
    let pod_seccomp = spec
        .pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t == "RuntimeDefault" || t == "Localhost");
    spec.get("containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().all(|c| {
                let sc = c.get("securityContext");
                let nonroot =
                    pod_nonroot || sc.and_then(|s| s.get("runAsNonRoot")) == Some(&json!(true));
                let seccomp =
                    pod_seccomp || sc.and_then(|s| s.pointer("/seccompProfile/type")).is_some();
                let no_esc =
                    sc.and_then(|s| s.get("allowPrivilegeEscalation")) == Some(&json!(false));
                let drop_all =
                    strings(sc.and_then(|s| s.pointer("/capabilities/drop"))).contains(&"ALL");
                nonroot && seccomp && no_esc && drop_all
            })
        })
}

/// Reads the `router:endpoint:*` and `tenant:waking:*` keys with their values and TTLs.
pub async fn read_redis(addr: &str) -> Result<Vec<(String, String, i64)>, ZtmError> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    };
    use redis::AsyncTypedCommands;
    let fail = |e: redis::RedisError| ZtmError::Rejected(format!("redis at {addr}: {e}"));
    let client = redis::Client::open(url.as_str()).map_err(fail)?;
    let mut c = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| ZtmError::Rejected(format!("redis at {addr}: timed out connecting")))?
    .map_err(fail)?;
    let mut out = Vec::new();
    for pattern in ["router:endpoint:*", "tenant:waking:*"] {
        // The scan borrows the connection: collect the names, then read each.
        let mut keys = Vec::new();
        let opts = redis::ScanOptions::default()
            .with_pattern(pattern)
            .with_count(500);
        let mut scan = c.scan_options::<String>(opts).await.map_err(fail)?;
        while let Some(key) = scan.next_item().await {
            keys.push(key.map_err(fail)?);
        }
        drop(scan);
        for key in keys {
            let value = c.get(&key).await.map_err(fail)?;
            let ttl = c.pttl(&key).await.map_err(fail)?.raw() as i64;
            if let Some(v) = value {
                out.push((key, v, ttl));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `kubectl get ... -o json`, parsed.
async fn kubectl_json(kubectl: &Kubectl, args: &[&str]) -> Result<Value, ZtmError> {
    let out = kubectl
        .command(args)?
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| ZtmError::Rejected(format!("running kubectl: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no error output");
        return Err(ZtmError::Rejected(format!(
            "kubectl {} failed: {line}",
            args.join(" ")
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| ZtmError::Rejected(format!("kubectl {}: unreadable JSON: {e}", args[0])))
}

/// What `migrate check` reads besides the orchestrator.
pub struct Sources<'a> {
    pub kubectl: Option<&'a Kubectl>,
    pub namespace: &'a str,
    pub redis_addr: Option<&'a str>,
    /// Read each tenant's webhook through the router (`GET /admin/webhook/{id}`).
    pub webhooks: bool,
}

/// Runs every check; returns the findings in a stable order (blocking first).
pub async fn check(api: &Api<'_>, src: Sources<'_>) -> Result<Vec<Finding>, ZtmError> {
    let resp = api
        .call(Service::Orchestrator, Method::Get, "/tenants", None)
        .await?;
    let tenants: Vec<Value> = serde_json::from_str(&resp.body).map_err(|e| {
        ZtmError::Rejected(format!(
            "unexpected answer from orchestrator to GET /tenants: {e}"
        ))
    })?;
    let mut findings = check_tenants(&tenants);
    if src.webhooks {
        let ids: Vec<String> = tenants
            .iter()
            .filter_map(|t| field(t, "tenant_id", "TenantID").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        findings.extend(check_webhooks(api, &ids).await);
    }
    if let Some(addr) = src.redis_addr {
        findings.extend(check_redis(&read_redis(addr).await?));
    }
    if let Some(k) = src.kubectl {
        let list = kubectl_json(k, &["get", KINDS, "-o", "json"]).await?;
        let ns = kubectl_json(k, &["get", "namespace", src.namespace, "-o", "json"])
            .await
            .ok();
        findings.extend(check_cluster(&list, ns.as_ref(), src.namespace));
    }
    findings.sort_by_key(|f| !f.blocks);
    Ok(findings)
}

/// The table-format report.
pub fn render(findings: &[Finding]) -> String {
    let blocking = findings.iter().filter(|f| f.blocks).count();
    let mut s = String::new();
    for f in findings {
        let tag = if f.blocks {
            "BLOCKS"
        } else if f.action.is_empty() {
            "ok"
        } else {
            "todo"
        };
        s.push_str(&format!("{tag:<7}{:<11}{}: {}\n", f.area, f.item, f.change));
        if !f.action.is_empty() {
            s.push_str(&format!("{:18}-> {}\n", "", f.action));
        }
    }
    s.push_str(&format!(
        "{} items, {blocking} blocking{}\n",
        findings.len(),
        if blocking == 0 {
            ": ready to swap (docs/migration.md)"
        } else {
            ""
        }
    ));
    s
}

/// `ztm migrate ...`.
pub async fn run(
    cmd: crate::cli::MigrateCommand,
    transport: &dyn crate::transport::Transport,
    g: &crate::cli::Global,
) -> Result<crate::commands::Run, ZtmError> {
    let crate::cli::MigrateCommand::Check {
        redis_addr,
        no_kubernetes,
        no_webhooks,
    } = cmd;
    let api = Api::new(transport);
    let kubectl = Kubectl::new(g.context.clone(), g.namespace.clone());
    let findings = check(
        &api,
        Sources {
            kubectl: (!no_kubernetes).then_some(&kubectl),
            namespace: &g.namespace,
            redis_addr: redis_addr.as_deref(),
            webhooks: !no_webhooks,
        },
    )
    .await?;
    let blocking = findings.iter().filter(|f| f.blocks).count();
    let text = render(&findings);
    let data = json!({ "findings": findings, "blocking": blocking });
    Ok(crate::commands::Run {
        outcome: crate::commands::Outcome::Report { data, text },
        problem: (blocking > 0).then(|| {
            format!("{blocking} items block the cut-over (see the BLOCKS lines; docs/migration.md)")
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_tenant(id: &str, status: &str, idle: i64) -> Value {
        json!({"TenantID": id, "Status": status, "PodName": "", "PodIP": "", "Namespace": "tenants",
               "S3Prefix": format!("tenants/{id}/"), "BotToken": "", "CreatedAt": "2026-01-01T00:00:00Z",
               "LastActiveAt": "2026-01-01T00:00:00Z", "IdleTimeoutS": idle})
    }

    #[test]
    fn go_tenants_are_read_and_their_breaks_named() {
        let f = check_tenants(&[
            go_tenant("alice", "running", 600),
            go_tenant("carol", "idle", 0),
            go_tenant("Bad_Id", "idle", 300),
            go_tenant("dave", "provisioning", 300),
        ]);
        let has = |item: &str, text: &str, blocks: bool| {
            f.iter()
                .any(|x| x.item == item && x.change.contains(text) && x.blocks == blocks)
        };
        assert!(has("api/responses", "TenantID", false));
        assert!(has("tenant/alice", "Go pod", false));
        assert!(has("tenant/carol", "300", false));
        assert!(has("tenant/Bad_Id", "DNS label", true));
        assert!(has("tenant/dave", "in progress", true));
    }

    fn report(url: &str, secret_token: &str, mode: &str) -> Value {
        json!({"tenant_id": "alice", "url": url, "expected_url": "https://bots.example.com/tg/alice",
               "url_matches": url == "https://bots.example.com/tg/alice", "pending_update_count": 0,
               "allowed_updates": ["message"], "allowed_updates_match": true,
               "secret_token": secret_token, "webhook_secret": mode})
    }

    #[test]
    fn webhooks_are_judged_by_url_secret_token_and_telegram_errors() {
        let ours = "https://bots.example.com/tg/alice";
        let one = |r: &Value| {
            let f = check_webhook("alice", r);
            assert_eq!(f.len(), 1, "{f:?}");
            f.into_iter().next().unwrap()
        };
        // Fine: this router's URL with the current secret.
        let ok = one(&report(ours, "current", "enforced"));
        assert!(!ok.blocks && ok.action.is_empty(), "{ok:?}");
        // A Go webhook: no secret token; todo during the window, blocking once enforced.
        let go = one(&report(ours, "unknown", "optional"));
        assert!(
            !go.blocks
                && go.change.contains("secret token")
                && go.action.contains("register --all"),
            "{go:?}"
        );
        assert!(one(&report(ours, "unknown", "enforced")).blocks);
        assert!(!one(&report(ours, "none", "off")).blocks);
        assert!(one(&report(ours, "other_secret", "optional"))
            .change
            .contains("another WEBHOOK_SECRET"));
        // Pointing elsewhere, or nowhere.
        let away = one(&report(
            "https://go.example.com/tg/alice",
            "unknown",
            "optional",
        ));
        assert!(
            away.change.contains("go.example.com") && !away.blocks,
            "{away:?}"
        );
        assert!(one(&report("", "unknown", "optional"))
            .change
            .contains("no webhook"));
        // No PUBLIC_BASE_URL: nothing can be compared or registered.
        let mut r = report(ours, "current", "enforced");
        r["expected_url"] = Value::Null;
        assert!(one(&r).blocks);
        // Telegram's view: waiting updates, a recent 401, the Go registration's update types.
        let mut r = report(ours, "current", "enforced");
        r["pending_update_count"] = json!(7);
        assert!(one(&r).change.contains("7 updates waiting"));
        r["last_error_message"] = json!("Wrong response from the webhook: 401 Unauthorized");
        r["last_error_age_s"] = json!(30);
        let e = one(&r);
        assert!(
            e.blocks && e.change.contains("401") && e.change.contains("7 updates"),
            "{e:?}"
        );
        r["last_error_age_s"] = json!(RECENT_ERROR_S + 1);
        assert!(
            one(&r).change.contains("7 updates waiting"),
            "an old error is history"
        );
        let mut r = report(ours, "current", "enforced");
        r["allowed_updates"] = Value::Null;
        assert!(one(&r).change.contains("update types"));
    }

    #[test]
    fn redis_bare_ips_are_fine_and_go_locks_block() {
        let f = check_redis(&[
            ("router:endpoint:alice".into(), "10.1.2.3".into(), 200_000),
            (
                "router:endpoint:bob".into(),
                "10.1.2.4:3000".into(),
                200_000,
            ),
            ("tenant:waking:bob".into(), "1".into(), 1500),
            ("tenant:waking:carol:generation".into(), "1".into(), -1),
        ]);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(!f[0].blocks && f[0].change.contains("10.1.2.3"));
        assert!(f[1].blocks && f[1].change.contains("2 s"));
    }

    #[test]
    fn go_cluster_objects_block_until_fixed() {
        let go = json!({"items": [
            {"kind": "PriorityClass", "metadata": {"name": "tenant-low"}, "value": -100},
            {"kind": "PriorityClass", "metadata": {"name": "tenant-normal"}, "value": 1000},
            {"kind": "ClusterRole", "metadata": {"name": "orchestrator"}, "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create"]}]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "orchestrator"},
             "roleRef": {"kind": "ClusterRole", "name": "orchestrator"},
             "subjects": [{"kind": "ServiceAccount", "name": "orchestrator", "namespace": "tenants"}]},
            {"kind": "Deployment", "metadata": {"name": "redis"}},
            {"kind": "StatefulSet", "metadata": {"name": "redis"}},
            {"kind": "Deployment", "metadata": {"name": "warm-pool"},
             "spec": {"template": {"spec": {"containers": [{"name": "zeroclaw"}]}}}},
            {"kind": "PersistentVolume", "metadata": {"name": "pv-tenant-alice"},
             "spec": {"csi": {"volumeAttributes": {"subPath": "tenants/alice"}}}}
        ]});
        let f = check_cluster(&go, Some(&json!({"metadata": {"labels": {}}})), "tenants");
        let blocking: Vec<&str> = f
            .iter()
            .filter(|x| x.blocks)
            .map(|x| x.item.as_str())
            .collect();
        assert_eq!(
            blocking,
            [
                "priorityclass/tenant-low",
                "serviceaccount/orchestrator",
                "deployment/redis",
                "deployment/warm-pool",
                "persistentvolume/pv-tenant-alice"
            ]
        );

        let fixed = json!({"items": [
            {"kind": "PriorityClass", "metadata": {"name": "tenant-low"}, "value": 100},
            {"kind": "Role", "metadata": {"name": "orchestrator"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "delete"]}]},
            {"kind": "RoleBinding", "metadata": {"name": "orchestrator"},
             "roleRef": {"kind": "Role", "name": "orchestrator"},
             "subjects": [{"kind": "ServiceAccount", "name": "orchestrator"}]},
            {"kind": "PersistentVolume", "metadata": {"name": "pv-tenant-alice"},
             "spec": {"mountOptions": ["allow-delete", "uid=1000", "prefix tenants/alice/"]}},
            {"kind": "Deployment", "metadata": {"name": "redis"}}
        ]});
        let f = check_cluster(&fixed, None, "tenants");
        assert!(f.iter().all(|x| !x.blocks), "{f:?}");
        assert!(f
            .iter()
            .any(|x| x.item == "deployment/redis" && !x.action.is_empty()));
    }
}
