//! The HTTP API (DESIGN.md "Orchestrator HTTP API"): routes, auth, and the one mapping of `Error`
//! to HTTP statuses.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use common::{Secret, StoreError, TenantId};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::app::App;
use crate::error::Error;
use crate::tenants::{self, CreateTenant, UpdateTenant};
use crate::wake;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Routes that answer without `API_TOKEN`.
const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidTenantId(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Telegram { .. } => StatusCode::BAD_GATEWAY,
            Error::WakeFailed(_)
            | Error::WakeTimeout(_)
            | Error::Busy(_)
            | Error::ShuttingDown
            | Error::NotReady(_)
            | Error::Runtime(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store { source, .. } => match source {
                StoreError::NotFound => StatusCode::NOT_FOUND,
                StoreError::AlreadyExists | StoreError::Conflict(_) => StatusCode::CONFLICT,
                StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_json(self.status_code(), &self.to_string())
    }
}

fn error_json(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// HTTP-only settings.
#[derive(Clone)]
pub struct ApiConfig {
    /// Bearer token every non-public route needs; `None` leaves the API open.
    pub api_token: Option<Secret>,
}

/// Registers the routes and the extractor error handlers; wrap the `App` in `track` and `require_token`.
pub fn configure(app: Arc<App>, api: ApiConfig) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(app))
            .app_data(web::Data::new(api))
            .app_data(json_config())
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                Error::BadRequest(format!("invalid query string: {e}")).into()
            }))
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/tenants", web::post().to(create))
            .route("/tenants", web::get().to(list))
            .route("/tenants/{id}", web::get().to(get))
            .route("/tenants/{id}", web::patch().to(update))
            .route("/tenants/{id}", web::delete().to(delete))
            .route("/tenants/{id}/bot_token", web::get().to(bot_token))
            .route("/tenants/{id}/activity", web::put().to(activity))
            .route("/tenants/{id}/sleep", web::post().to(sleep))
            .route("/wake/{id}", web::post().to(wake_tenant))
            .default_service(web::to(no_route));
    }
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(BODY_LIMIT)
        .content_type(|_| true)
        .content_type_required(false)
        .error_handler(|e, _| {
            use actix_web::error::JsonPayloadError as J;
            match e {
                J::Overflow { .. } | J::OverflowKnownLength { .. } => {
                    Error::PayloadTooLarge(BODY_LIMIT).into()
                }
                J::Deserialize(d) if d.is_data() => {
                    Error::BadRequest(format!("invalid request body: {d}")).into()
                }
                J::Deserialize(d) => Error::BadRequest(format!("malformed JSON body: {d}")).into(),
                other => Error::BadRequest(format!("unreadable request body: {other}")).into(),
            }
        })
}

/// Counts every request by method, route template and status (never by tenant id), and runs it in
/// a span that continues the caller's trace (W3C `traceparent`).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let app = req.app_data::<web::Data<App>>().cloned();
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http request",
        method = %method,
        route = req.match_pattern().as_deref().unwrap_or("unmatched"),
        trace_id = tracing::field::Empty
    );
    common::telemetry::set_parent_from(&span, |name| {
        req.headers().get(name).and_then(|v| v.to_str().ok())
    });
    common::telemetry::record_trace_id(&span);
    let res = next.call(req).instrument(span).await;
    if let Some(app) = app {
        let (route, status) = match &res {
            Ok(r) => (r.request().match_pattern(), r.status()),
            Err(e) => (None, e.as_response_error().status_code()),
        };
        let route = route.unwrap_or_else(|| "unmatched".into());
        app.metrics
            .http_requests
            .inc(&[&method, &route, status.as_str()]);
    }
    res
}

/// Requires `Authorization: Bearer <API_TOKEN>` on every non-public route when a token is set.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<ApiConfig>>()
        .and_then(|c| c.api_token.clone());
    if let Some(expected) = expected {
        if !PUBLIC_PATHS.contains(&req.path()) && !bearer_matches(req.request(), &expected) {
            let resp = error_json(StatusCode::UNAUTHORIZED, "missing or invalid API token");
            return Ok(req.into_response(resp).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

fn bearer_matches(req: &HttpRequest, expected: &Secret) -> bool {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|got| {
            common::webhook::constant_time_eq(got.trim().as_bytes(), expected.expose().as_bytes())
        })
}

fn tenant_id(path: &str) -> Result<TenantId, Error> {
    Ok(TenantId::parse(path)?)
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    error_json(
        StatusCode::NOT_FOUND,
        &format!("no route for {} {}", req.method(), req.path()),
    )
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// 503 naming the first backend that does not answer, or while shutting down.
async fn readyz(app: web::Data<App>) -> Result<HttpResponse, Error> {
    if app.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let app = app.into_inner();
    app.clone()
        .run_owned(async move {
            let checks = [
                (
                    "registry",
                    app.registry.ping().await.err().map(|e| e.to_string()),
                ),
                (
                    "wake lock",
                    app.lock.ping().await.err().map(|e| e.to_string()),
                ),
                (
                    "endpoint cache",
                    app.cache.ping().await.err().map(|e| e.to_string()),
                ),
                (
                    "state store",
                    app.state.ping().await.err().map(|e| e.to_string()),
                ),
                (
                    "runtime",
                    app.runtime.ping().await.err().map(|e| e.to_string()),
                ),
            ];
            match checks
                .into_iter()
                .find_map(|(name, e)| e.map(|e| (name, e)))
            {
                Some((name, e)) => Err(Error::NotReady(format!("{name} unavailable: {e}"))),
                None => Ok(()),
            }
        })
        .await?;
    Ok(HttpResponse::Ok().content_type("text/plain").body("ok"))
}

async fn metrics(app: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(app.metrics.render(app.runtime.warm_pool_claims()))
}

async fn create(app: web::Data<App>, body: web::Json<CreateTenant>) -> Result<HttpResponse, Error> {
    let app = app.into_inner();
    let view = app
        .clone()
        .run_owned(async move { tenants::create(&app, body.into_inner()).await })
        .await?;
    Ok(HttpResponse::Created().json(view))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list(app: web::Data<App>, q: web::Query<ListQuery>) -> Result<HttpResponse, Error> {
    let app = app.into_inner();
    let q = q.into_inner();
    let views = app
        .clone()
        .run_owned(async move { tenants::list(&app, q.status.as_deref()).await })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

async fn get(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let view = app
        .clone()
        .run_owned(async move { tenants::get(&app, &id).await })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn bot_token(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let token = app
        .clone()
        .run_owned(async move { tenants::bot_token(&app, &id).await })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "bot_token": token.expose() })))
}

async fn update(
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Json<UpdateTenant>,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let view = app
        .clone()
        .run_owned(async move { tenants::update(&app, &id, body.into_inner()).await })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    purge_state: bool,
}

async fn delete(
    app: web::Data<App>,
    path: web::Path<String>,
    q: web::Query<DeleteQuery>,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let purge = q.purge_state;
    let app = app.into_inner();
    app.clone()
        .run_owned(async move { tenants::delete(&app, &id, purge).await })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn activity(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    app.clone()
        .run_owned(async move { tenants::touch(&app, &id).await })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn sleep(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    app.clone()
        .run_owned(async move { tenants::sleep(&app, &id).await })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn wake_tenant(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let woken = app
        .clone()
        .run_owned(async move { wake::wake(&app, &id).await })
        .await?;
    Ok(HttpResponse::Ok().json(woken))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::middleware::from_fn;
    use actix_web::test::{call_service, init_service, read_body, TestRequest};

    use super::*;
    use crate::testing::*;

    macro_rules! service {
        ($app:expr, $token:expr) => {
            init_service(
                actix_web::App::new()
                    .wrap(from_fn(require_token))
                    .wrap(from_fn(track))
                    .configure(configure(
                        $app.clone(),
                        ApiConfig {
                            api_token: $token.map(Secret::new),
                        },
                    )),
            )
            .await
        };
    }

    async fn json_of<B: MessageBody>(res: ServiceResponse<B>) -> (u16, serde_json::Value) {
        let status = res.status().as_u16();
        let body = read_body(res).await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn status_codes_and_json_of_every_route() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let svc = service!(t.app, None::<&str>);
        let post = |uri: &str, body: &str| {
            TestRequest::post()
                .uri(uri)
                .insert_header(("content-type", "application/json"))
                .set_payload(body.to_owned())
                .to_request()
        };
        let (s, v) = json_of(
            call_service(
                &svc,
                post(
                    "/tenants",
                    r#"{"tenant_id":"bob","bot_token":"123:SECRET","idle_timeout_s":60}"#,
                ),
            )
            .await,
        )
        .await;
        assert_eq!(s, 201);
        assert_eq!(v["tenant_id"], "bob");
        assert_eq!(v["bot_token_set"], true);
        assert!(v.get("bot_token").is_none() && !v.to_string().contains("SECRET"));
        let (s, v) = json_of(
            call_service(
                &svc,
                post("/tenants", r#"{"tenant_id":"bob","bot_token":"1:a"}"#),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str().unwrap()),
            (409, "tenant \"bob\" already exists")
        );

        for (body, want) in [
            (r#"{"tenant_id":"Bad_ID","bot_token":"1:a"}"#, 400),
            (r#"{"tenant_id":"ok","bot_token":"1:a","extra":1}"#, 400),
            (
                r#"{"tenant_id":"ok","bot_token":"1:a","idle_timeout_s":"10"}"#,
                400,
            ),
            (
                r#"{"tenant_id":"ok","bot_token":"1:a","idle_timeout_s":-1}"#,
                400,
            ),
            (r#"{"tenant_id":"ok""#, 400),
            (r#"[]"#, 400),
        ] {
            let (s, v) = json_of(call_service(&svc, post("/tenants", body)).await).await;
            assert_eq!(s, want, "{body}");
            assert!(v["error"].is_string(), "{body}: {v}");
        }
        let big = format!(r#"{{"tenant_id":"{}"}}"#, "a".repeat(70_000));
        assert_eq!(
            call_service(&svc, post("/tenants", &big)).await.status(),
            413
        );
        let (s, v) =
            json_of(call_service(&svc, TestRequest::get().uri("/tenants").to_request()).await)
                .await;
        assert_eq!(s, 200);
        assert_eq!(v.as_array().unwrap().len(), 1, "no partial writes");

        let get = |uri: &str| TestRequest::get().uri(uri).to_request();
        assert_eq!(
            call_service(&svc, get("/tenants/Bad_ID")).await.status(),
            400
        );
        assert_eq!(
            call_service(&svc, get("/tenants/nobody")).await.status(),
            404
        );
        assert_eq!(
            call_service(&svc, get("/tenants?status=sleepy"))
                .await
                .status(),
            400
        );
        let (s, v) = json_of(call_service(&svc, get("/tenants?status=idle")).await).await;
        assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
        let (s, v) = json_of(call_service(&svc, get("/tenants/bob/bot_token")).await).await;
        assert_eq!(
            (s, &v["bot_token"]),
            (200, &serde_json::json!("123:SECRET"))
        );

        let patch = |body: &str| {
            TestRequest::patch()
                .uri("/tenants/bob")
                .set_payload(body.to_owned())
                .to_request()
        };
        // `{}` is the Go platform's no-op: 200 with the record as it is.
        let (s, v) = json_of(call_service(&svc, patch("{}")).await).await;
        assert_eq!((s, &v["tenant_id"]), (200, &serde_json::json!("bob")));
        assert_eq!(
            call_service(&svc, patch(r#"{"idle_timeout_s":0}"#))
                .await
                .status(),
            400
        );
        let (s, v) = json_of(call_service(&svc, patch(r#"{"idle_timeout_s":90}"#)).await).await;
        assert_eq!((s, v["idle_timeout_s"].as_u64()), (200, Some(90)));

        let (s, v) = json_of(call_service(&svc, post("/wake/bob", "")).await).await;
        assert_eq!(s, 200);
        assert_eq!(v["pod_ip"], "127.0.0.1");
        assert!(v["endpoint"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(
            call_service(&svc, post("/wake/nobody", "")).await.status(),
            404
        );
        assert_eq!(
            call_service(&svc, post("/wake/Bad_ID", "")).await.status(),
            400
        );
        let put = TestRequest::put().uri("/tenants/bob/activity").to_request();
        assert_eq!(call_service(&svc, put).await.status(), 204);
        assert_eq!(
            call_service(&svc, post("/tenants/bob/sleep", ""))
                .await
                .status(),
            204
        );
        assert_eq!(
            call_service(&svc, post("/tenants/nobody/sleep", ""))
                .await
                .status(),
            404
        );

        let del = |uri: &str| TestRequest::delete().uri(uri).to_request();
        assert_eq!(
            call_service(&svc, del("/tenants/bob?purge_state=maybe"))
                .await
                .status(),
            400
        );
        assert_eq!(
            call_service(&svc, del("/tenants/bob?purge_state=true"))
                .await
                .status(),
            204
        );
        assert_eq!(call_service(&svc, del("/tenants/bob")).await.status(), 204);
        assert_eq!(call_service(&svc, get("/tenants/bob")).await.status(), 404);

        let metrics = read_body(call_service(&svc, get("/metrics")).await).await;
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.contains(r#"route="/tenants/{id}",status="404""#),
            "{metrics}"
        );
        for line in [
            r#"orchestrator_wakes_total{result="started"} 1"#,
            "orchestrator_wake_duration_seconds_count 1",
            "orchestrator_agent_starts_total 1",
            r#"orchestrator_agent_stops_total{reason="sleep"} 1"#,
            r#"orchestrator_http_requests_total{method="POST",route="/wake/{id}",status="200"} 1"#,
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} missing in\n{metrics}"
            );
        }
        assert!(!metrics.contains("bob"), "no tenant ids in labels");
    }

    #[tokio::test]
    async fn api_token_guards_all_but_probes() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let svc = service!(t.app, Some("tok"));
        for path in ["/healthz", "/readyz", "/metrics"] {
            let res = call_service(&svc, TestRequest::get().uri(path).to_request()).await;
            assert_eq!(res.status(), 200, "{path}");
        }
        for auth in [None, Some("Bearer nope"), Some("tok")] {
            let mut req = TestRequest::get().uri("/tenants");
            if let Some(a) = auth {
                req = req.insert_header(("authorization", a));
            }
            let (s, v) = json_of(call_service(&svc, req.to_request()).await).await;
            assert_eq!(
                (s, v["error"].as_str()),
                (401, Some("missing or invalid API token"))
            );
        }
        let req = TestRequest::get()
            .uri("/tenants")
            .insert_header(("authorization", "Bearer tok"))
            .to_request();
        assert_eq!(call_service(&svc, req).await.status(), 200);
    }

    #[tokio::test]
    async fn readyz_turns_503_on_shutdown() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let svc = service!(t.app, None::<&str>);
        let req = || TestRequest::get().uri("/readyz").to_request();
        assert_eq!(call_service(&svc, req()).await.status(), 200);
        t.app.shutdown.cancel();
        assert_eq!(call_service(&svc, req()).await.status(), 503);
    }
}
