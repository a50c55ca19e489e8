//! `Status` answers as the real API server writes them (404, 409, 422, 400), and plain JSON.

use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::store::{qualified, Kind};

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn status(code: u16, reason: &str, message: String, details: Value) -> HttpResponse {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "details": details, "code": code,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status code"))
        .content_type("application/json")
        .body(body.to_string())
}

pub(super) fn not_found(k: Kind, name: &str) -> HttpResponse {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", qualified(k)),
        json!({"name": name, "group": group(k), "kind": k.resource}),
    )
}

pub(super) fn conflict(k: Kind, name: &str) -> HttpResponse {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(k)
        ),
        json!({"name": name, "group": group(k), "kind": k.resource}),
    )
}

pub(super) fn invalid(k: Kind, name: &str, causes: Vec<(String, String)>) -> HttpResponse {
    let text = causes
        .iter()
        .map(|(f, m)| format!("{f}: {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    let causes: Vec<Value> = causes
        .into_iter()
        .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
        .collect();
    status(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {text}", k.kind),
        json!({"name": name, "group": group(k), "kind": k.kind, "causes": causes}),
    )
}

pub(super) fn bad_request(message: String) -> HttpResponse {
    status(400, "BadRequest", message, json!({}))
}

pub(super) fn group(k: Kind) -> &'static str {
    k.group_version.split_once('/').map_or("", |(g, _)| g)
}

pub(super) fn ok_json(v: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(v.to_string())
}
