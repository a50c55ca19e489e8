//! A tenant pod's agent process: its loopback IP and port, environment and mounts.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::store::{Key, Shared, State};
use super::volumes::volume_dir;
use crate::mountpoint::Mount;

/// A running agent process of a pod.
pub(super) struct Agent {
    pub(super) child: Child,
    pub(super) terminating_since: Option<Instant>,
    pub(super) sigterm_sent: bool,
    pub(super) grace: Duration,
}

pub(super) fn agent_port(pod: &Value) -> Option<u16> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "AGENT_PORT")?["value"]
        .as_str()?
        .parse()
        .ok()
}

/// A loopback address no other pod (of any fake in any test process) holds `port` on.
pub(super) fn free_loopback_ip(used: &mut HashSet<Ipv4Addr>, port: u16) -> Ipv4Addr {
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

/// Starts `tenant-agent` for a tenant pod with the pod's environment on `ip`.
pub(super) fn start_agent(
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
