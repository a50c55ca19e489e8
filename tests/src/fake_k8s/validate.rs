//! Validation as the API server does it: names, labels, pod specs, types.

use std::collections::HashSet;

use actix_web::HttpResponse;
use serde_json::{Map, Value};

use super::respond::bad_request;
use super::store::Kind;

pub(super) fn check_type(k: Kind, obj: &Value) -> Result<(), HttpResponse> {
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if (!av.is_empty() && av != k.group_version) || (!kind.is_empty() && kind != k.kind) {
        return Err(bad_request(format!(
            "the API version in the data ({av}) / kind ({kind}) does not match the expected {}/{}",
            k.group_version, k.kind
        )));
    }
    if !obj["metadata"].is_object() && !obj["metadata"].is_null() {
        return Err(bad_request("metadata must be an object".into()));
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value (or a key's name part): ≤ 63, alphanumerics with `-_.` inside.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c)))
}

pub(super) fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(is_dns_subdomain)
}

pub(super) fn validate(k: Kind, name: &str, obj: &Value) -> Result<(), Vec<(String, String)>> {
    let mut errs = Vec::new();
    let name_ok = if k.max_name == 63 {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !name_ok {
        errs.push((
            "metadata.name".into(),
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 {} must consist of lower case alphanumeric characters or '-' (at most {} characters)",
                if k.max_name == 63 { "label" } else { "subdomain" },
                k.max_name
            ),
        ));
    }
    check_labels("metadata.labels", &obj["metadata"]["labels"], &mut errs);
    let spec = &obj["spec"];
    match k.resource {
        "pods" => check_pod_spec("spec", spec, &mut errs),
        "deployments" => {
            if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
                errs.push((
                    "spec.replicas".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                ));
            }
            let sel = &spec["selector"]["matchLabels"];
            if sel.as_object().is_none_or(Map::is_empty) {
                errs.push(("spec.selector".into(), "Required value".into()));
            }
            let tl = &spec["template"]["metadata"]["labels"];
            check_labels("spec.template.metadata.labels", tl, &mut errs);
            if let Some(sel) = sel.as_object() {
                if sel.iter().any(|(key, v)| tl.get(key) != Some(v)) {
                    errs.push((
                        "spec.template.metadata.labels".into(),
                        "Invalid value: `selector` does not match template `labels`".into(),
                    ));
                }
            }
            check_pod_spec("spec.template.spec", &spec["template"]["spec"], &mut errs);
        }
        "persistentvolumes" => {
            if spec["capacity"]["storage"].as_str().is_none() {
                errs.push(("spec.capacity".into(), "Required value".into()));
            }
            if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
                errs.push(("spec.accessModes".into(), "Required value".into()));
            }
            let csi = &spec["csi"];
            if !csi.is_object() {
                errs.push((
                    "spec".into(),
                    "Required value: must specify a volume type".into(),
                ));
            } else if csi["driver"].as_str().is_none_or(str::is_empty)
                || csi["volumeHandle"].as_str().is_none_or(str::is_empty)
            {
                errs.push((
                    "spec.csi".into(),
                    "Required value: driver and volumeHandle".into(),
                ));
            }
        }
        "persistentvolumeclaims" => {
            if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
                errs.push((
                    "spec.accessModes".into(),
                    "Required value: at least 1 access mode is required".into(),
                ));
            }
            if spec["resources"]["requests"]["storage"].as_str().is_none() {
                errs.push(("spec.resources[storage]".into(), "Required value".into()));
            }
        }
        "secrets" => {
            if let Some(data) = obj["data"].as_object() {
                for (key, v) in data {
                    let key_ok = !key.is_empty()
                        && key
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
                    if !key_ok {
                        errs.push((format!("data[{key}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into()));
                    }
                    if serde_json::from_value::<k8s_openapi::ByteString>(v.clone()).is_err() {
                        errs.push((
                            format!("data[{key}]"),
                            "Invalid value: illegal base64 data".into(),
                        ));
                    }
                }
            }
        }
        "events" => {
            let involved = &obj["involvedObject"];
            if involved["kind"].as_str().is_none_or(str::is_empty)
                || involved["name"].as_str().is_none_or(str::is_empty)
            {
                errs.push((
                    "involvedObject".into(),
                    "Required value: kind and name".into(),
                ));
            }
            if obj["reason"].as_str().is_none_or(str::is_empty) {
                errs.push(("reason".into(), "Required value".into()));
            }
            if !matches!(obj["type"].as_str(), Some("Normal" | "Warning")) {
                errs.push((
                    "type".into(),
                    "Unsupported value: supported values: \"Normal\", \"Warning\"".into(),
                ));
            }
        }
        "leases"
            if spec["leaseDurationSeconds"]
                .as_i64()
                .is_some_and(|d| d <= 0) =>
        {
            errs.push((
                "spec.leaseDurationSeconds".into(),
                "Invalid value: must be greater than 0".into(),
            ));
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

fn check_labels(field: &str, labels: &Value, errs: &mut Vec<(String, String)>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (key, v) in map {
        if !is_label_key(key) {
            errs.push((field.to_owned(), format!("Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'")));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => errs.push((
                field.to_owned(),
                format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)"),
            )),
        }
    }
}

fn check_pod_spec(field: &str, spec: &Value, errs: &mut Vec<(String, String)>) {
    let containers = spec["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        errs.push((format!("{field}.containers"), "Required value".into()));
    }
    let volumes: HashSet<&str> = spec["volumes"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for (i, c) in containers.into_iter().flatten().enumerate() {
        let f = format!("{field}.containers[{i}]");
        if !c["name"].as_str().is_some_and(is_dns_label) {
            errs.push((format!("{f}.name"), "Required value".into()));
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            errs.push((format!("{f}.image"), "Required value".into()));
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let n = m["name"].as_str().unwrap_or("");
            if !volumes.contains(n) {
                errs.push((
                    format!("{f}.volumeMounts.name"),
                    format!("Not found: \"{n}\""),
                ));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let n = e["name"].as_str().unwrap_or("");
            let ok = !n.is_empty()
                && !n.as_bytes()[0].is_ascii_digit()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !ok {
                errs.push((format!("{f}.env.name"), format!("Invalid value: \"{n}\"")));
            }
            let sk = &e["valueFrom"]["secretKeyRef"];
            if sk.is_object()
                && (sk["name"].as_str().is_none_or(str::is_empty)
                    || sk["key"].as_str().is_none_or(str::is_empty))
            {
                errs.push((
                    format!("{f}.env.valueFrom.secretKeyRef"),
                    "Required value: name and key".into(),
                ));
            }
        }
    }
}
