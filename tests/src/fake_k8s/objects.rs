//! Create, update (replace and merge patch), delete: resourceVersions, server-owned fields and
//! the field managers of what each write set.

use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::apply;
use super::immutable;
use super::respond::{
    bad_request, conflict, group, invalid, not_found, now_rfc3339, ok_json, status,
};
use super::store::{qualified, Kind, State};
use super::validate::{check_type, validate};

/// `manager` is recorded as the owner of what the create set; `None` when the caller (apply) did.
pub(super) fn create(
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
    let key = k.key(namespace, &name);
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
pub(super) fn update(
    st: &mut State,
    k: Kind,
    namespace: &str,
    name: &str,
    body: Value,
    is_patch: bool,
    manager: Option<&str>,
) -> HttpResponse {
    let key = k.key(namespace, name);
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

pub(super) fn delete(
    st: &mut State,
    k: Kind,
    namespace: &str,
    name: &str,
    opts: &Value,
) -> HttpResponse {
    let key = k.key(namespace, name);
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

pub(super) fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}
