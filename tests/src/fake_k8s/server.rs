//! The running fake: its options, start-up (the HTTP server and the kubelet), the test-facing
//! inspection and fault-injection calls, and the teardown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use serde_json::{json, Value};

use super::kubelet::kubelet_loop;
use super::respond::now_rfc3339;
use super::routes::handle;
use super::store::{kind_of, Key, Shared, State};
use crate::mountpoint::{Mount, Refusal};

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
        self.shared
            .lock()
            .objects
            .get(&k.key(namespace, name))
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
