//! Issue 8, tracing: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, both services export spans over
//! OTLP/HTTP, and one Telegram update forms ONE trace: the router's delivery span and the
//! orchestrator's wake span share a trace id (W3C `traceparent` carried on the wake call), and the
//! agent's log line for the message carries it too (router → orchestrator → agent).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use common::stub::Stub;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use platform_tests::platform::{bot_token, wait_until, Opts, Platform};
use prost::Message;

const T: Duration = Duration::from_secs(60);

/// One span as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    tenant: Option<String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            other => Some(format!("{other:?}")),
        }
    })
}

async fn export(spans: web::Data<Mutex<Vec<Received>>>, body: web::Bytes) -> HttpResponse {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| string_attr(&r.attributes, "service.name"))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Received {
                service: service.clone(),
                name: span.name.clone(),
                trace_id: span.trace_id.clone(),
                tenant: string_attr(&span.attributes, "tenant"),
            });
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceRequest::default().encode_to_vec())
}

/// A local OTLP/HTTP receiver (`POST /v1/traces`, protobuf) that keeps every span.
async fn start_receiver() -> (String, Spans, Stub) {
    let spans: Spans = Arc::default();
    let data = web::Data::from(spans.clone());
    let server = Stub::routes(move |cfg| {
        cfg.app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .route("/v1/traces", web::post().to(export));
    });
    (server.url(), spans, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_forms_one_trace_across_router_and_orchestrator() {
    let (otlp, spans, receiver) = start_receiver().await;
    let p = Platform::start_with(
        Opts::default()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", 100)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,tenant_agent=debug"),
    )
    .await;
    p.create_tenant("traced", &bot_token(), None).await;
    p.send_text("traced", 7001, 42, "hello").await;
    p.telegram.wait_for_messages(42, 2, T).await;

    let find = |service: &str, name: &str| {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.service == service && s.name == name && s.tenant.as_deref() == Some("traced")
            })
            .cloned()
    };
    wait_until("the delivery and wake spans to arrive", T, || async {
        find("router", "delivery").is_some() && find("orchestrator", "wake").is_some()
    })
    .await;
    let delivery = find("router", "delivery").unwrap();
    let wake = find("orchestrator", "wake").unwrap();
    assert_eq!(delivery.trace_id.len(), 16);
    assert_eq!(
        delivery.trace_id, wake.trace_id,
        "the orchestrator's wake continues the router's delivery trace"
    );
    // The orchestrator's request span for the wake call is in the same trace too.
    assert!(
        spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.service == "orchestrator"
                && s.name == "http request"
                && s.trace_id == delivery.trace_id),
        "no orchestrator request span in the delivery's trace"
    );
    // JSON log lines inside the spans carry the trace id, in both services.
    let hex: String = delivery
        .trace_id
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let field = format!("\"trace_id\":\"{hex}\"");
    assert!(p.router.log().contains(&field), "router log lacks {field}");
    assert!(
        p.orchestrator.log().contains(&field),
        "orchestrator log lacks {field}"
    );
    // Local agents write to their log file: the agent answered inside the same trace.
    assert!(
        p.agent_log("traced")
            .lines()
            .any(|l| l.contains("message answered") && l.contains(&field)),
        "no agent line 'message answered' with {field}"
    );

    // `/chat` continues a caller's trace: the router's request span and the agent's line join it.
    let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = p
        .request(reqwest::Method::POST, &p.router_url("/chat/traced"))
        .header("traceparent", format!("00-{caller}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({ "message": "traced chat" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let caller_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&caller[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    wait_until("the router's /chat request span", T, || async {
        spans.lock().unwrap().iter().any(|s| {
            s.service == "router" && s.name == "http request" && s.trace_id == caller_bytes
        })
    })
    .await;
    let caller_field = format!("\"trace_id\":\"{caller}\"");
    assert!(
        p.agent_log("traced")
            .lines()
            .any(|l| l.contains("message answered") && l.contains(&caller_field)),
        "no agent line 'message answered' with {caller_field}"
    );
    receiver.shutdown().await;
}

/// A malformed `OTEL_EXPORTER_OTLP_ENDPOINT` stops each service at start-up, naming the variable.
#[test]
fn a_bad_otlp_endpoint_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for service in ["router", "orchestrator"] {
        let out = std::process::Command::new(platform_tests::platform::bin_path(service))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
            .env("DATA_DIR", dir.path())
            .env("RUNTIME", "local")
            .env("PORT", platform_tests::platform::free_port().to_string())
            .output()
            .expect("run the service");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{service}: {stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{service}: {stderr}"
        );
    }
}
