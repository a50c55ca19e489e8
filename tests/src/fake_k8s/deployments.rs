//! The ReplicaSet controller: a Deployment's replica pods made and removed.

use std::time::Instant;

use serde_json::{json, Value};

use super::objects::random_suffix;
use super::respond::now_rfc3339;
use super::selector::{matches, Req};
use super::store::{Key, State};

pub(super) fn reconcile_deployments(st: &mut State) {
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
