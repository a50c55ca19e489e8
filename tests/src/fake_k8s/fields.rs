//! Field sets of server-side apply: the leaf paths an object sets, in the `fieldsV1` form
//! `metadata.managedFields` records them, with the list and map types of the Kubernetes schema the
//! fake's objects need (associative lists merge by key, everything else is granular or atomic).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Elem {
    /// A field of an object (`f:name`).
    Field(String),
    /// An item of an associative list by its key fields (`k:{"name":"agent"}`), canonical JSON.
    Key(String),
}

pub(super) type Path = Vec<Elem>;
pub(super) type FieldSet = BTreeSet<Path>;

/// Metadata the API server owns: never part of a field set, never merged from an applied object.
pub(super) const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Keys of the associative lists (`x-kubernetes-list-type: map`) among the objects the fake serves;
/// every other list is atomic (owned and replaced as a whole).
fn list_keys(field: &str) -> Option<&'static [&'static str]> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        "ports" => Some(&["containerPort", "protocol"]),
        "ownerReferences" => Some(&["uid"]),
        _ => None,
    }
}

/// Structs the schema marks `x-kubernetes-map-type: atomic` (a `LabelSelector`).
fn atomic_map(field: &str) -> bool {
    field == "selector"
}

fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let o = item.as_object()?;
    let k: Map<String, Value> = keys
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), o.get(*name)?.clone())))
        .collect();
    (!k.is_empty()).then(|| Value::Object(k).to_string())
}

/// The list's key fields when every item has them (else the list is treated as atomic).
fn keyed<'a>(
    field: &str,
    items: impl IntoIterator<Item = &'a Value>,
) -> Option<&'static [&'static str]> {
    let keys = list_keys(field)?;
    items
        .into_iter()
        .all(|i| item_key(i, keys).is_some())
        .then_some(keys)
}

/// Whether the path names a list item (the `.` of `k:{...}`) rather than a value.
pub(super) fn is_item(p: &Path) -> bool {
    matches!(p.last(), Some(Elem::Key(_)))
}

/// One path is the other or inside it: ownership of one covers the other.
pub(super) fn overlaps(p: &Path, q: &Path) -> bool {
    p.starts_with(q) || q.starts_with(p)
}

/// The fields an object sets (what its writer owns), without type, status and server metadata.
pub(super) fn set_of(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        match k.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if !SERVER_METADATA.contains(&mk.as_str()) {
                        let path = vec![Elem::Field(k.clone()), Elem::Field(mk.clone())];
                        walk(mv, path, mk, &mut out);
                    }
                }
            }
            _ => walk(v, vec![Elem::Field(k.clone())], k, &mut out),
        }
    }
    out
}

fn walk(v: &Value, path: Path, field: &str, out: &mut FieldSet) {
    match v {
        Value::Null => {}
        Value::Object(m) if !m.is_empty() && !atomic_map(field) => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(Elem::Field(k.clone()));
                walk(child, p, k, out);
            }
        }
        Value::Array(items) => match keyed(field, items) {
            Some(keys) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Elem::Key(item_key(item, keys).expect("keyed")));
                    out.insert(p.clone());
                    for (k, child) in item.as_object().into_iter().flatten() {
                        let mut q = p.clone();
                        q.push(Elem::Field(k.clone()));
                        walk(child, q, k, out);
                    }
                }
            }
            None => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The value at `path`, if the object has it.
pub(super) fn get<'a>(v: &'a Value, path: &[Elem]) -> Option<&'a Value> {
    let mut cur = v;
    let mut field = "";
    for e in path {
        cur = match e {
            Elem::Field(f) => {
                field = f;
                cur.get(f)?
            }
            Elem::Key(k) => {
                let keys = list_keys(field)?;
                let items = cur.as_array()?;
                items
                    .iter()
                    .find(|i| item_key(i, keys).as_deref() == Some(k))?
            }
        };
    }
    Some(cur)
}

fn get_mut<'a>(v: &'a mut Value, path: &[Elem]) -> Option<&'a mut Value> {
    let mut cur = v;
    let mut field = String::new();
    for e in path {
        cur = match e {
            Elem::Field(f) => {
                field = f.clone();
                cur.get_mut(f)?
            }
            Elem::Key(k) => {
                let keys = list_keys(&field)?;
                let items = cur.as_array_mut()?;
                items
                    .iter_mut()
                    .find(|i| item_key(i, keys).as_deref() == Some(k))?
            }
        };
    }
    Some(cur)
}

/// Removes the field or list item at `path` (nothing when it is absent).
pub(super) fn remove(v: &mut Value, path: &[Elem]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let list_field = match parent.last() {
        Some(Elem::Field(f)) => f.clone(),
        _ => String::new(),
    };
    let Some(p) = get_mut(v, parent) else {
        return;
    };
    match last {
        Elem::Field(f) => {
            if let Some(o) = p.as_object_mut() {
                o.remove(f);
            }
        }
        Elem::Key(k) => {
            if let (Some(keys), Some(items)) = (list_keys(&list_field), p.as_array_mut()) {
                items.retain(|i| item_key(i, keys).as_deref() != Some(k));
            }
        }
    }
}

/// Merges an applied configuration into the live object: objects field by field, associative
/// lists item by item (new items appended), atomic values replaced.
pub(super) fn merge(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !atomic_map(field) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match l.get_mut(k) {
                    Some(lv) => merge(lv, v, k),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) if keyed(field, l.iter().chain(a)).is_some() => {
            let keys = list_keys(field).expect("keyed");
            for item in a {
                let key = item_key(item, keys);
                match l.iter_mut().find(|i| item_key(i, keys) == key) {
                    Some(li) => merge(li, item, ""),
                    None => l.push(item.clone()),
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

fn v1_key(e: &Elem) -> String {
    match e {
        Elem::Field(f) => format!("f:{f}"),
        Elem::Key(k) => format!("k:{k}"),
    }
}

/// The `fieldsV1` trie of a field set (`{"f:data": {"f:tenant.json": {}}}`; `"."` marks a path
/// that is owned itself and has owned children, as list items do).
pub(super) fn to_v1(set: &FieldSet) -> Value {
    fn build(paths: &[&[Elem]]) -> Value {
        let mut owned = false;
        let mut children: BTreeMap<String, Vec<&[Elem]>> = BTreeMap::new();
        for p in paths {
            match p.split_first() {
                None => owned = true,
                Some((e, rest)) => children.entry(v1_key(e)).or_default().push(rest),
            }
        }
        let mut m: Map<String, Value> = children
            .into_iter()
            .map(|(k, ps)| (k, build(&ps)))
            .collect();
        if owned && !m.is_empty() {
            m.insert(".".into(), json!({}));
        }
        Value::Object(m)
    }
    let paths: Vec<&[Elem]> = set.iter().map(Vec::as_slice).collect();
    build(&paths)
}

/// The field set a `fieldsV1` trie records (unknown key kinds such as `v:` are skipped).
pub(super) fn from_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    from_v1_into(v, Vec::new(), &mut out);
    out
}

fn from_v1_into(v: &Value, prefix: Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else {
        return;
    };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, child) in m {
        let e = if k == "." {
            out.insert(prefix.clone());
            continue;
        } else if let Some(f) = k.strip_prefix("f:") {
            Elem::Field(f.to_owned())
        } else if let Some(j) = k.strip_prefix("k:") {
            match serde_json::from_str::<Value>(j) {
                Ok(key) => Elem::Key(key.to_string()),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        let mut p = prefix.clone();
        p.push(e);
        from_v1_into(child, p, out);
    }
}

/// A path as the API server prints it in a conflict: `.spec.containers[name="agent"].image`.
pub(super) fn display(p: &Path) -> String {
    let mut s = String::new();
    for e in p {
        match e {
            Elem::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Elem::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(n, v)| format!("{n}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        }
    }
    s
}
