//! The pod log subresource.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};

use super::respond::{bad_request, not_found};
use super::store::{kind_of, Shared};

/// `/api/v1/namespaces/{ns}/pods/{name}/log`.
pub(super) fn pod_log_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        [ns, "pods", name, "log"] => Some((ns.to_string(), name.to_string())),
        _ => None,
    }
}

/// The pod log subresource: the agent's output as plain text, `tailLines`, `previous` (the output
/// of the pod's previous agent run, as a restarted container's) and `sinceSeconds` (the whole log
/// when the file was written within it: the fake keeps no per-line times).
pub(super) fn pod_log(shared: &Shared, query: &str, namespace: &str, name: &str) -> HttpResponse {
    let q: HashMap<String, String> = web::Query::<HashMap<String, String>>::from_query(query)
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let exists =
        shared
            .lock()
            .objects
            .contains_key(&("pods", namespace.to_owned(), name.to_owned()));
    if !exists {
        return not_found(kind_of("pods").expect("pods"), name);
    }
    let previous = q.get("previous").is_some_and(|v| v == "true");
    let file = shared.root.join("logs").join(if previous {
        format!("{name}.previous.log")
    } else {
        format!("{name}.log")
    });
    let text = match std::fs::read(&file) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) if previous => {
            return bad_request(format!(
                "previous terminated container \"agent\" in pod \"{name}\" not found"
            ))
        }
        Err(_) => String::new(),
    };
    let text = match q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let keep = &lines[lines.len().saturating_sub(n)..];
            keep.iter().map(|l| format!("{l}\n")).collect()
        }
        None => text,
    };
    HttpResponse::Ok().content_type("text/plain").body(text)
}
