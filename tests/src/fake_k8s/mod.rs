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

mod apply;
mod deployments;
mod fields;
mod immutable;
mod kubelet;
mod logs;
mod objects;
mod process;
mod respond;
mod routes;
mod selector;
mod server;
mod store;
mod validate;
mod volumes;

pub use server::{agent_binary, FakeK8s, FakeK8sOptions};
