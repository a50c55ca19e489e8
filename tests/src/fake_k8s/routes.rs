//! The REST routes: a path parsed into kind, namespace and name, and the verb dispatched.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::apply;
use super::logs::{pod_log, pod_log_path};
use super::objects::{create, delete, update};
use super::respond::{bad_request, not_found, ok_json, status};
use super::selector::{matches, parse_selector, Req};
use super::store::{kind_of, Kind, Shared};

struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let (gv, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("v1".to_owned(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut it = rest.splitn(3, '/');
        let (g, v, rest) = (it.next()?, it.next()?, it.next()?);
        (format!("{g}/{v}"), rest)
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, resource, name) = match segs.as_slice() {
        ["namespaces", ns, res] => (ns.to_string(), *res, None),
        ["namespaces", ns, res, name] => (ns.to_string(), *res, Some(name.to_string())),
        [res] => (String::new(), *res, None),
        [res, name] => (String::new(), *res, Some(name.to_string())),
        _ => return None,
    };
    let kind = kind_of(resource)?;
    if kind.group_version != gv || kind.namespaced == namespace.is_empty() {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
    })
}

/// The request's `labelSelector` (none: everything), or the API server's 400.
fn label_selector(query: &HashMap<String, String>) -> Result<Vec<Req>, HttpResponse> {
    match query.get("labelSelector").map(|s| parse_selector(s)) {
        None => Ok(Vec::new()),
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(bad_request(format!("unable to parse requirement: {e}"))),
    }
}

pub(super) async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if req.path() == "/version" {
        return ok_json(
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        );
    }
    if let Some((ns, pod)) = pod_log_path(req.path()) {
        return pod_log(&shared, req.query_string(), &ns, &pod);
    }
    let Some(t) = parse_path(req.path()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        );
    };
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let parse_body = || -> Result<Value, HttpResponse> {
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
    };
    let method = req.method().as_str();
    let manager = apply::manager_of(&req, &query);
    let mut st = shared.lock();
    let k = t.kind;
    match (method, t.name) {
        ("GET", None) => {
            st.count("list", k.resource);
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return status(
                    405,
                    "MethodNotAllowed",
                    "watch is not supported by the fake".into(),
                    json!({}),
                );
            }
            let selector = match label_selector(&query) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let items: Vec<Value> = st
                .objects
                .range((k.resource, t.namespace.clone(), String::new())..)
                .take_while(|(key, _)| key.0 == k.resource && (key.1 == t.namespace))
                .filter(|(_, v)| matches(&selector, &v["metadata"]["labels"]))
                .map(|(_, v)| {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("apiVersion");
                        o.remove("kind");
                    }
                    v
                })
                .collect();
            ok_json(&json!({
                "apiVersion": k.group_version, "kind": format!("{}List", k.kind),
                "metadata": {"resourceVersion": st.rv.to_string()},
                "items": items,
            }))
        }
        ("GET", Some(name)) => {
            st.count("get", k.resource);
            match st.objects.get(&(k.resource, t.namespace, name.clone())) {
                Some(v) => ok_json(v),
                None => not_found(k, &name),
            }
        }
        ("POST", None) => {
            st.count("create", k.resource);
            let obj = match parse_body() {
                Ok(v) => v,
                Err(r) => return r,
            };
            create(&mut st, k, &t.namespace, obj, Some(&manager))
        }
        ("PUT", Some(name)) => {
            st.count("update", k.resource);
            let obj = match parse_body() {
                Ok(v) => v,
                Err(r) => return r,
            };
            update(&mut st, k, &t.namespace, &name, obj, false, Some(&manager))
        }
        ("PATCH", Some(name)) => {
            st.count("patch", k.resource);
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct.starts_with("application/apply-patch+yaml") {
                return apply::apply(&mut st, k, &t.namespace, &name, &body, &query);
            }
            if !ct.starts_with("application/merge-patch+json")
                && !ct.starts_with("application/strategic-merge-patch+json")
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("the fake supports merge patches only, not {ct:?}"),
                    json!({}),
                );
            }
            let patch = match parse_body() {
                Ok(v) => v,
                Err(r) => return r,
            };
            update(&mut st, k, &t.namespace, &name, patch, true, Some(&manager))
        }
        ("DELETE", Some(name)) => {
            st.count("delete", k.resource);
            let opts = if body.is_empty() {
                Value::Null
            } else {
                match parse_body() {
                    Ok(v) => v,
                    Err(r) => return r,
                }
            };
            delete(&mut st, k, &t.namespace, &name, &opts)
        }
        ("DELETE", None) => {
            st.count("deletecollection", k.resource);
            let selector = match label_selector(&query) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let names: Vec<String> = st
                .objects
                .iter()
                .filter(|(key, v)| {
                    key.0 == k.resource
                        && key.1 == t.namespace
                        && matches(&selector, &v["metadata"]["labels"])
                })
                .map(|(key, _)| key.2.clone())
                .collect();
            for n in names {
                let _ = delete(&mut st, k, &t.namespace, &n, &Value::Null);
            }
            ok_json(
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            )
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported"),
            json!({}),
        ),
    }
}
