//! The object store: the kinds served, object keys, resourceVersions, call counts and the state
//! the kubelet simulator keeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;

use super::process::Agent;
use super::server::FakeK8sOptions;
use crate::mountpoint::{Mount, Refusal};

#[derive(Clone, Copy)]
pub(super) struct Kind {
    pub(super) resource: &'static str,
    pub(super) kind: &'static str,
    pub(super) group_version: &'static str,
    pub(super) namespaced: bool,
    /// Pods' names end up as hostnames: DNS-1123 labels (63), others subdomains (253).
    pub(super) max_name: usize,
}

pub(super) const KINDS: &[Kind] = &[
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

impl Kind {
    /// The store key of `name`; a cluster-scoped kind's key has no namespace.
    pub(super) fn key(self, namespace: &str, name: &str) -> Key {
        let ns = if self.namespaced { namespace } else { "" };
        (self.resource, ns.to_owned(), name.to_owned())
    }
}

pub(super) fn kind_of(resource: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.resource == resource)
}

pub(super) fn qualified(k: Kind) -> String {
    match k.group_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", k.resource),
        None => k.resource.to_owned(),
    }
}

pub(super) type Key = (&'static str, String, String);

#[derive(Default)]
pub(super) struct State {
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) rv: u64,
    pub(super) counts: HashMap<(String, String), u64>,
    pub(super) image_failures: HashMap<String, String>,
    pub(super) pod_failures: HashMap<String, String>,
    pub(super) unschedulable: HashSet<String>,
    /// Pods inserted as already running with no process behind them.
    pub(super) static_pods: HashSet<Key>,
    pub(super) created_at: HashMap<Key, Instant>,
    pub(super) agents: HashMap<Key, Agent>,
    pub(super) used_ips: HashSet<Ipv4Addr>,
    pub(super) next_node: usize,
}

impl State {
    pub(super) fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub(super) fn count(&mut self, verb: &str, resource: &str) {
        *self
            .counts
            .entry((verb.to_owned(), resource.to_owned()))
            .or_default() += 1;
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Each pod's S3 CSI mounts, unmounted once the pod is gone and its agent exited.
    pub(super) s3_mounts: Mutex<HashMap<Key, Vec<Mount>>>,
    /// What the S3 CSI mounts of removed pods refused.
    pub(super) s3_refused: Mutex<Vec<Refusal>>,
    pub(super) opts: FakeK8sOptions,
    pub(super) root: PathBuf,
    pub(super) agent_port_default: u16,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
