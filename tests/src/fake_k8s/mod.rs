//! A fake Kubernetes API server with a kubelet simulator, strict enough to catch what a real one rejects.
//!
//! Speaks the REST/JSON protocol kube-rs uses for pods, secrets, persistentvolumeclaims,
//! persistentvolumes, deployments and leases (create, get, list with label selectors, replace, merge
//! patch, server-side apply with field ownership ([`apply`]), delete), with resourceVersion
//! conflicts, immutable fields and `Status` errors like the real API server. The
//! kubelet simulator schedules pods onto fake nodes, gives each a distinct loopback IP (127.x.y.z), and
//! for every tenant pod (`app=zeroclaw`) really starts `tenant-agent` with the pod's environment,
//! bound to that IP on the pod's `AGENT_PORT`, so `podIP:3000` answers as in a cluster. Volumes are
//! host directories: emptyDir per pod, and the S3 CSI PV as `{root}/s3/{bucket}/{prefix}`, which each
//! pod sees through its own [`crate::mountpoint`] mount enforcing the driver's rules with the PV's
//! mount options (as the CSI driver runs one Mountpoint per volume); env values under a mount path are
//! rewritten to the host directory. A Deployment makes its replica pods like a
//! ReplicaSet. Deleting a pod that runs an agent sends SIGTERM and removes the pod once it exited.

// Handlers return `HttpResponse` errors straight to actix; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Map, Value};

use crate::mountpoint::{Mount, MountOptions, Refusal};

mod apply;
mod fields;
mod immutable;

/// Knobs of the simulated cluster.
#[derive(Debug, Clone)]
pub struct FakeK8sOptions {
    /// Time from pod creation to `Running`.
    pub pod_start_delay: Duration,
    /// The `tenant-agent` binary started for tenant pods.
    pub agent_binary: PathBuf,
    /// Extra environment given to every agent (e.g. `AGENT_STARTUP_MS`).
    pub agent_env: Vec<(String, String)>,
    pub nodes: usize,
    /// How long a deleted tenant pod keeps running before its agent gets SIGTERM and saves: a slow
    /// save (or preStop hook), whose write lands this long after the delete was accepted.
    pub termination_delay: Duration,
}

impl Default for FakeK8sOptions {
    fn default() -> Self {
        FakeK8sOptions {
            // `FAKE_K8S_POD_START_MS` simulates a real cluster's start cost (sandbox, VM, mounts).
            pod_start_delay: Duration::from_millis(
                std::env::var("FAKE_K8S_POD_START_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(200),
            ),
            agent_binary: agent_binary(),
            agent_env: Vec::new(),
            nodes: 3,
            termination_delay: Duration::ZERO,
        }
    }
}

/// `target/<profile>/tenant-agent`, next to the test executable's `deps/` directory.
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.join("tenant-agent")
}

#[derive(Clone, Copy)]
struct Kind {
    resource: &'static str,
    kind: &'static str,
    group_version: &'static str,
    namespaced: bool,
    /// Pods' names end up as hostnames: DNS-1123 labels (63), others subdomains (253).
    max_name: usize,
}

const KINDS: &[Kind] = &[
    Kind {
        resource: "pods",
        kind: "Pod",
        group_version: "v1",
        namespaced: true,
        max_name: 63,
    },
    Kind {
        resource: "secrets",
        kind: "Secret",
        group_version: "v1",
        namespaced: true,
        max_name: 253,
    },
    Kind {
        resource: "configmaps",
        kind: "ConfigMap",
        group_version: "v1",
        namespaced: true,
        max_name: 253,
    },
    Kind {
        resource: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        group_version: "v1",
        namespaced: true,
        max_name: 253,
    },
    Kind {
        resource: "persistentvolumes",
        kind: "PersistentVolume",
        group_version: "v1",
        namespaced: false,
        max_name: 253,
    },
    Kind {
        resource: "deployments",
        kind: "Deployment",
        group_version: "apps/v1",
        namespaced: true,
        max_name: 63,
    },
    Kind {
        resource: "events",
        kind: "Event",
        group_version: "v1",
        namespaced: true,
        max_name: 253,
    },
    Kind {
        resource: "leases",
        kind: "Lease",
        group_version: "coordination.k8s.io/v1",
        namespaced: true,
        max_name: 253,
    },
];

fn kind_of(resource: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.resource == resource)
}

fn qualified(k: Kind) -> String {
    match k.group_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", k.resource),
        None => k.resource.to_owned(),
    }
}

type Key = (&'static str, String, String);

/// A running agent process of a pod.
struct Agent {
    child: Child,
    terminating_since: Option<Instant>,
    sigterm_sent: bool,
    grace: Duration,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    counts: HashMap<(String, String), u64>,
    image_failures: HashMap<String, String>,
    pod_failures: HashMap<String, String>,
    unschedulable: HashSet<String>,
    /// Pods inserted as already running with no process behind them.
    static_pods: HashSet<Key>,
    created_at: HashMap<Key, Instant>,
    agents: HashMap<Key, Agent>,
    used_ips: HashSet<Ipv4Addr>,
    next_node: usize,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn count(&mut self, verb: &str, resource: &str) {
        *self
            .counts
            .entry((verb.to_owned(), resource.to_owned()))
            .or_default() += 1;
    }
}

struct Shared {
    state: Mutex<State>,
    /// Each pod's S3 CSI mounts, unmounted once the pod is gone and its agent exited.
    s3_mounts: Mutex<HashMap<Key, Vec<Mount>>>,
    /// What the S3 CSI mounts of removed pods refused.
    s3_refused: Mutex<Vec<Refusal>>,
    opts: FakeK8sOptions,
    root: PathBuf,
    agent_port_default: u16,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake; stops the server, the kubelet and every agent when dropped.
pub struct FakeK8s {
    shared: Arc<Shared>,
    url: String,
    kubeconfig: PathBuf,
    handle: actix_web::dev::ServerHandle,
    kubelet: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FakeK8s {
    pub async fn start() -> FakeK8s {
        Self::start_with(FakeK8sOptions::default()).await
    }

    pub async fn start_with(opts: FakeK8sOptions) -> FakeK8s {
        assert!(
            opts.agent_binary.exists(),
            "{} missing: build it first (cargo build -p agent)",
            opts.agent_binary.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            s3_mounts: Mutex::default(),
            s3_refused: Mutex::default(),
            opts,
            root: dir.path().to_owned(),
            agent_port_default: 3000,
        });
        let data = web::Data::from(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(handle))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        let url = format!("http://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: tenants\n\
                 current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
            ),
        )
        .expect("write kubeconfig");
        let kubelet = tokio::spawn(kubelet_loop(shared.clone()));
        FakeK8s {
            shared,
            url,
            kubeconfig,
            handle,
            kubelet,
            _dir: dir,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file pointing at the fake (plain HTTP, no auth, namespace `tenants`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client configured from the fake's kubeconfig file, as the orchestrator makes one.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// Requests served per (verb, resource), verbs as in audit logs: create, get, list, update, patch,
    /// delete, deletecollection.
    /// Every API call counted since the start or the last [`reset_counts`](Self::reset_counts).
    pub fn total_calls(&self) -> u64 {
        self.shared.lock().counts.values().sum()
    }

    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        let st = self.shared.lock();
        st.counts
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.shared.lock().counts.clear();
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let k = kind_of(resource).expect("known resource");
        let ns = if k.namespaced { namespace } else { "" };
        self.shared
            .lock()
            .objects
            .get(&(k.resource, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every object of a resource, in every namespace.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let k = kind_of(resource).expect("known resource");
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|(key, _)| key.0 == k.resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Image pulls of `image` fail with `reason` (e.g. `ErrImagePull`).
    pub fn fail_image(&self, image: &str, reason: &str) {
        self.shared
            .lock()
            .image_failures
            .insert(image.to_owned(), reason.to_owned());
    }

    /// The pod's container fails with `reason` (e.g. `CrashLoopBackOff`) instead of starting.
    pub fn fail_pod(&self, name: &str, reason: &str) {
        self.shared
            .lock()
            .pod_failures
            .insert(name.to_owned(), reason.to_owned());
    }

    /// The pod never fits a node: it stays Pending with condition `PodScheduled=False/Unschedulable`.
    pub fn set_unschedulable(&self, name: &str) {
        self.shared.lock().unschedulable.insert(name.to_owned());
    }

    /// Stores an object as if created through the API (no validation, no counting); a pod is marked
    /// Running with a fake IP and no process, for load tests.
    pub fn insert_running_pod(&self, namespace: &str, name: &str, labels: Value, node: &str) {
        let mut st = self.shared.lock();
        let rv = st.next_rv();
        let ip = format!(
            "10.{}.{}.{}",
            (st.rv >> 16) & 255,
            (st.rv >> 8) & 255,
            st.rv & 255
        );
        let key: Key = ("pods", namespace.to_owned(), name.to_owned());
        st.objects.insert(
            key.clone(),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels,
                             "resourceVersion": rv, "uid": uuid::Uuid::new_v4().to_string(),
                             "creationTimestamp": now_rfc3339()},
                "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "zeroclaw:latest"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            }),
        );
        st.static_pods.insert(key);
    }

    /// Removes a pod behind the orchestrator's back (node loss, `kubectl delete --force`); its agent is
    /// killed at once.
    pub fn delete_out_of_band(&self, namespace: &str, name: &str) {
        let mut st = self.shared.lock();
        let key: Key = ("pods", namespace.to_owned(), name.to_owned());
        st.objects.remove(&key);
        if let Some(mut a) = st.agents.remove(&key) {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
    }

    /// The pod stops the way a node's kubelet reports it: its agent is killed, the object stays
    /// with `status.phase` (e.g. `Failed`) and `status.reason` (e.g. `Evicted`).
    pub fn end_pod(&self, namespace: &str, name: &str, phase: &str, reason: &str) {
        let mut st = self.shared.lock();
        let key: Key = ("pods", namespace.to_owned(), name.to_owned());
        if let Some(mut a) = st.agents.remove(&key) {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
        let rv = st.next_rv();
        if let Some(obj) = st.objects.get_mut(&key) {
            obj["metadata"]["resourceVersion"] = json!(rv);
            obj["status"]["phase"] = json!(phase);
            obj["status"]["reason"] = json!(reason);
            obj["status"]["message"] = json!(format!("pod {reason}"));
        }
    }

    /// Whether an agent process of this pod is alive.
    pub fn agent_running(&self, namespace: &str, name: &str) -> bool {
        let mut st = self.shared.lock();
        let key: Key = ("pods", namespace.to_owned(), name.to_owned());
        st.agents
            .get_mut(&key)
            .is_some_and(|a| matches!(a.child.try_wait(), Ok(None)))
    }

    /// Where the pod's S3 CSI volumes are mounted (the host paths its agent got), while it runs.
    pub fn s3_mount_paths(&self, namespace: &str, name: &str) -> Vec<PathBuf> {
        let key: Key = ("pods", namespace.to_owned(), name.to_owned());
        let mounts = self
            .shared
            .s3_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        mounts
            .get(&key)
            .into_iter()
            .flatten()
            .map(|m| m.path().to_owned())
            .collect()
    }

    /// Every operation an S3 CSI mount refused (the driver's rules broken), of any pod so far.
    pub fn s3_refusals(&self) -> Vec<Refusal> {
        let mut out = self
            .shared
            .s3_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mounts = self
            .shared
            .s3_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        out.extend(mounts.values().flatten().flat_map(Mount::refusals));
        out
    }

    /// The output (stdout and stderr) of the agent process of pod `name` (its latest start).
    pub fn agent_log(&self, name: &str) -> PathBuf {
        self.shared.root.join("logs").join(format!("{name}.log"))
    }

    /// Host directory of a tenant's S3 state volume (`{root}/s3/{bucket}/{prefix}`).
    pub fn s3_dir(&self, bucket: &str, prefix: &str) -> PathBuf {
        self.shared.root.join("s3").join(bucket).join(prefix)
    }
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        self.kubelet.abort();
        let handle = self.handle.clone();
        drop(handle.stop(false));
        let mut st = self.shared.lock();
        for (_, mut a) in st.agents.drain() {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
        drop(st);
        self.shared
            .s3_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn status(code: u16, reason: &str, message: String, details: Value) -> HttpResponse {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "details": details, "code": code,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status code"))
        .content_type("application/json")
        .body(body.to_string())
}

fn not_found(k: Kind, name: &str) -> HttpResponse {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", qualified(k)),
        json!({"name": name, "group": group(k), "kind": k.resource}),
    )
}

fn conflict(k: Kind, name: &str) -> HttpResponse {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(k)
        ),
        json!({"name": name, "group": group(k), "kind": k.resource}),
    )
}

fn invalid(k: Kind, name: &str, causes: Vec<(String, String)>) -> HttpResponse {
    let text = causes
        .iter()
        .map(|(f, m)| format!("{f}: {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    let causes: Vec<Value> = causes
        .into_iter()
        .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
        .collect();
    status(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {text}", k.kind),
        json!({"name": name, "group": group(k), "kind": k.kind, "causes": causes}),
    )
}

fn bad_request(message: String) -> HttpResponse {
    status(400, "BadRequest", message, json!({}))
}

fn group(k: Kind) -> &'static str {
    k.group_version.split_once('/').map_or("", |(g, _)| g)
}

fn ok_json(v: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(v.to_string())
}

struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let (gv, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("v1".to_owned(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut it = rest.splitn(3, '/');
        let (g, v, rest) = (it.next()?, it.next()?, it.next()?);
        (format!("{g}/{v}"), rest)
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, resource, name) = match segs.as_slice() {
        ["namespaces", ns, res] => (ns.to_string(), *res, None),
        ["namespaces", ns, res, name] => (ns.to_string(), *res, Some(name.to_string())),
        [res] => (String::new(), *res, None),
        [res, name] => (String::new(), *res, Some(name.to_string())),
        _ => return None,
    };
    let kind = kind_of(resource)?;
    if kind.group_version != gv || kind.namespaced == namespace.is_empty() {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
    })
}

/// `/api/v1/namespaces/{ns}/pods/{name}/log`.
fn pod_log_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        [ns, "pods", name, "log"] => Some((ns.to_string(), name.to_string())),
        _ => None,
    }
}

/// The pod log subresource: the agent's output as plain text, `tailLines`, `previous` (the output
/// of the pod's previous agent run, as a restarted container's) and `sinceSeconds` (the whole log
/// when the file was written within it: the fake keeps no per-line times).
fn pod_log(shared: &Shared, query: &str, namespace: &str, name: &str) -> HttpResponse {
    let q: HashMap<String, String> = web::Query::<HashMap<String, String>>::from_query(query)
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let exists =
        shared
            .lock()
            .objects
            .contains_key(&("pods", namespace.to_owned(), name.to_owned()));
    if !exists {
        return not_found(kind_of("pods").expect("pods"), name);
    }
    let previous = q.get("previous").is_some_and(|v| v == "true");
    let file = shared.root.join("logs").join(if previous {
        format!("{name}.previous.log")
    } else {
        format!("{name}.log")
    });
    let text = match std::fs::read(&file) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) if previous => {
            return bad_request(format!(
                "previous terminated container \"agent\" in pod \"{name}\" not found"
            ))
        }
        Err(_) => String::new(),
    };
    let text = match q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let keep = &lines[lines.len().saturating_sub(n)..];
            keep.iter().map(|l| format!("{l}\n")).collect()
        }
        None => text,
    };
    HttpResponse::Ok().content_type("text/plain").body(text)
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if req.path() == "/version" {
        return ok_json(
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        );
    }
    if let Some((ns, pod)) = pod_log_path(req.path()) {
        return pod_log(&shared, req.query_string(), &ns, &pod);
    }
    let Some(t) = parse_path(req.path()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        );
    };
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let parse_body = || -> Result<Value, HttpResponse> {
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
    };
    let method = req.method().as_str();
    let manager = apply::manager_of(&req, &query);
    let mut st = shared.lock();
    let k = t.kind;
    match (method, t.name) {
        ("GET", None) => {
            st.count("list", k.resource);
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return status(
                    405,
                    "MethodNotAllowed",
                    "watch is not supported by the fake".into(),
                    json!({}),
                );
            }
            let selector = match query
                .get("labelSelector")
                .map(|s| parse_selector(s))
                .transpose()
            {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => return bad_request(format!("unable to parse requirement: {e}")),
            };
            let items: Vec<Value> = st
                .objects
                .range((k.resource, t.namespace.clone(), String::new())..)
                .take_while(|(key, _)| key.0 == k.resource && (key.1 == t.namespace))
                .filter(|(_, v)| matches(&selector, &v["metadata"]["labels"]))
                .map(|(_, v)| {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("apiVersion");
                        o.remove("kind");
                    }
                    v
                })
                .collect();
            ok_json(&json!({
                "apiVersion": k.group_version, "kind": format!("{}List", k.kind),
                "metadata": {"resourceVersion": st.rv.to_string()},
                "items": items,
            }))
        }
        ("GET", Some(name)) => {
            st.count("get", k.resource);
            match st.objects.get(&(k.resource, t.namespace, name.clone())) {
                Some(v) => ok_json(v),
                None => not_found(k, &name),
            }
        }
        ("POST", None) => {
            st.count("create", k.resource);
            let obj = match parse_body() {
                Ok(v) => v,
                Err(r) => return r,
            };
            create(&mut st, k, &t.namespace, obj, Some(&manager))
        }
        ("PUT", Some(name)) => {
            st.count("update", k.resource);
            let obj = match parse_body() {
                Ok(v) => v,
                Err(r) => return r,
            };
            update(&mut st, k, &t.namespace, &name, obj, false, Some(&manager))
        }
        ("PATCH", Some(name)) => {
            st.count("patch", k.resource);
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct.starts_with("application/apply-patch+yaml") {
                return apply::apply(&mut st, k, &t.namespace, &name, &body, &query);
            }
            if !ct.starts_with("application/merge-patch+json")
                && !ct.starts_with("application/strategic-merge-patch+json")
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("the fake supports merge patches only, not {ct:?}"),
                    json!({}),
                );
            }
            let patch = match parse_body() {
                Ok(v) => v,
                Err(r) => return r,
            };
            update(&mut st, k, &t.namespace, &name, patch, true, Some(&manager))
        }
        ("DELETE", Some(name)) => {
            st.count("delete", k.resource);
            let opts = if body.is_empty() {
                Value::Null
            } else {
                match parse_body() {
                    Ok(v) => v,
                    Err(r) => return r,
                }
            };
            delete(&mut st, k, &t.namespace, &name, &opts)
        }
        ("DELETE", None) => {
            st.count("deletecollection", k.resource);
            let selector = match query
                .get("labelSelector")
                .map(|s| parse_selector(s))
                .transpose()
            {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => return bad_request(format!("unable to parse requirement: {e}")),
            };
            let names: Vec<String> = st
                .objects
                .iter()
                .filter(|(key, v)| {
                    key.0 == k.resource
                        && key.1 == t.namespace
                        && matches(&selector, &v["metadata"]["labels"])
                })
                .map(|(key, _)| key.2.clone())
                .collect();
            for n in names {
                let _ = delete(&mut st, k, &t.namespace, &n, &Value::Null);
            }
            ok_json(
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            )
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported"),
            json!({}),
        ),
    }
}

/// `manager` is recorded as the owner of what the create set; `None` when the caller (apply) did.
fn create(
    st: &mut State,
    k: Kind,
    namespace: &str,
    mut obj: Value,
    manager: Option<&str>,
) -> HttpResponse {
    if !obj.is_object() {
        return bad_request("the body must be a JSON object".into());
    }
    if let Err(r) = check_type(k, &obj) {
        return r;
    }
    let meta = obj["metadata"].as_object().cloned().unwrap_or_default();
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) => format!("{prefix}{}", random_suffix()),
            None => {
                return invalid(
                    k,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                )
            }
        },
    };
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
        if k.namespaced && ns != namespace {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            );
        }
    }
    let key: Key = (
        k.resource,
        if k.namespaced {
            namespace.to_owned()
        } else {
            String::new()
        },
        name.clone(),
    );
    if let Err(causes) = validate(k, &name, &obj) {
        return invalid(k, &name, causes);
    }
    if st.objects.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(k)),
            json!({"name": name, "group": group(k), "kind": k.resource}),
        );
    }
    let rv = st.next_rv();
    let m = obj["metadata"].as_object_mut().expect("validated");
    m.insert("name".into(), json!(name));
    if k.namespaced {
        m.insert("namespace".into(), json!(namespace));
    }
    m.insert("resourceVersion".into(), json!(rv));
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if k.resource == "deployments" {
        m.insert("generation".into(), json!(1));
    }
    let o = obj.as_object_mut().expect("object");
    o.insert("apiVersion".into(), json!(k.group_version));
    o.insert("kind".into(), json!(k.kind));
    match k.resource {
        "pods" => {
            o.insert("status".into(), json!({"phase": "Pending"}));
        }
        "deployments" => {
            o.insert("status".into(), json!({}));
        }
        "secrets" => normalise_secret(o),
        _ => {}
    }
    if let Some(m) = manager {
        apply::track_update(k, None, &mut obj, m);
    }
    st.created_at.insert(key.clone(), Instant::now());
    st.objects.insert(key, obj.clone());
    HttpResponse::Created()
        .content_type("application/json")
        .body(obj.to_string())
}

/// The API server turns `stringData` into base64 `data` and never returns `stringData`.
fn normalise_secret(o: &mut Map<String, Value>) {
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o
            .entry("data")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("data is an object");
        for (key, v) in sd {
            let bytes = v.as_str().unwrap_or("").as_bytes().to_vec();
            data.insert(
                key,
                serde_json::to_value(k8s_openapi::ByteString(bytes)).expect("base64"),
            );
        }
    }
}

/// `manager` is recorded as the owner of what the write changed; `None` when the caller (apply) did.
fn update(
    st: &mut State,
    k: Kind,
    namespace: &str,
    name: &str,
    body: Value,
    is_patch: bool,
    manager: Option<&str>,
) -> HttpResponse {
    let ns = if k.namespaced {
        namespace.to_owned()
    } else {
        String::new()
    };
    let key: Key = (k.resource, ns, name.to_owned());
    let Some(current) = st.objects.get(&key).cloned() else {
        return not_found(k, name);
    };
    let current_rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
        if rv != current_rv {
            return conflict(k, name);
        }
    }
    let mut next = if is_patch {
        let mut v = current.clone();
        merge(&mut v, &body);
        v
    } else {
        if !body.is_object() {
            return bad_request("the body must be a JSON object".into());
        }
        if let Err(r) = check_type(k, &body) {
            return r;
        }
        if body["metadata"]["name"].as_str() != Some(name) {
            return bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                body["metadata"]["name"].as_str().unwrap_or("")
            ));
        }
        body
    };
    if let Err(causes) = validate(k, name, &next) {
        return invalid(k, name, causes);
    }
    if k.resource == "pods" && next["spec"] != current["spec"] {
        return invalid(
            k,
            name,
            vec![("spec".into(), "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`".into())],
        );
    }
    if let Err(causes) = immutable::check(k, &current, &next) {
        return invalid(k, name, causes);
    }
    // Server-owned fields survive every write of the main resource.
    let rv = st.next_rv();
    let o = next.as_object_mut().expect("object");
    o.insert("apiVersion".into(), json!(k.group_version));
    o.insert("kind".into(), json!(k.kind));
    if let Some(s) = current.get("status") {
        o.insert("status".into(), s.clone());
    }
    if k.resource == "secrets" {
        normalise_secret(o);
    }
    let m = o
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("metadata object");
    for f in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "generation",
    ] {
        match current["metadata"].get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    m.insert("resourceVersion".into(), json!(rv));
    if k.resource == "deployments" && next["spec"] != current["spec"] {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        next["metadata"]["generation"] = json!(g);
    }
    if let Some(m) = manager {
        apply::track_update(k, Some(&current), &mut next, m);
    }
    st.objects.insert(key, next.clone());
    ok_json(&next)
}

fn delete(st: &mut State, k: Kind, namespace: &str, name: &str, opts: &Value) -> HttpResponse {
    let ns = if k.namespaced {
        namespace.to_owned()
    } else {
        String::new()
    };
    let key: Key = (k.resource, ns, name.to_owned());
    let Some(current) = st.objects.get(&key).cloned() else {
        return not_found(k, name);
    };
    let pre = &opts["preconditions"];
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if current["metadata"]["resourceVersion"].as_str() != Some(rv) {
            return conflict(k, name);
        }
    }
    if let Some(uid) = pre["uid"].as_str() {
        if current["metadata"]["uid"].as_str() != Some(uid) {
            return conflict(k, name);
        }
    }
    let grace = opts["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if k.resource == "pods" && grace > 0 && st.agents.contains_key(&key) {
        // Graceful: the kubelet sends SIGTERM and removes the pod once the agent exited.
        if current["metadata"].get("deletionTimestamp").is_some() {
            return ok_json(&current);
        }
        let rv = st.next_rv();
        let obj = st.objects.get_mut(&key).expect("present");
        obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        obj["metadata"]["resourceVersion"] = json!(rv);
        let out = obj.clone();
        if let Some(a) = st.agents.get_mut(&key) {
            a.grace = Duration::from_secs(grace as u64);
        }
        return ok_json(&out);
    }
    st.objects.remove(&key);
    st.static_pods.remove(&key);
    if let Some(mut a) = st.agents.remove(&key) {
        let _ = a.child.kill();
        let _ = a.child.wait();
    }
    ok_json(&current)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (key, v) in p {
                if v.is_null() {
                    t.remove(key);
                } else {
                    merge(t.entry(key.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Validation

fn check_type(k: Kind, obj: &Value) -> Result<(), HttpResponse> {
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if (!av.is_empty() && av != k.group_version) || (!kind.is_empty() && kind != k.kind) {
        return Err(bad_request(format!(
            "the API version in the data ({av}) / kind ({kind}) does not match the expected {}/{}",
            k.group_version, k.kind
        )));
    }
    if !obj["metadata"].is_object() && !obj["metadata"].is_null() {
        return Err(bad_request("metadata must be an object".into()));
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value (or a key's name part): ≤ 63, alphanumerics with `-_.` inside.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c)))
}

fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(is_dns_subdomain)
}

fn validate(k: Kind, name: &str, obj: &Value) -> Result<(), Vec<(String, String)>> {
    let mut errs = Vec::new();
    let name_ok = if k.max_name == 63 {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !name_ok {
        errs.push((
            "metadata.name".into(),
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 {} must consist of lower case alphanumeric characters or '-' (at most {} characters)",
                if k.max_name == 63 { "label" } else { "subdomain" },
                k.max_name
            ),
        ));
    }
    check_labels("metadata.labels", &obj["metadata"]["labels"], &mut errs);
    let spec = &obj["spec"];
    match k.resource {
        "pods" => check_pod_spec("spec", spec, &mut errs),
        "deployments" => {
            if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
                errs.push((
                    "spec.replicas".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                ));
            }
            let sel = &spec["selector"]["matchLabels"];
            if sel.as_object().is_none_or(Map::is_empty) {
                errs.push(("spec.selector".into(), "Required value".into()));
            }
            let tl = &spec["template"]["metadata"]["labels"];
            check_labels("spec.template.metadata.labels", tl, &mut errs);
            if let Some(sel) = sel.as_object() {
                if sel.iter().any(|(key, v)| tl.get(key) != Some(v)) {
                    errs.push((
                        "spec.template.metadata.labels".into(),
                        "Invalid value: `selector` does not match template `labels`".into(),
                    ));
                }
            }
            check_pod_spec("spec.template.spec", &spec["template"]["spec"], &mut errs);
        }
        "persistentvolumes" => {
            if spec["capacity"]["storage"].as_str().is_none() {
                errs.push(("spec.capacity".into(), "Required value".into()));
            }
            if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
                errs.push(("spec.accessModes".into(), "Required value".into()));
            }
            let csi = &spec["csi"];
            if !csi.is_object() {
                errs.push((
                    "spec".into(),
                    "Required value: must specify a volume type".into(),
                ));
            } else if csi["driver"].as_str().is_none_or(str::is_empty)
                || csi["volumeHandle"].as_str().is_none_or(str::is_empty)
            {
                errs.push((
                    "spec.csi".into(),
                    "Required value: driver and volumeHandle".into(),
                ));
            }
        }
        "persistentvolumeclaims" => {
            if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
                errs.push((
                    "spec.accessModes".into(),
                    "Required value: at least 1 access mode is required".into(),
                ));
            }
            if spec["resources"]["requests"]["storage"].as_str().is_none() {
                errs.push(("spec.resources[storage]".into(), "Required value".into()));
            }
        }
        "secrets" => {
            if let Some(data) = obj["data"].as_object() {
                for (key, v) in data {
                    let key_ok = !key.is_empty()
                        && key
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
                    if !key_ok {
                        errs.push((format!("data[{key}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into()));
                    }
                    if serde_json::from_value::<k8s_openapi::ByteString>(v.clone()).is_err() {
                        errs.push((
                            format!("data[{key}]"),
                            "Invalid value: illegal base64 data".into(),
                        ));
                    }
                }
            }
        }
        "events" => {
            let involved = &obj["involvedObject"];
            if involved["kind"].as_str().is_none_or(str::is_empty)
                || involved["name"].as_str().is_none_or(str::is_empty)
            {
                errs.push((
                    "involvedObject".into(),
                    "Required value: kind and name".into(),
                ));
            }
            if obj["reason"].as_str().is_none_or(str::is_empty) {
                errs.push(("reason".into(), "Required value".into()));
            }
            if !matches!(obj["type"].as_str(), Some("Normal" | "Warning")) {
                errs.push((
                    "type".into(),
                    "Unsupported value: supported values: \"Normal\", \"Warning\"".into(),
                ));
            }
        }
        "leases"
            if spec["leaseDurationSeconds"]
                .as_i64()
                .is_some_and(|d| d <= 0) =>
        {
            errs.push((
                "spec.leaseDurationSeconds".into(),
                "Invalid value: must be greater than 0".into(),
            ));
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

fn check_labels(field: &str, labels: &Value, errs: &mut Vec<(String, String)>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (key, v) in map {
        if !is_label_key(key) {
            errs.push((field.to_owned(), format!("Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'")));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => errs.push((
                field.to_owned(),
                format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)"),
            )),
        }
    }
}

fn check_pod_spec(field: &str, spec: &Value, errs: &mut Vec<(String, String)>) {
    let containers = spec["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        errs.push((format!("{field}.containers"), "Required value".into()));
    }
    let volumes: HashSet<&str> = spec["volumes"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for (i, c) in containers.into_iter().flatten().enumerate() {
        let f = format!("{field}.containers[{i}]");
        if !c["name"].as_str().is_some_and(is_dns_label) {
            errs.push((format!("{f}.name"), "Required value".into()));
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            errs.push((format!("{f}.image"), "Required value".into()));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let n = m["name"].as_str().unwrap_or("");
            if !volumes.contains(n) {
                errs.push((
                    format!("{f}.volumeMounts.name"),
                    format!("Not found: \"{n}\""),
                ));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let n = e["name"].as_str().unwrap_or("");
            let ok = !n.is_empty()
                && !n.as_bytes()[0].is_ascii_digit()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !ok {
                errs.push((format!("{f}.env.name"), format!("Invalid value: \"{n}\"")));
            }
            let sk = &e["valueFrom"]["secretKeyRef"];
            if sk.is_object()
                && (sk["name"].as_str().is_none_or(str::is_empty)
                    || sk["key"].as_str().is_none_or(str::is_empty))
            {
                errs.push((
                    format!("{f}.env.valueFrom.secretKeyRef"),
                    "Required value: name and key".into(),
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let mut reqs = Vec::new();
    for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{p:?}: expected (values)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let req = if let Some((key, v)) = p.split_once("!=") {
            Req::NotEq(key.trim().into(), v.trim().into())
        } else if let Some((key, v)) = p.split_once("==") {
            Req::Eq(key.trim().into(), v.trim().into())
        } else if let Some((key, v)) = p.split_once('=') {
            Req::Eq(key.trim().into(), v.trim().into())
        } else if let Some((key, rest)) = p.split_once(" notin ") {
            Req::NotIn(key.trim().into(), set(rest)?)
        } else if let Some((key, rest)) = p.split_once(" in ") {
            Req::In(key.trim().into(), set(rest)?)
        } else if let Some(key) = p.strip_prefix('!') {
            Req::NotExists(key.trim().into())
        } else {
            Req::Exists(p.into())
        };
        let key = match &req {
            Req::Eq(k, _)
            | Req::NotEq(k, _)
            | Req::In(k, _)
            | Req::NotIn(k, _)
            | Req::Exists(k)
            | Req::NotExists(k) => k,
        };
        if !is_label_key(key) {
            return Err(format!("invalid label key {key:?}"));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

fn matches(reqs: &[Req], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::NotEq(k, v) => get(k) != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

// ---------------------------------------------------------------------------------------------
// Kubelet, scheduler and ReplicaSet controller

async fn kubelet_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let mut st = shared.lock();
        reconcile_deployments(&mut st);
        run_pods(&shared, &mut st);
    }
}

fn reconcile_deployments(st: &mut State) {
    let deployments: Vec<(Key, Value)> = st
        .objects
        .iter()
        .filter(|(k, _)| k.0 == "deployments")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (dkey, d) in deployments {
        let ns = dkey.1.clone();
        let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let selector: Vec<Req> = d["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| Req::Eq(k.clone(), v.as_str().unwrap_or("").into()))
                    .collect()
            })
            .unwrap_or_default();
        let owned: Vec<Key> = st
            .objects
            .iter()
            .filter(|(k, v)| {
                k.0 == "pods"
                    && k.1 == ns
                    && v["metadata"].get("deletionTimestamp").is_none()
                    && matches(&selector, &v["metadata"]["labels"])
            })
            .map(|(k, _)| k.clone())
            .collect();
        let have = owned.len();
        for key in owned.iter().skip(want) {
            st.objects.remove(key);
        }
        for _ in have..want {
            let name = format!("{}-{}", dkey.2, random_suffix());
            let template = &d["spec"]["template"];
            let rv = st.next_rv();
            let key: Key = ("pods", ns.clone(), name.clone());
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"],
                             "resourceVersion": rv, "uid": uuid::Uuid::new_v4().to_string(),
                             "creationTimestamp": now_rfc3339(),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "name": dkey.2, "uid": d["metadata"]["uid"], "controller": true}]},
                "spec": template["spec"],
                "status": {"phase": "Pending"},
            });
            st.created_at.insert(key.clone(), Instant::now());
            st.objects.insert(key, pod);
        }
        let ready = owned.len().min(want);
        if let Some(obj) = st.objects.get_mut(&dkey) {
            obj["status"] = json!({"replicas": want, "readyReplicas": ready, "observedGeneration": obj["metadata"]["generation"]});
        }
    }
}

fn waiting(pod: &mut Value, reason: &str, message: &str) {
    let image = pod["spec"]["containers"][0]["image"].clone();
    pod["status"]["containerStatuses"] = json!([{
        "name": pod["spec"]["containers"][0]["name"], "image": image, "imageID": "",
        "ready": false, "restartCount": 0, "started": false,
        "state": {"waiting": {"reason": reason, "message": message}},
    }]);
}

fn run_pods(shared: &Shared, st: &mut State) {
    shared
        .s3_mounts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k, mounts| {
            let keep = st.objects.contains_key(k) || st.agents.contains_key(k);
            if !keep {
                let mut refused = shared.s3_refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.extend(mounts.iter().flat_map(Mount::refusals));
            }
            keep
        });
    let delay = shared.opts.pod_start_delay;
    let keys: Vec<Key> = st
        .objects
        .keys()
        .filter(|k| k.0 == "pods")
        .cloned()
        .collect();
    for key in keys {
        if st.static_pods.contains(&key) {
            continue;
        }
        let pod = st.objects.get(&key).expect("listed").clone();
        // Termination: SIGTERM once (after `termination_delay`), SIGKILL after the grace period,
        // remove when the agent exited.
        if pod["metadata"].get("deletionTimestamp").is_some() {
            let done = match st.agents.get_mut(&key) {
                None => true,
                Some(a) => {
                    let since = *a.terminating_since.get_or_insert_with(Instant::now);
                    if !a.sigterm_sent && since.elapsed() >= shared.opts.termination_delay {
                        // SAFETY: kill(2) on the agent process this kubelet started.
                        unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
                        a.sigterm_sent = true;
                    }
                    if since.elapsed() > a.grace {
                        let _ = a.child.kill();
                    }
                    !matches!(a.child.try_wait(), Ok(None))
                }
            };
            if done {
                if let Some(mut a) = st.agents.remove(&key) {
                    let _ = a.child.wait();
                }
                st.objects.remove(&key);
            }
            continue;
        }
        let phase = pod["status"]["phase"].as_str().unwrap_or("").to_owned();
        let name = key.2.clone();
        if phase == "Running" {
            // An agent that died is a crash loop, as the kubelet would report it.
            if let Some(a) = st.agents.get_mut(&key) {
                if !matches!(a.child.try_wait(), Ok(None)) {
                    let rv = st.next_rv();
                    let obj = st.objects.get_mut(&key).expect("present");
                    if obj["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                        != "CrashLoopBackOff"
                    {
                        waiting(
                            obj,
                            "CrashLoopBackOff",
                            "back-off restarting failed container",
                        );
                        obj["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
                        obj["metadata"]["resourceVersion"] = json!(rv);
                    }
                }
            }
            continue;
        }
        if phase != "Pending" {
            continue;
        }
        let created = st
            .created_at
            .get(&key)
            .copied()
            .unwrap_or_else(Instant::now);
        if created.elapsed() < delay {
            continue;
        }
        if pod["status"]["containerStatuses"][0]["state"]["waiting"].is_object()
            || pod["status"]["conditions"][0]["reason"] == "Unschedulable"
        {
            continue;
        }
        let rv = st.next_rv();
        if st.unschedulable.contains(&name) {
            let obj = st.objects.get_mut(&key).expect("present");
            obj["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory."}]);
            obj["metadata"]["resourceVersion"] = json!(rv);
            continue;
        }
        let node = match pod["spec"]["nodeName"].as_str() {
            Some(n) => n.to_owned(),
            None => {
                st.next_node += 1;
                format!("node-{}", (st.next_node - 1) % shared.opts.nodes.max(1) + 1)
            }
        };
        let image = pod["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let failure = st
            .image_failures
            .get(&image)
            .or_else(|| st.pod_failures.get(&name))
            .cloned();
        let is_tenant = pod["metadata"]["labels"]["app"] == "zeroclaw" || is_warm_agent(&pod);
        let port = agent_port(&pod).unwrap_or(shared.agent_port_default);
        let ip = free_loopback_ip(&mut st.used_ips, port);
        let mut started = Ok(None);
        if failure.is_none() && is_tenant {
            started = start_agent(shared, st, &key, &pod, ip);
        }
        let obj = st.objects.get_mut(&key).expect("present");
        obj["spec"]["nodeName"] = json!(node);
        obj["metadata"]["resourceVersion"] = json!(rv);
        obj["status"]["hostIP"] = json!(format!("10.0.0.{}", node.trim_start_matches("node-")));
        match (failure, started) {
            (Some(reason), _) => {
                let msg = if reason.contains("Image") {
                    format!("Back-off pulling image \"{image}\"")
                } else {
                    format!("container failed: {reason}")
                };
                if reason.contains("Crash") {
                    obj["status"]["phase"] = json!("Running");
                    obj["status"]["podIP"] = json!(ip.to_string());
                }
                waiting(obj, &reason, &msg);
            }
            (None, Err(reason)) => waiting(obj, "CreateContainerConfigError", &reason),
            (None, Ok(child)) => {
                obj["status"]["phase"] = json!("Running");
                obj["status"]["podIP"] = json!(ip.to_string());
                obj["status"]["podIPs"] = json!([{"ip": ip.to_string()}]);
                obj["status"]["startTime"] = json!(now_rfc3339());
                obj["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]);
                obj["status"]["containerStatuses"] = json!([{
                    "name": obj["spec"]["containers"][0]["name"], "image": image, "imageID": "",
                    "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": now_rfc3339()}},
                }]);
                if let Some(child) = child {
                    st.agents.insert(
                        key.clone(),
                        Agent {
                            child,
                            terminating_since: None,
                            sigterm_sent: false,
                            grace: Duration::from_secs(30),
                        },
                    );
                }
            }
        }
    }
}

/// A warm-pool pod of warm agents (it carries the pool's assignment credential): its agent runs,
/// waiting for `POST /assign`.
fn is_warm_agent(pod: &Value) -> bool {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .is_some_and(|env| env.iter().any(|e| e["name"] == "ASSIGN_TOKEN"))
}

fn agent_port(pod: &Value) -> Option<u16> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "AGENT_PORT")?["value"]
        .as_str()?
        .parse()
        .ok()
}

/// A loopback address no other pod (of any fake in any test process) holds `port` on.
fn free_loopback_ip(used: &mut HashSet<Ipv4Addr>, port: u16) -> Ipv4Addr {
    loop {
        let ip = Ipv4Addr::new(
            127,
            rand::random_range(1..=254),
            rand::random(),
            rand::random_range(1..=254),
        );
        if used.contains(&ip) {
            continue;
        }
        if TcpListener::bind(SocketAddrV4::new(ip, port)).is_ok() {
            used.insert(ip);
            return ip;
        }
    }
}

/// Host directory behind a pod volume (with the PV's mount options for an S3 CSI volume), or an
/// error like the kubelet's when its source is missing.
fn volume_dir(
    shared: &Shared,
    st: &State,
    key: &Key,
    pod: &Value,
    volume: &str,
) -> Result<(PathBuf, Option<MountOptions>), String> {
    let v = pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == volume))
        .ok_or_else(|| format!("volume {volume:?} not found"))?;
    if v.get("emptyDir").is_some() {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("pod");
        return Ok((shared.root.join("pods").join(uid).join(volume), None));
    }
    if let Some(cm) = v["configMap"]["name"].as_str() {
        // The kubelet projects each key as a file (read-only in the pod; a copy per pod here).
        let obj = st
            .objects
            .get(&("configmaps", key.1.clone(), cm.to_owned()))
            .ok_or_else(|| format!("configmap \"{cm}\" not found"))?;
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("pod");
        let dir = shared.root.join("pods").join(uid).join(volume);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (k, v) in obj["data"].as_object().into_iter().flatten() {
            std::fs::write(dir.join(k), v.as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        }
        return Ok((dir, None));
    }
    let claim = v["persistentVolumeClaim"]["claimName"]
        .as_str()
        .ok_or_else(|| format!("volume {volume:?} has an unsupported source"))?;
    let pvc = st
        .objects
        .get(&("persistentvolumeclaims", key.1.clone(), claim.to_owned()))
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap_or("");
    if pv_name.is_empty() && pvc["spec"]["storageClassName"].is_string() {
        // Dynamic provisioning (a local-path provisioner): one directory per claim.
        return Ok((
            shared.root.join("provisioned").join(&key.1).join(claim),
            None,
        ));
    }
    let pv = st
        .objects
        .get(&("persistentvolumes", String::new(), pv_name.to_owned()))
        .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
    let bucket = pv["spec"]["csi"]["volumeAttributes"]["bucketName"]
        .as_str()
        .unwrap_or("bucket");
    let options = || {
        pv["spec"]["mountOptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    };
    let prefix = options()
        .find_map(|o| o.strip_prefix("prefix "))
        .unwrap_or("");
    let rules =
        (pv["spec"]["csi"]["driver"] == "s3.csi.aws.com").then(|| MountOptions::from_pv(options()));
    Ok((shared.root.join("s3").join(bucket).join(prefix), rules))
}

/// Starts `tenant-agent` for a tenant pod with the pod's environment on `ip`.
fn start_agent(
    shared: &Shared,
    st: &State,
    key: &Key,
    pod: &Value,
    ip: Ipv4Addr,
) -> Result<Option<Child>, String> {
    let container = &pod["spec"]["containers"][0];
    let mut mounts = Vec::new();
    let mut s3_mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = m["name"].as_str().unwrap_or("");
        let (mut dir, rules) = volume_dir(shared, st, key, pod, volume)?;
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if let Some(rules) = rules {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("pod");
            let at = shared.root.join("pods").join(uid).join(volume);
            let mount = Mount::at(&at, &dir, rules)
                .map_err(|e| format!("MountVolume.SetUp failed for volume {volume:?}: {e}"))?;
            s3_mounts.push(mount);
            dir = at;
        }
        mounts.push((m["mountPath"].as_str().unwrap_or("").to_owned(), dir));
    }
    let mut cmd = Command::new(&shared.opts.agent_binary);
    let logs = shared.root.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let current = logs.join(format!("{}.log", key.2));
    if current.exists() {
        // The last run's output stays readable as the "previous container" log.
        let _ = std::fs::rename(&current, logs.join(format!("{}.previous.log", key.2)));
    }
    let log = std::fs::File::create(current).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENT_HOST", ip.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("");
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_owned();
            for (path, dir) in &mounts {
                if let Some(rest) = v.strip_prefix(path.as_str()) {
                    v = format!("{}{rest}", dir.display());
                    break;
                }
            }
            v
        } else if let Some(sk) = e["valueFrom"]["secretKeyRef"].as_object() {
            let sname = sk.get("name").and_then(Value::as_str).unwrap_or("");
            let skey = sk.get("key").and_then(Value::as_str).unwrap_or("");
            let optional = sk.get("optional").and_then(Value::as_bool) == Some(true);
            let secret = st
                .objects
                .get(&("secrets", key.1.clone(), sname.to_owned()));
            let secret = match secret {
                Some(s) => s,
                None if optional => continue,
                None => return Err(format!("secret \"{sname}\" not found")),
            };
            let raw = secret["data"][skey].clone();
            if raw.is_null() && optional {
                continue;
            }
            let bytes: k8s_openapi::ByteString = serde_json::from_value(raw)
                .map_err(|_| format!("couldn't find key {skey} in Secret {}/{sname}", key.1))?;
            String::from_utf8_lossy(&bytes.0).into_owned()
        } else {
            continue;
        };
        cmd.env(name, value);
    }
    for (k, v) in &shared.opts.agent_env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("failed to start container: {e}"))?;
    if !s3_mounts.is_empty() {
        shared
            .s3_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), s3_mounts);
    }
    Ok(Some(child))
}
