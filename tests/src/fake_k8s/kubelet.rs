//! The kubelet and scheduler: pods placed on nodes, started, failed, terminated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::deployments::reconcile_deployments;
use super::process::{agent_port, free_loopback_ip, start_agent, Agent};
use super::respond::now_rfc3339;
use super::store::{Key, Shared, State};
use crate::mountpoint::Mount;

pub(super) async fn kubelet_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let mut st = shared.lock();
        reconcile_deployments(&mut st);
        run_pods(&shared, &mut st);
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

pub(super) fn run_pods(shared: &Shared, st: &mut State) {
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
