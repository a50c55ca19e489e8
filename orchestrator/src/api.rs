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

/// Counts every request by method, route template and status (never by tenant id).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let app = req.app_data::<web::Data<App>>().cloned();
    let method = req.method().to_string();
    let res = next.call(req).await;
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
        .body(app.metrics.render())
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
