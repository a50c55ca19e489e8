//! HTTP routes of the router, and the one place where errors become HTTP statuses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use common::cache::EndpointCache;
use common::http_auth::{Access, Routes};
use common::inbox::{Appended, Inbox};
use common::{Secret, TenantId};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

use crate::chat::{ChatError, ChatService};
use crate::delivery::Dispatcher;
use crate::known_tenants::KnownTenants;
use crate::metrics::{HttpLabels, Metrics, Webhook};
use crate::update;
use crate::webhook_admin::{AdminError, WebhookAdmin};

/// Largest body accepted on any route (Telegram updates are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct AppState {
    pub inbox: Arc<dyn Inbox>,
    pub cache: Arc<dyn EndpointCache>,
    pub dispatcher: Arc<Dispatcher>,
    /// Template of the `/chat` service; each actix worker serves with its own `for_worker` copy.
    pub chat: ChatService,
    pub admin: WebhookAdmin,
    pub metrics: Arc<Metrics>,
    pub api_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// `WEBHOOK_SECRET_OPTIONAL=true`: an update without a secret token is accepted (a wrong one never).
    pub webhook_secret_optional: bool,
    /// Without `WEBHOOK_SECRET`: which tenants exist, so that forged updates are refused unwritten.
    pub known_tenants: Option<KnownTenants>,
    /// Set on SIGTERM so that load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// `INBOX_TENANT_MAX_PENDING`: a tenant with this many entries waiting gets 429 on `/tg`.
    pub max_pending_per_tenant: u64,
}

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    /// One tenant's backlog is full (`INBOX_TENANT_MAX_PENDING`): Telegram retries later.
    #[error("{0}")]
    TooManyRequests(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        common::service::error_body(self.status_code(), &self.to_string())
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::UnknownTenant => ApiError::NotFound("tenant not found".into()),
            // The causes too (which backend, what it answered); none holds a secret.
            ChatError::WakeFailed(_) => ApiError::Unavailable(common::error::error_chain(&e)),
            ChatError::AgentFailed(_) => ApiError::BadGateway(common::error::error_chain(&e)),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NoPublicUrl => ApiError::Unavailable(e.to_string()),
            AdminError::UnknownTenant => ApiError::NotFound("tenant not found".into()),
            AdminError::Orchestrator(_) => ApiError::Unavailable(e.to_string()),
            AdminError::Telegram(_) => ApiError::BadGateway(e.to_string()),
            AdminError::Records(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// Registers every route of [`routes`] on an actix `App`, with the auth settings `require_bearer` reads.
pub fn configure(cfg: &mut web::ServiceConfig, api_token: Option<Secret>) {
    routes().install(cfg, api_token);
}

/// Every route with its access (deny by default: a route not marked otherwise needs `API_TOKEN`).
/// `/tg/{id}` is authenticated by its handler with the tenant's Telegram secret token instead.
pub fn routes() -> Routes {
    use actix_web::http::Method;
    use Access::{Handler, Public, Token};
    Routes::new()
        .add(Public, Method::GET, "/healthz", healthz)
        .add(Public, Method::GET, "/readyz", readyz)
        .add(Public, Method::GET, "/metrics", metrics)
        .add(Handler, Method::POST, "/tg/{id}", telegram_update)
        .add(Token, Method::POST, "/chat/{id}", chat)
        .add(Token, Method::POST, "/admin/webhook/{id}", register_webhook)
        .add(Token, Method::DELETE, "/admin/webhook/{id}", delete_webhook)
        .add(Token, Method::GET, "/admin/webhook/{id}", webhook_info)
}

/// The fallback for unknown paths and methods.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

impl common::service::RequestCounter for Metrics {
    /// By route template and status (the router's series has no method label).
    fn count_request(&self, _method: common::metrics::HttpMethod, route: &str, status: StatusCode) {
        self.http_requests.inc(HttpLabels {
            route: route.to_owned(),
            status: status.as_u16(),
        });
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|e| ApiError::BadRequest(format!("invalid tenant id: {e}")))
}

/// Reads the body, refusing more than `MAX_BODY_BYTES` without buffering it.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::TooLarge);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    state
        .inbox
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("inbox ({}): {e}", state.inbox.name())))?;
    state.cache.ping().await.map_err(|e| {
        ApiError::Unavailable(format!("endpoint cache ({}): {e}", state.cache.name()))
    })?;
    Ok(HttpResponse::Ok().content_type("text/plain").body("ok"))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.inbox.stats().await.ok();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(stats))
}

/// A Telegram update: stored durably (deduplicated) before the 200, then handed to delivery.
/// Every outcome is counted in `router_webhook_updates_total`.
async fn telegram_update(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = store_update(&req, &path, payload, &state).await;
    let outcome = match &result {
        Ok(Appended::New) => Webhook::accepted,
        Ok(Appended::Duplicate) => Webhook::duplicate,
        Ok(Appended::Full) | Err(ApiError::TooManyRequests(_)) => Webhook::over_cap,
        Err(ApiError::Unauthorized(_)) => Webhook::unauthorized,
        Err(ApiError::NotFound(_)) => Webhook::unknown_tenant,
        Err(ApiError::Unavailable(_)) => Webhook::unavailable,
        Err(_) => Webhook::invalid,
    };
    state.metrics.webhook_updates.inc(outcome);
    result?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"ok":true}"#))
}

/// Checks and stores one update; `Ok` only for a stored update or a duplicate.
async fn store_update(
    req: &HttpRequest,
    path: &str,
    payload: web::Payload,
    state: &AppState,
) -> Result<Appended, ApiError> {
    let id = tenant_id(path)?;
    if let Some(secret) = &state.webhook_secret {
        let received = req
            .headers()
            .get("x-telegram-bot-api-secret-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // During a cut-over the Go platform's webhooks (no secret token) may still arrive.
        let tolerated = received.is_empty() && state.webhook_secret_optional;
        if !tolerated && !common::webhook::verify(secret.expose(), &id, received) {
            return Err(ApiError::Unauthorized("missing or invalid secret token"));
        }
    }
    let body = read_body(req, payload).await?;
    let update_id = update::update_id(&body).ok_or_else(|| {
        ApiError::BadRequest("body must be a JSON object with an integer update_id".into())
    })?;
    // The secret proves the tenant was registered; without it, ask before anything is written.
    if let Some(known) = &state.known_tenants {
        match known.exists(&id).await {
            Ok(true) => {}
            Ok(false) => return Err(ApiError::NotFound("tenant not found".into())),
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "cannot check the tenant, refusing the update");
                return Err(ApiError::Unavailable(
                    "orchestrator unavailable, retry later".into(),
                ));
            }
        }
    }
    let appended = state
        .inbox
        .append_within(&id, update_id, &body, state.max_pending_per_tenant)
        .await
        .map_err(|e| {
            tracing::warn!(tenant = %id, update_id, error = %e, "inbox append failed, refusing the update");
            ApiError::Unavailable("inbox unavailable, retry later".into())
        })?;
    match appended {
        Appended::New => state.dispatcher.notify(&id),
        Appended::Duplicate => {
            tracing::debug!(tenant = %id, update_id, "duplicate update ignored")
        }
        Appended::Full => {
            // At debug: a flood would log once per refused retry; the metric counts them.
            tracing::debug!(tenant = %id, update_id, "tenant's inbox backlog is full, refusing the update");
            return Err(ApiError::TooManyRequests(
                "too many updates waiting for this bot, retry later".into(),
            ));
        }
    }
    Ok(appended)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    message: String,
}

#[derive(Serialize)]
struct ChatReply<'a> {
    response: &'a str,
}

async fn chat(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    chat: web::Data<ChatService>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    let body = read_body(&req, payload).await?;
    let request: ChatRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    if request.message.trim().is_empty() {
        return Err(ApiError::BadRequest("message must not be empty".into()));
    }
    let response = chat.chat(&id, &request.message).await?;
    Ok(HttpResponse::Ok().json(ChatReply {
        response: &response,
    }))
}

async fn register_webhook(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    let url = state.admin.register(&id).await?;
    // `webhook_url` is the Go router's name for the same field (scripts written for it read it).
    Ok(HttpResponse::Ok().json(json!({ "ok": true, "url": url, "webhook_url": url })))
}

async fn delete_webhook(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    state.admin.unregister(&id).await?;
    Ok(HttpResponse::Ok().json(json!({ "ok": true })))
}

async fn webhook_info(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = tenant_id(&path)?;
    Ok(HttpResponse::Ok().json(state.admin.info(&id).await?))
}
