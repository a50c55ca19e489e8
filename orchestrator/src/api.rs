//! The HTTP API: routes, auth, and the one mapping of `Error`
//! to HTTP statuses.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use common::http_auth::{Access, Routes};
use common::{Secret, StoreError, TenantId, TenantRecord};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::Error;
use crate::operations;
use crate::runtime::{LogQuery, RuntimeError};
use crate::tenants::{self, CreateTenant, UpdateTenant};
use crate::wake;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Deny-by-default bearer auth: only routes declared `Access::Public` in [`routes`] answer without
/// `API_TOKEN` (one implementation for both services, in `common`).
pub use common::http_auth::require_bearer as require_token;

/// Request metrics and spans (one implementation for both services, in `common`); `configure`
/// registers what it reads.
pub use common::service::track;

impl common::service::RequestCounter for crate::metrics::Metrics {
    fn count_request(&self, method: common::metrics::HttpMethod, route: &str, status: StatusCode) {
        self.http_requests.inc(crate::metrics::HttpLabels {
            method,
            route: route.to_owned(),
            status: status.as_u16(),
        });
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidTenantId(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::Suspended(_) => StatusCode::LOCKED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Telegram { .. } | Error::WakeFailed(_) => StatusCode::BAD_GATEWAY,
            Error::WakeTimeout(_) | Error::Busy(_) | Error::ShuttingDown | Error::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Store { source, .. } => match source {
                StoreError::NotFound => StatusCode::NOT_FOUND,
                StoreError::AlreadyExists | StoreError::Conflict(_) => StatusCode::CONFLICT,
                StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::Runtime(RuntimeError::Unsupported(_)) => StatusCode::BAD_REQUEST,
            Error::Runtime(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::AgentUnauthorized => StatusCode::UNAUTHORIZED,
            Error::StaleAgent(_) => StatusCode::CONFLICT,
        }
    }

    /// The body says the message and its causes ([`common::error::error_chain`]: which backend,
    /// what it answered); no error here keeps a secret in its text or its sources.
    fn error_response(&self) -> HttpResponse {
        let message = common::error::error_chain(self);
        if let Error::WakeFailed(_) = self {
            // Tells the router this failure is definitive (the agent's own), not an outage.
            return HttpResponse::build(self.status_code()).json(json!({
                "error": message,
                "code": common::error::AGENT_START_FAILED,
            }));
        }
        error_json(self.status_code(), &message)
    }
}

use common::service::error_body as error_json;

/// HTTP-only settings.
#[derive(Clone)]
pub struct ApiConfig {
    /// Bearer token every non-public route needs; `None` leaves the API open.
    pub api_token: Option<Secret>,
}

/// Registers the routes (from [`routes`]) and the extractor error handlers; wrap the `App` in `track`
/// and `require_token`.
pub fn configure(app: Arc<App>, api: ApiConfig) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(common::service::RequestTracking::data(
            app.metrics.clone(),
            common::service::Spans::Always,
        ))
        .app_data(web::Data::from(app))
        .app_data(json_config())
        .app_data(
            web::QueryConfig::default().error_handler(|e, _| {
                Error::BadRequest(format!("invalid query string: {e}")).into()
            }),
        )
        .app_data(web::PayloadConfig::new(BODY_LIMIT))
        .default_service(web::to(no_route));
        routes().install(cfg, api.api_token);
    }
}

/// Every route with its access: the table the app is built from and the auth middleware reads.
pub fn routes() -> Routes {
    use actix_web::http::Method;
    use Access::{Handler, Public, Token};
    Routes::new()
        .add(Public, Method::GET, "/healthz", healthz)
        .add(Public, Method::GET, "/readyz", readyz)
        .add(Public, Method::GET, "/metrics", metrics)
        .add(Token, Method::POST, "/tenants", create)
        .add(Token, Method::GET, "/tenants", list)
        .add(Token, Method::GET, "/tenants/{id}", get)
        .add(Token, Method::PATCH, "/tenants/{id}", update)
        .add(Token, Method::DELETE, "/tenants/{id}", delete)
        .add(Token, Method::GET, "/tenants/{id}/bot_token", bot_token)
        .add(Token, Method::PUT, "/tenants/{id}/activity", activity)
        // A busy agent keeps itself awake (issue 18): its own credential, its own tenant only.
        .add(
            Handler,
            Method::POST,
            "/tenants/{id}/activity",
            agent_activity,
        )
        // An assigned agent's state grants, renewed before it saves (issue 20): the same credential.
        .add(
            Handler,
            Method::POST,
            common::assignment::RENEW_PATH,
            renew_state_grants,
        )
        .add(Token, Method::POST, "/tenants/{id}/sleep", sleep)
        .add(Token, Method::POST, "/wake/{id}", wake_tenant)
        // The agent's credential and configuration (issue 14).
        .add(Token, Method::GET, "/tenants/{id}/agent_token", agent_token)
        .add_resource(
            "/tenants/{id}/config",
            &[(Token, Method::GET), (Token, Method::PUT)],
            web::resource("/tenants/{id}/config")
                .app_data(json_config_limit(CONFIG_BODY_LIMIT))
                .route(web::get().to(get_config))
                .route(web::put().to(put_config)),
        )
        // Lifecycle operations (issue 17).
        .add(Token, Method::POST, "/tenants/{id}/suspend", suspend)
        .add(Token, Method::POST, "/tenants/{id}/resume", resume)
        .add(Token, Method::GET, "/tenants/{id}/events", events)
        .add(Token, Method::GET, "/tenants/{id}/logs", logs)
}

fn json_config() -> web::JsonConfig {
    json_config_limit(BODY_LIMIT)
}

fn json_config_limit(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type(|_| true)
        .content_type_required(false)
        .error_handler(move |e, _| {
            use actix_web::error::JsonPayloadError as J;
            match e {
                J::Overflow { .. } | J::OverflowKnownLength { .. } => {
                    Error::PayloadTooLarge(limit).into()
                }
                J::Deserialize(d) if d.is_data() => {
                    Error::BadRequest(format!("invalid request body: {d}")).into()
                }
                J::Deserialize(d) => Error::BadRequest(format!("malformed JSON body: {d}")).into(),
                other => Error::BadRequest(format!("unreadable request body: {other}")).into(),
            }
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
    let body = app
        .clone()
        .run_owned(async move {
            let mut body = JsonArray::default();
            tenants::list_each(&app, q.status.as_deref(), |view| body.push(&view)).await?;
            Ok(body)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body.into_body()))
}

/// A JSON array written into pieces that never grow and joined once: one growing buffer copied the
/// 4 MB of a 10,000-tenant answer about twice over (`make bench` row 6), and sending the pieces as
/// a streamed body lengthened the tail (p99 71-79 ms against 46-49 ms joined).
#[derive(Default)]
struct JsonArray {
    pieces: Vec<Vec<u8>>,
}

impl JsonArray {
    const PIECE: usize = 128 * 1024;

    fn push(&mut self, item: &impl serde::Serialize) -> Result<(), Error> {
        let first = self.pieces.is_empty();
        // A view is ~430 bytes: a piece with less than 1 KB left is full.
        if !matches!(self.pieces.last(), Some(p) if p.len() + 1024 <= Self::PIECE) {
            self.pieces.push(Vec::with_capacity(Self::PIECE));
        }
        let piece = self.pieces.last_mut().expect("a piece was just pushed");
        piece.push(if first { b'[' } else { b',' });
        serde_json::to_writer(piece, item)
            .map_err(|e| Error::Internal(format!("cannot encode the tenant list: {e}")))
    }

    fn into_body(self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.pieces.iter().map(Vec::len).sum::<usize>() + 2);
        self.pieces.iter().for_each(|p| body.extend_from_slice(p));
        if body.is_empty() {
            body.push(b'[');
        }
        body.push(b']');
        body
    }
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
    Ok(HttpResponse::Ok().json(common::wire::BotTokenAnswer { bot_token: token }))
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

/// The tenant's record when `headers` carry its own agent credential (`Authorization: Bearer
/// <AGENT_TOKEN>`); any other credential, or an unknown tenant, is the same 401: nothing to probe.
async fn agent_record(
    app: &App,
    id: &TenantId,
    headers: &actix_web::http::header::HeaderMap,
) -> Result<TenantRecord, Error> {
    let rec = app
        .registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))?;
    // An empty credential (a Go-era record) matches nothing.
    rec.filter(|r| common::http_auth::bearer_matches(headers, &r.agent_token))
        .ok_or(Error::AgentUnauthorized)
}

/// An agent reports its own activity (a long task, a scheduled job) with its own credential.
async fn agent_activity(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let headers = req.headers().clone();
    let app = app.into_inner();
    app.clone()
        .run_owned(async move {
            agent_record(&app, &id, &headers).await?;
            tenants::touch(&app, &id).await
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An assigned agent renews its state grants with its own credential (`state_grants::renew`
/// says when a pod is refused). The body is read only once the caller is authenticated.
async fn renew_state_grants(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let headers = req.headers().clone();
    let app = app.into_inner();
    let grants = app
        .clone()
        .run_owned(async move {
            let rec = agent_record(&app, &id, &headers).await?;
            let renewal: common::assignment::RenewRequest = serde_json::from_slice(&body)
                .map_err(|e| Error::BadRequest(format!("invalid request body: {e}")))?;
            crate::state_grants::renew(&app, &rec, &renewal).await
        })
        .await?;
    // Every URL in it is a credential: no cache keeps it.
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(grants))
}

async fn sleep(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    app.clone()
        .run_owned(async move { tenants::sleep(&app, &id).await })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn suspend(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    app.clone()
        .run_owned(async move { operations::suspend(&app, &id).await })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn resume(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    app.clone()
        .run_owned(async move { operations::resume(&app, &id).await })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only events with a higher sequence number (`--watch` follows with it).
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn events(
    app: web::Data<App>,
    path: web::Path<String>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let q = q.into_inner();
    let app = app.into_inner();
    let events = app
        .clone()
        .run_owned(async move { operations::events(&app, &id, q.after, q.limit).await })
        .await?;
    Ok(HttpResponse::Ok().json(events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    tail: Option<usize>,
    /// A duration: `30s`, `5m`, `2h`, `1d` (or plain seconds).
    since: Option<String>,
    #[serde(default)]
    previous: bool,
}

async fn logs(
    app: web::Data<App>,
    path: web::Path<String>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let q = q.into_inner();
    let since_s = q
        .since
        .as_deref()
        .map(parse_duration_s)
        .transpose()
        .map_err(Error::BadRequest)?;
    let query = LogQuery {
        tail: q.tail,
        since_s,
        previous: q.previous,
    };
    let app = app.into_inner();
    let text = app
        .clone()
        .run_owned(async move { operations::logs(&app, &id, &query).await })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

/// `90`, `90s`, `5m`, `2h`, `1d` as seconds.
pub fn parse_duration_s(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {v:?}: expected e.g. 30s, 5m, 2h, 1d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration {v:?}: expected e.g. 30s, 5m, 2h, 1d"
            ))
        }
    };
    Ok(n.saturating_mul(factor))
}

async fn wake_tenant(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let woken = app
        .clone()
        .run_owned(async move { wake::wake(&app, &id).await })
        .await?;
    Ok(HttpResponse::Ok().json(common::wire::WakeAnswer::from(woken)))
}

// ---- The tenant's agent: its credential (internal, for the router) and its configuration. ----

/// Largest `PUT /tenants/{id}/config` body: the configuration's own limit (256 KiB of text) plus
/// room for JSON escaping; the content limits are checked after parsing, with a clear message.
pub const CONFIG_BODY_LIMIT: usize = 1024 * 1024;

async fn agent_token(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let token = app
        .clone()
        .run_owned(async move { tenants::agent_token(&app, &id).await })
        .await?;
    Ok(HttpResponse::Ok().json(common::wire::AgentTokenAnswer { agent_token: token }))
}

async fn get_config(app: web::Data<App>, path: web::Path<String>) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let config = app
        .clone()
        .run_owned(async move { tenants::get_config(&app, &id).await })
        .await?;
    Ok(HttpResponse::Ok().json(config))
}

async fn put_config(
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Json<common::agent_config::AgentConfig>,
) -> Result<HttpResponse, Error> {
    let id = tenant_id(&path)?;
    let app = app.into_inner();
    let config = app
        .clone()
        .run_owned(async move { tenants::set_config(&app, &id, body.into_inner()).await })
        .await?;
    Ok(HttpResponse::Ok().json(config))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::MessageBody;
    use actix_web::dev::ServiceResponse;
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

    /// `POST /tenants/{id}/activity` takes only that tenant's own agent credential (not the API
    /// token, not another tenant's) and counts as activity; every refusal is the same 401.
    #[tokio::test]
    async fn an_agent_reports_its_own_activity_with_its_own_credential_only() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let bob = add_tenant(&t.app, "bob").await;
        let eve = add_tenant(&t.app, "eve").await;
        let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        t.app.registry.touch(&bob, long_ago).await.unwrap();
        let token = |id| {
            let app = t.app.clone();
            async move { app.registry.get(&id).await.unwrap().unwrap().agent_token }
        };
        let (bob_token, eve_token) = (token(bob.clone()).await, token(eve.clone()).await);
        let svc = service!(t.app, Some("api-tok"));
        let report = |uri: &str, bearer: Option<&str>| {
            let mut req = TestRequest::post().uri(uri);
            if let Some(b) = bearer {
                req = req.insert_header(("authorization", format!("Bearer {b}")));
            }
            req.to_request()
        };
        for (uri, bearer) in [
            ("/tenants/bob/activity", None),
            ("/tenants/bob/activity", Some("api-tok")),
            ("/tenants/bob/activity", Some(eve_token.expose())),
            ("/tenants/ghost/activity", Some(bob_token.expose())),
        ] {
            let (s, v) = json_of(call_service(&svc, report(uri, bearer)).await).await;
            assert_eq!(s, 401, "{uri} {v}");
            assert!(!v.to_string().contains(bob_token.expose()), "{v}");
        }
        let rec = t.app.registry.get(&bob).await.unwrap().unwrap();
        assert!(
            rec.last_active_at <= long_ago,
            "a refused report touches nothing"
        );

        let res = call_service(
            &svc,
            report("/tenants/bob/activity", Some(bob_token.expose())),
        )
        .await;
        assert_eq!(res.status(), 204);
        let rec = t.app.registry.get(&bob).await.unwrap().unwrap();
        assert!(
            rec.last_active_at > long_ago,
            "the report counts as activity"
        );
        let (s, _) =
            json_of(call_service(&svc, report("/tenants/Bad_ID/activity", Some("x"))).await).await;
        assert_eq!(s, 400);
    }

    /// `GET /tenants` is read and encoded in chunks (the registry's, the body's pieces): a list of
    /// many chunks answers every tenant once, in id order, exactly as the views encode, and a
    /// status filter applies to every chunk.
    #[tokio::test]
    async fn a_list_of_many_chunks_is_whole_and_in_order() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let ids: Vec<String> = (0..700).rev().map(|i| format!("t{i:04}")).collect();
        futures::future::join_all(ids.iter().map(|id| add_tenant(&t.app, id))).await;
        for id in ["t0003", "t0450"] {
            t.app
                .registry
                .set_status(
                    &common::TenantId::parse(id).unwrap(),
                    common::TenantStatus::Idle,
                    &common::registry::StatusUpdate::provisioning(),
                )
                .await
                .unwrap();
        }
        let records = t.app.registry.list(None).await.unwrap();
        let views: Vec<_> = records.into_iter().map(TenantRecord::into_view).collect();
        let svc = service!(t.app, None::<&str>);
        let get = |uri: &str| TestRequest::get().uri(uri).to_request();
        let body = read_body(call_service(&svc, get("/tenants")).await).await;
        assert!(
            body.len() > 2 * JsonArray::PIECE,
            "spans pieces: {}",
            body.len()
        );
        assert_eq!(body, serde_json::to_vec(&views).unwrap());
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(
            listed
                .iter()
                .map(|v| v["tenant_id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            sorted
        );
        let (s, v) = json_of(call_service(&svc, get("/tenants?status=provisioning")).await).await;
        let filtered: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["tenant_id"].clone())
            .collect();
        assert_eq!(
            (s, filtered),
            (
                200,
                vec![serde_json::json!("t0003"), serde_json::json!("t0450")]
            )
        );
        let (s, v) = json_of(call_service(&svc, get("/tenants?status=terminated")).await).await;
        assert_eq!((s, v), (200, serde_json::json!([])));
    }

    /// Presigned-looking grants whose newest complete save is `newest` (the next one `newest + 1`).
    fn fake_grants(newest: u64) -> common::assignment::StateGrants {
        use common::assignment::GenerationGrant;
        let url = |k: String| {
            Secret::new(format!(
                "http://s3.test/b/tenants/bob/{k}?X-Amz-Signature=SIG"
            ))
        };
        let generation = |g: u64| GenerationGrant {
            generation: g,
            data_url: url(format!("brain.db.{g}")),
            marker_url: Some(url(format!("brain.db.{g}.sha256"))),
        };
        common::assignment::StateGrants {
            restore: vec![generation(newest)],
            save: Some(generation(newest + 1)),
            delete: vec![url(format!("brain.db.{newest}"))],
            expires_at: Some(chrono::Utc::now() + chrono::Duration::minutes(10)),
            holder: None,
        }
    }

    /// `POST /tenants/{id}/state_grants` takes only the tenant's own agent credential (the same
    /// 401 as activity for anything else, before the body is read), answers fresh grants only to
    /// the pod the registry records or, once the record moved off it (the stop), only while no
    /// newer save landed (409 otherwise); a runtime that issues no grants is a clear 400.
    #[tokio::test]
    async fn an_agent_renews_its_state_grants_only_while_it_is_the_tenants_agent() {
        use common::registry::StatusUpdate;
        let runtime = FakeRuntime::new(Duration::ZERO);
        let t = test_app(runtime.clone(), quick_settings(), "http://127.0.0.1:1");
        let bob = add_tenant(&t.app, "bob").await;
        let eve = add_tenant(&t.app, "eve").await;
        let token = |id| {
            let app = t.app.clone();
            async move { app.registry.get(&id).await.unwrap().unwrap().agent_token }
        };
        let (bob_token, eve_token) = (token(bob.clone()).await, token(eve.clone()).await);
        let record = |status, update: StatusUpdate| {
            let (app, bob) = (t.app.clone(), bob.clone());
            async move {
                app.registry
                    .set_status(&bob, status, &update)
                    .await
                    .unwrap()
            }
        };
        record(
            common::TenantStatus::Idle,
            StatusUpdate::running("warm-a".into(), "10.0.0.7".into(), None),
        )
        .await;
        let svc = service!(t.app, Some("api-tok"));
        let renew = |uri: &str, bearer: Option<&str>, body: &str| {
            let mut req = TestRequest::post().uri(uri).set_payload(body.to_owned());
            if let Some(b) = bearer {
                req = req.insert_header(("authorization", format!("Bearer {b}")));
            }
            req.to_request()
        };
        let body = |holder: &str, generation: u64| {
            json!({"holder": holder, "generation": generation}).to_string()
        };
        let uri = "/tenants/bob/state_grants";
        let held = body("warm-a", 4);
        for (uri, bearer, b) in [
            (uri, None, held.as_str()),
            (uri, Some("api-tok"), held.as_str()),
            (uri, Some(eve_token.expose()), held.as_str()),
            (uri, None, "{"),
            (
                "/tenants/ghost/state_grants",
                Some(bob_token.expose()),
                held.as_str(),
            ),
        ] {
            let (s, v) = json_of(call_service(&svc, renew(uri, bearer, b)).await).await;
            assert_eq!(
                (s, v["error"].as_str()),
                (401, Some("missing or invalid agent credential")),
                "{uri} {b}"
            );
        }
        let bob_says = |b: &str| renew(uri, Some(bob_token.expose()), b);
        let (s, v) = json_of(call_service(&svc, bob_says(&held)).await).await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("issues no state grants"),
            "{v}"
        );

        *runtime.grants.lock().unwrap() = Some(fake_grants(3));
        for bad in ["{", r#"{"holder":"warm-a"}"#, &body(" ", 4)] {
            let (s, v) = json_of(call_service(&svc, bob_says(bad)).await).await;
            assert_eq!(s, 400, "{bad}: {v}");
        }
        // The recorded pod: fresh grants to save with, named for it, kept by no cache.
        let res = call_service(&svc, bob_says(&held)).await;
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        let (s, v) = json_of(res).await;
        assert_eq!(s, 200, "{v}");
        let g: common::assignment::StateGrants = serde_json::from_value(v).unwrap();
        assert_eq!(g.save.as_ref().map(|g| g.generation), Some(4));
        assert_eq!(g.holder.as_deref(), Some("warm-a"));
        assert!(g.restore.is_empty(), "a renewal is for saving");
        // Another pod while warm-a is the tenant's agent.
        let mut refusals = Vec::new();
        let (s, v) = json_of(call_service(&svc, bob_says(&body("warm-z", 4))).await).await;
        assert_eq!(s, 409, "{v}");
        refusals.push(v);

        // The stop: the record went idle as warm-a's pod was deleted; it may still save...
        record(common::TenantStatus::Running, StatusUpdate::idle()).await;
        let (s, v) = json_of(call_service(&svc, bob_says(&held)).await).await;
        assert_eq!(s, 200, "{v}");
        // ...unless a newer save landed (the tenant woke elsewhere and that agent saved)...
        *runtime.grants.lock().unwrap() = Some(fake_grants(4));
        let (s, v) = json_of(call_service(&svc, bob_says(&held)).await).await;
        assert_eq!(s, 409, "{v}");
        assert!(v["error"].as_str().unwrap().contains("newer save"), "{v}");
        refusals.push(v);
        // ...and never while the tenant runs in another pod.
        *runtime.grants.lock().unwrap() = Some(fake_grants(3));
        record(
            common::TenantStatus::Idle,
            StatusUpdate::running("warm-b".into(), "10.0.0.8".into(), None),
        )
        .await;
        let (s, v) = json_of(call_service(&svc, bob_says(&held)).await).await;
        assert_eq!(s, 409, "{v}");
        assert!(v["error"].as_str().unwrap().contains("another pod"), "{v}");
        refusals.push(v);
        for v in refusals {
            let text = v.to_string();
            assert!(
                !text.contains("X-Amz-Signature") && !text.contains(bob_token.expose()),
                "{text}"
            );
        }
    }

    /// The router keeps an update through an outage but gives up on an agent that cannot start:
    /// the two must be told apart by more than a status a proxy could also produce.
    #[tokio::test]
    async fn a_failed_start_is_told_apart_from_a_backend_outage() {
        let runtime = FakeRuntime::new(Duration::ZERO);
        let t = test_app(runtime.clone(), quick_settings(), "http://127.0.0.1:1");
        add_tenant(&t.app, "bob").await;
        let svc = service!(t.app, None::<&str>);
        let wake = || TestRequest::post().uri("/wake/bob").to_request();

        *runtime.fail_with.lock().unwrap() = Some("image pull failed".into());
        let (s, v) = json_of(call_service(&svc, wake()).await).await;
        assert_eq!(s, 502, "{v}");
        assert_eq!(v["code"], common::error::AGENT_START_FAILED);
        assert!(v["error"].as_str().unwrap().contains("image pull failed"));

        *runtime.fail_with.lock().unwrap() = None;
        *runtime.backend_down.lock().unwrap() = Some("kubernetes API: connection refused".into());
        let (s, v) = json_of(call_service(&svc, wake()).await).await;
        assert_eq!(s, 503, "{v}");
        assert!(v.get("code").is_none(), "{v}");
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
    async fn every_route_off_the_public_list_needs_the_token() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let svc = service!(t.app, Some("tok"));
        let routes = routes();
        let public: Vec<_> = routes
            .table()
            .routes()
            .iter()
            .filter(|r| r.access == Access::Public)
            .map(|r| r.path)
            .collect();
        assert_eq!(public, ["/healthz", "/readyz", "/metrics"]);
        let by_agent: Vec<_> = routes
            .table()
            .routes()
            .iter()
            .filter(|r| r.access == Access::Handler)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            by_agent,
            ["/tenants/{id}/activity", common::assignment::RENEW_PATH]
        );
        for r in routes.table().routes() {
            let uri = common::http_auth::sample_path(r.path, "bob");
            let req = TestRequest::default()
                .method(r.method.clone())
                .uri(&uri)
                .set_payload("{}")
                .to_request();
            let status = call_service(&svc, req).await.status();
            match r.access {
                Access::Token => assert_eq!(status, 401, "{} {}", r.method, r.path),
                // Authenticated by its handler with another credential: the API token is not it.
                Access::Handler => {
                    let req = TestRequest::default()
                        .method(r.method.clone())
                        .uri(&uri)
                        .insert_header(("authorization", "Bearer tok"))
                        .set_payload("{}")
                        .to_request();
                    let status = call_service(&svc, req).await.status();
                    assert_eq!(status, 401, "{} {} with the API token", r.method, r.path);
                }
                Access::Public => assert_ne!(status, 401, "{} {}", r.method, r.path),
            }
        }
        // Deny by default: an unknown path or a method a public path does not serve needs it too.
        for (method, uri) in [
            ("GET", "/nope"),
            ("POST", "/healthz"),
            ("DELETE", "/metrics"),
        ] {
            let req = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(uri)
                .to_request();
            assert_eq!(
                call_service(&svc, req).await.status(),
                401,
                "{method} {uri}"
            );
        }
        assert!(t.app.registry.list(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn made_up_methods_do_not_grow_metrics() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let svc = service!(t.app, Some("tok"));
        macro_rules! scrape {
            () => {{
                let res = call_service(&svc, TestRequest::get().uri("/metrics").to_request()).await;
                String::from_utf8_lossy(&read_body(res).await).into_owned()
            }};
        }
        let series = |m: &str| {
            m.lines()
                .filter(|l| l.starts_with("orchestrator_http_requests_total{"))
                .count()
        };
        for i in 0..50 {
            let req = TestRequest::default()
                .method(format!("BREW{i}").parse().unwrap())
                .uri(&format!("/tenants/x{i}"))
                .to_request();
            assert_eq!(call_service(&svc, req).await.status(), 401);
        }
        scrape!(); // the scrape's own series exists from here on
        let before = scrape!();
        for i in 50..100 {
            let req = TestRequest::default()
                .method(format!("BREW{i}").parse().unwrap())
                .uri(&format!("/tenants/x{i}"))
                .to_request();
            assert_eq!(call_service(&svc, req).await.status(), 401);
        }
        let after = scrape!();
        assert_eq!(series(&before), series(&after), "{after}");
        assert!(!after.contains("BREW") && !after.contains("x7"), "{after}");
        assert!(
            after.lines().any(|l| l
                == r#"orchestrator_http_requests_total{method="other",route="/tenants/{id}",status="401"} 100"#),
            "{after}"
        );
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

    /// `PUT /tenants/{id}/config`: every bad configuration is a 400 naming the problem and stores
    /// nothing; a good one reads back; the credential route gives the record's credential, which
    /// no view or error carries.
    #[tokio::test]
    async fn agent_config_is_validated_before_it_is_stored_and_the_credential_stays_internal() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        let svc = service!(t.app, None::<&str>);
        let req = |method: &str, uri: &str, body: &str| {
            let r = match method {
                "PUT" => TestRequest::put(),
                "POST" => TestRequest::post(),
                _ => TestRequest::get(),
            };
            r.uri(uri)
                .insert_header(("content-type", "application/json"))
                .set_payload(body.to_owned())
                .to_request()
        };
        let (s, _) = json_of(
            call_service(
                &svc,
                req(
                    "POST",
                    "/tenants",
                    r#"{"tenant_id":"bob","bot_token":"1:a"}"#,
                ),
            )
            .await,
        )
        .await;
        assert_eq!(s, 201);
        let (s, v) = json_of(call_service(&svc, req("GET", "/tenants/bob/config", "")).await).await;
        assert_eq!(
            (s, v),
            (200, json!({})),
            "no configuration yet: the platform defaults"
        );

        let good = r#"{"model":"qwen","temperature":0.3,"files":{"SOUL.md":"kind"},"agents":{"coder":{"files":{"skill_rust.md":"rust"}}}}"#;
        let (s, v) =
            json_of(call_service(&svc, req("PUT", "/tenants/bob/config", good)).await).await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = json_of(call_service(&svc, req("GET", "/tenants/bob/config", "")).await).await;
        assert_eq!(s, 200);
        assert_eq!(v, serde_json::from_str::<serde_json::Value>(good).unwrap());

        let huge = format!(r#"{{"files":{{"SOUL.md":"{}"}}}}"#, "x".repeat(70_000));
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"files":{"EVIL.md":"x"}}"#.into(),
                "\"EVIL.md\" is not a persona file",
            ),
            (
                r#"{"files":{"../../etc/passwd":"x"}}"#.into(),
                "not a persona file",
            ),
            (huge, "files.SOUL.md: 70000 bytes is over the limit"),
            (
                r#"{"temperature":3}"#.into(),
                "temperature must be a number from 0 to 2",
            ),
            (r#"{"temperature":"hot"}"#.into(), "invalid request body"),
            (r#"{"modle":"x"}"#.into(), "unknown field `modle`"),
            (
                r#"{"agents":{"Bad/Slug":{}}}"#.into(),
                "\"Bad/Slug\" is not a valid delegate name",
            ),
            (
                r#"{"agents":{"ok":{"files":{"run.sh":"x"}}}}"#.into(),
                "agents.ok.files",
            ),
            (
                r#"{"agents":{"ok":{"extra":1}}}"#.into(),
                "unknown field `extra`",
            ),
            (
                r#"{"model":""}"#.into(),
                "model: must be 1 to 200 characters",
            ),
        ];
        for (body, want) in &cases {
            let (s, v) =
                json_of(call_service(&svc, req("PUT", "/tenants/bob/config", body)).await).await;
            let msg = v["error"].as_str().unwrap_or_default();
            assert_eq!(s, 400, "{want}: {v}");
            assert!(msg.contains(want), "{msg:?} should say {want:?}");
        }
        let (_, v) = json_of(call_service(&svc, req("GET", "/tenants/bob/config", "")).await).await;
        assert_eq!(
            v["model"], "qwen",
            "a refused configuration changes nothing"
        );
        let (s, _) =
            json_of(call_service(&svc, req("PUT", "/tenants/nobody/config", "{}")).await).await;
        assert_eq!(s, 404);
        // Clearing it goes back to the defaults.
        let (s, _) =
            json_of(call_service(&svc, req("PUT", "/tenants/bob/config", "{}")).await).await;
        assert_eq!(s, 200);
        let rec = t.app.registry.get(&tid("bob")).await.unwrap().unwrap();
        assert_eq!(rec.agent_config, None);

        // The credential: generated at create, only on the internal route.
        let token = rec.agent_token.expose().to_owned();
        assert_eq!(token.len(), 64);
        let (s, v) =
            json_of(call_service(&svc, req("GET", "/tenants/bob/agent_token", "")).await).await;
        assert_eq!((s, v["agent_token"].as_str()), (200, Some(token.as_str())));
        for uri in ["/tenants/bob", "/tenants", "/tenants/bob/config"] {
            let (_, v) = json_of(call_service(&svc, req("GET", uri, "")).await).await;
            assert!(
                !v.to_string().contains(&token),
                "{uri} leaks the credential"
            );
        }
        let (s, _) =
            json_of(call_service(&svc, req("GET", "/tenants/nobody/agent_token", "")).await).await;
        assert_eq!(s, 404);
    }
}
