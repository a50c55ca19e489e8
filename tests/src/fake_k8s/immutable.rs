//! Fields the API server refuses to change once an object exists, checked on every update, merge
//! patch and apply (pod specs are checked beside `update`): a converging writer must not rely on
//! changing them.

use serde_json::{Map, Value};

use super::store::Kind;

/// PV spec fields an update may change; the rest is the volume source, fixed at creation.
const PV_MUTABLE: &[&str] = &[
    "capacity",
    "accessModes",
    "claimRef",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "mountOptions",
    "volumeAttributesClassName",
];

fn without(v: &Value, drop: impl Fn(&str) -> bool) -> Map<String, Value> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(f, _)| !drop(f))
        .map(|(f, v)| (f.clone(), v.clone()))
        .collect()
}

pub(super) fn check(k: Kind, current: &Value, next: &Value) -> Result<(), Vec<(String, String)>> {
    let mut errs = Vec::new();
    let (was, is) = (&current["spec"], &next["spec"]);
    let immutable = |errs: &mut Vec<(String, String)>, field: &str, v: &Value| {
        errs.push((
            field.to_owned(),
            format!("Invalid value: {v}: field is immutable"),
        ));
    };
    match k.resource {
        "persistentvolumes" => {
            let source = |s: &Value| {
                without(s, |f| {
                    PV_MUTABLE.contains(&f) || f == "volumeMode" || f == "nodeAffinity"
                })
            };
            if source(was) != source(is) {
                errs.push((
                    "spec.persistentvolumesource".into(),
                    "Forbidden: spec.persistentvolumesource is immutable after creation".into(),
                ));
            }
            for f in ["volumeMode", "nodeAffinity"] {
                if was[f] != is[f] {
                    immutable(&mut errs, &format!("spec.{f}"), &is[f]);
                }
            }
        }
        "persistentvolumeclaims" => {
            // Binding may set volumeName once; resources.requests may grow (expansion).
            let unbound = was["volumeName"].as_str().is_none_or(str::is_empty);
            let fixed = |s: &Value| {
                let mut m = without(s, |f| f == "volumeAttributesClassName");
                if unbound {
                    m.remove("volumeName");
                }
                if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("requests");
                }
                m
            };
            if fixed(was) != fixed(is) {
                errs.push((
                    "spec".into(),
                    "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into(),
                ));
            }
        }
        "deployments" if was["selector"] != is["selector"] => {
            immutable(&mut errs, "spec.selector", &is["selector"]);
        }
        "secrets" | "configmaps" => {
            let type_of = |o: &Value| o["type"].as_str().unwrap_or("Opaque").to_owned();
            if k.resource == "secrets" && type_of(current) != type_of(next) {
                immutable(&mut errs, "type", &next["type"]);
            }
            let frozen = current["immutable"] == true;
            let changed = ["data", "binaryData"]
                .iter()
                .any(|f| current[*f] != next[*f])
                || !next["stringData"].is_null()
                || next["immutable"] != true;
            if frozen && changed {
                errs.push((
                    "data".into(),
                    "Forbidden: field is immutable when `immutable` is set".into(),
                ));
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}
