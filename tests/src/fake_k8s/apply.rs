//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) and the field ownership it rests
//! on: every write records what its manager set in `metadata.managedFields`, and an apply that would
//! change a field another manager owns is refused with 409 (listing the fields) unless forced.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::fields::{self, FieldSet, Path};
use super::objects::{create, update};
use super::respond::{bad_request, conflict, group, now_rfc3339, ok_json, status};
use super::store::{Kind, State};

/// One `metadata.managedFields` entry: what a manager owns, through apply or through other writes.
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Value,
    set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str) -> bool {
        self.manager == manager && self.operation == operation
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    let list = obj["metadata"]["managedFields"].as_array();
    list.into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str()?.to_owned(),
                operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                api_version: e["apiVersion"].as_str().unwrap_or("").to_owned(),
                time: e["time"].clone(),
                set: fields::from_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

/// Writes the entries that still own something (an empty one is dropped, as the API server does).
fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields::to_v1(&e.set),
            })
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// The manager a create, update or merge patch is recorded under: `fieldManager`, else the
/// program name of the User-Agent, as the API server does.
pub(super) fn manager_of(req: &HttpRequest, query: &HashMap<String, String>) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|p| !p.is_empty());
    ua.unwrap_or("unknown").chars().take(128).collect()
}

/// Records a create, update or merge patch in `next`'s managedFields (operation `Update`): its
/// manager owns the fields it changed, other managers lose them, removed fields go from everyone.
pub(super) fn track_update(k: Kind, current: Option<&Value>, next: &mut Value, manager: &str) {
    if let Some(c) = current {
        let kept = c["metadata"].get("managedFields").cloned();
        if let (Some(kept), Some(m)) = (kept, next["metadata"].as_object_mut()) {
            m.entry("managedFields").or_insert(kept);
        }
    }
    let before = current.map(fields::set_of).unwrap_or_default();
    let after = fields::set_of(next);
    let changed: FieldSet = after
        .iter()
        .filter(|p| {
            if fields::is_item(p) {
                !before.contains(*p)
            } else {
                current.is_none_or(|c| differs(c, next, p))
            }
        })
        .cloned()
        .collect();
    let removed: Vec<&Path> = before
        .iter()
        .filter(|p| fields::get(next, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    let mut managers = entries(next);
    for e in &mut managers {
        e.set.retain(|q| !removed.iter().any(|p| q.starts_with(p)));
        if !e.is(manager, "Update") {
            e.set
                .retain(|q| fields::is_item(q) || !changed.iter().any(|p| fields::overlaps(p, q)));
        }
    }
    let now = json!(now_rfc3339());
    match managers.iter_mut().find(|e| e.is(manager, "Update")) {
        Some(e) => {
            e.set.extend(changed);
            e.time = now;
        }
        None => managers.push(Entry {
            manager: manager.to_owned(),
            operation: "Update".into(),
            api_version: k.group_version.into(),
            time: now,
            set: changed,
        }),
    }
    write_entries(next, &managers);
}

/// `PATCH` with `application/apply-patch+yaml`: creates the object when absent, else merges the
/// applied configuration into it and removes what this manager applied before and no longer does
/// (unless another manager owns it too). Validation and immutability are those of an update.
pub(super) fn apply(
    st: &mut State,
    k: Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
    query: &HashMap<String, String>,
) -> HttpResponse {
    let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return bad_request("PATCH: fieldManager is required for apply requests".into());
    };
    let force = match query.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return bad_request(format!("invalid value for force: {v:?}")),
    };
    // JSON is YAML; kube-rs sends JSON.
    let applied = serde_json::from_slice::<Value>(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string()));
    let mut applied = match applied {
        Ok(v) if v.is_object() => v,
        Ok(_) => return bad_request("the apply configuration must be an object".into()),
        Err(e) => return bad_request(format!("error decoding the apply configuration: {e}")),
    };
    let (av, kind) = (
        applied["apiVersion"].as_str().unwrap_or(""),
        applied["kind"].as_str().unwrap_or(""),
    );
    if av != k.group_version || kind != k.kind {
        return bad_request(format!(
            "an apply configuration needs apiVersion {} and kind {} (got {av:?}, {kind:?})",
            k.group_version, k.kind
        ));
    }
    let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) else {
        return bad_request("an apply configuration needs metadata.name".into());
    };
    if meta.get("name").and_then(Value::as_str) != Some(name) {
        return bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta.get("name").and_then(Value::as_str).unwrap_or("")
        ));
    }
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
        if k.namespaced && ns != namespace {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            );
        }
    }
    if meta.get("managedFields").is_some_and(|m| !m.is_null()) {
        return bad_request("metadata.managedFields must be nil".into());
    }
    for f in fields::SERVER_METADATA {
        if !matches!(*f, "name" | "namespace" | "resourceVersion") {
            meta.remove(*f);
        }
    }
    if let Some(o) = applied.as_object_mut() {
        o.remove("status");
    }
    let key = k.key(namespace, name);
    let applies = fields::set_of(&applied);
    let entry = |set: FieldSet| Entry {
        manager: manager.clone(),
        operation: "Apply".into(),
        api_version: k.group_version.into(),
        time: json!(now_rfc3339()),
        set,
    };
    let Some(live) = st.objects.get(&key).cloned() else {
        if applied["metadata"].get("resourceVersion").is_some() {
            return conflict(k, name);
        }
        write_entries(&mut applied, &[entry(applies)]);
        return create(st, k, namespace, applied, None);
    };

    let mut managers = entries(&live);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for p in applies.iter().filter(|p| !fields::is_item(p)) {
        if !differs(&live, &applied, p) {
            continue;
        }
        for e in managers.iter().filter(|e| e.manager != *manager) {
            if e.set
                .iter()
                .any(|q| !fields::is_item(q) && fields::overlaps(p, q))
            {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return apply_conflict(k, name, &conflicts);
        }
        for e in managers.iter_mut().filter(|e| e.manager != *manager) {
            e.set.retain(|q| {
                fields::is_item(q) || !conflicts.iter().any(|(_, p)| fields::overlaps(p, q))
            });
        }
    }

    let mut next = live.clone();
    fields::merge(&mut next, &applied, "");
    let before = managers
        .iter()
        .find(|e| e.is(manager, "Apply"))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    for p in before.difference(&applies) {
        let mut owners = managers
            .iter()
            .filter(|e| !e.is(manager, "Apply"))
            .flat_map(|e| e.set.iter())
            .chain(&applies);
        // Kept while someone owns it or a field inside it; an owned ancestor (an empty object such
        // as `data: {}`) only keeps the field's parent in existence.
        if !owners.any(|q| q.starts_with(p)) {
            fields::remove(&mut next, p);
        }
    }
    match managers.iter_mut().find(|e| e.is(manager, "Apply")) {
        Some(e) => e.set = applies,
        None => managers.push(entry(applies)),
    }
    write_entries(&mut next, &managers);
    if next == live {
        // Nothing changed: no write, no new resourceVersion (as the API server skips a no-op apply).
        return ok_json(&live);
    }
    if let Some(e) = managers.iter_mut().find(|e| e.is(manager, "Apply")) {
        e.time = json!(now_rfc3339());
    }
    write_entries(&mut next, &managers);
    update(st, k, namespace, name, next, false, None)
}

/// Whether the write changes the value at `path`; an empty object (`emptyDir: {}`, `data: {}`) only
/// asks for the field to exist, whatever others put in it.
fn differs(live: &Value, written: &Value, path: &Path) -> bool {
    let (was, is) = (fields::get(live, path), fields::get(written, path));
    match is {
        Some(Value::Object(m)) if m.is_empty() => !was.is_some_and(Value::is_object),
        _ => was != is,
    }
}

fn apply_conflict(k: Kind, name: &str, conflicts: &[(String, Path)]) -> HttpResponse {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| format!("conflict with {m:?}: {}", fields::display(p)))
        .collect();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?}"),
                   "field": fields::display(p)})
        })
        .collect();
    status(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            lines.join("; ")
        ),
        json!({"name": name, "group": group(k), "kind": k.resource, "causes": causes}),
    )
}
