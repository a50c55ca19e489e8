//! The Go-compatible response mode: with `X-Api-Compat: go` a request gets the Go platform's
//! response shapes (`TenantID`, `Status`, `PodIP`, an empty `BotToken`; `{"BotToken": ...}` for the
//! token route), so scripts written against the Go API keep working during and after a cut-over.
//!
//! One response transform for the whole API, not per handler: the handlers only ever speak the
//! platform's own (snake_case) shapes.

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use serde_json::{Map, Value};

/// Request header that selects the Go response shapes.
pub const HEADER: &str = "x-api-compat";

/// Record fields in the order the Go platform encoded its `TenantRecord`, with their Go names.
const GO_FIELDS: [(&str, &str); 10] = [
    ("tenant_id", "TenantID"),
    ("status", "Status"),
    ("pod_name", "PodName"),
    ("pod_ip", "PodIP"),
    ("namespace", "Namespace"),
    ("s3_prefix", "S3Prefix"),
    ("bot_token", "BotToken"),
    ("created_at", "CreatedAt"),
    ("last_active_at", "LastActiveAt"),
    ("idle_timeout_s", "IdleTimeoutS"),
];

/// True when the request asks for the Go shapes.
pub fn wants_go(req: &ServiceRequest) -> bool {
    req.headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("go"))
}

/// A tenant view in the Go platform's shape: exactly its ten fields, `BotToken` always empty.
pub fn go_tenant(view: &Value) -> Value {
    let mut out = Map::new();
    for (ours, go) in GO_FIELDS {
        let v = match ours {
            "bot_token" => Value::String(String::new()),
            _ => view
                .get(ours)
                .cloned()
                .unwrap_or(Value::String(String::new())),
        };
        out.insert(go.to_owned(), v);
    }
    Value::Object(out)
}

/// The Go shape of a successful response of `route`, or `None` when the Go platform used the same one.
pub fn go_body(route: &str, body: &Value) -> Option<Value> {
    match route {
        "/tenants" | "/tenants/{id}" => match body {
            Value::Array(items) => Some(Value::Array(items.iter().map(go_tenant).collect())),
            Value::Object(_) => Some(go_tenant(body)),
            _ => None,
        },
        "/tenants/{id}/bot_token" => {
            let token = body.get("bot_token")?.clone();
            Some(serde_json::json!({ "BotToken": token }))
        }
        _ => None,
    }
}

/// Middleware: rewrites successful JSON responses into the Go shapes when the request asks for them.
pub async fn go_responses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let go = wants_go(&req);
    let res = next.call(req).await?.map_into_boxed_body();
    if !go || !res.status().is_success() {
        return Ok(res);
    }
    let Some(route) = res.request().match_pattern() else {
        return Ok(res);
    };
    let (req, resp) = res.into_parts();
    let status = resp.status();
    let (head, body) = resp.into_parts();
    let bytes = to_bytes(body)
        .await
        .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?;
    let rewritten = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| go_body(&route, &v));
    let resp = match rewritten {
        Some(v) => HttpResponse::build(status).json(v),
        None => {
            let mut r = head.set_body(BoxBody::new(bytes));
            r.headers_mut().remove(CONTENT_LENGTH);
            r
        }
    };
    let mut resp = resp;
    if !resp.headers().contains_key(CONTENT_TYPE) {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(ServiceResponse::new(req, resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_view_takes_the_go_field_names_and_an_empty_bot_token() {
        let view = json!({
            "tenant_id": "alice", "status": "running", "pod_name": "zeroclaw-alice",
            "pod_ip": "10.1.2.3", "agent_port": 3000, "namespace": "tenants",
            "s3_prefix": "tenants/alice/", "created_at": "2026-01-01T00:00:00Z",
            "last_active_at": "2026-01-01T00:01:00Z", "idle_timeout_s": 300, "bot_token_set": true
        });
        let go = go_body("/tenants/{id}", &view).unwrap();
        assert_eq!(
            go,
            json!({
                "TenantID": "alice", "Status": "running", "PodName": "zeroclaw-alice",
                "PodIP": "10.1.2.3", "Namespace": "tenants", "S3Prefix": "tenants/alice/",
                "BotToken": "", "CreatedAt": "2026-01-01T00:00:00Z",
                "LastActiveAt": "2026-01-01T00:01:00Z", "IdleTimeoutS": 300
            })
        );
        let list = go_body("/tenants", &json!([view])).unwrap();
        assert_eq!(list[0]["TenantID"], "alice");
    }

    #[test]
    fn the_token_route_answers_bottoken_and_other_routes_are_unchanged() {
        assert_eq!(
            go_body("/tenants/{id}/bot_token", &json!({"bot_token": "1:x"})),
            Some(json!({"BotToken": "1:x"}))
        );
        assert_eq!(go_body("/wake/{id}", &json!({"pod_ip": "10.1.2.3"})), None);
    }
}
