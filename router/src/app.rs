//! Wiring of the router from its configuration and adapters, and its lifecycle until shutdown.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use common::cache::EndpointCache;
use common::inbox::Inbox;
use common::service::{Http, RequestTracking, Spans};
use common::telegram::TelegramClient;
use common::webhook_record::{MemoryWebhookRecords, RedisWebhookRecords, WebhookRecords};

use crate::activity::Activity;
use crate::agent::AgentClient;
use crate::api::{self, AppState};
use crate::chat::ChatService;
use crate::config::Config;
use crate::delivery::{Delivery, Dispatcher};
use crate::endpoint::Endpoints;
use crate::known_tenants::KnownTenants;
use crate::metrics::Metrics;
use crate::orchestrator_client::OrchestratorClient;
use crate::reply::Sender;
use crate::webhook_admin::WebhookAdmin;

fn orchestrator(config: &Config) -> Arc<OrchestratorClient> {
    Arc::new(
        OrchestratorClient::new(
            &config.orchestrator_addr,
            config.api_token.clone(),
            config.delivery.wake_timeout,
            config.delivery.bot_token_ttl,
        )
        .with_go_agent_port(config.agent_port),
    )
}

/// Where the webhook registrations are recorded: in Redis when the router has one (every replica
/// answers `GET /admin/webhook/{id}` alike), else in the process.
fn webhook_records(config: &Config) -> Arc<dyn WebhookRecords> {
    if let common::config::SharedBackend::Redis { url } = &config.backend {
        // The address was checked at start-up (`adapters::build`); the pool connects on first use.
        match common::redis_pool::pool(url.expose()) {
            Ok(pool) => return Arc::new(RedisWebhookRecords::new(pool)),
            Err(e) => tracing::warn!(error = %e, "webhook records kept in the process"),
        }
    }
    Arc::new(MemoryWebhookRecords::default())
}

/// Builds the HTTP state and starts delivery on the current runtime.
///
/// The HTTP side gets its own HTTP clients: actix runs handlers on other runtimes than delivery,
/// and pooled connections must not outlive the runtime that opened them.
pub fn build(
    config: &Config,
    replica: String,
    inbox: Arc<dyn Inbox>,
    cache: Arc<dyn EndpointCache>,
) -> web::Data<AppState> {
    let records = webhook_records(config);
    let metrics = Arc::new(Metrics::default());
    let (activity, activity_rx) = Activity::new(config.delivery.activity_interval);
    let orch = orchestrator(config);
    let delivery = Arc::new(Delivery {
        inbox: inbox.clone(),
        endpoints: Endpoints::new(
            cache.clone(),
            orch.clone(),
            metrics.clone(),
            config.delivery.endpoint_ttl,
        ),
        orch: orch.clone(),
        agent: AgentClient::new(config.delivery.agent_timeout),
        telegram: Sender::new(
            TelegramClient::new(&config.telegram_api_url),
            orch,
            metrics.clone(),
            &config.delivery,
        ),
        activity: activity.clone(),
        metrics: metrics.clone(),
        cfg: config.delivery.clone(),
        replica,
    });
    let dispatcher = Arc::new(Dispatcher::start(
        delivery,
        activity_rx,
        config.shutdown_timeout,
    ));
    let api_orch = orchestrator(config);
    web::Data::new(AppState {
        inbox,
        cache: cache.clone(),
        dispatcher,
        chat: ChatService {
            endpoints: Arc::new(Endpoints::new(
                cache,
                api_orch.clone(),
                metrics.clone(),
                config.delivery.endpoint_ttl,
            )),
            agent: AgentClient::new(config.delivery.agent_timeout),
            activity,
            metrics: metrics.clone(),
        },
        admin: WebhookAdmin {
            orch: api_orch.clone(),
            telegram: TelegramClient::new(&config.telegram_api_url),
            public_base_url: config.public_base_url.clone(),
            webhook_secret: config.webhook_secret.clone(),
            webhook_secret_optional: config.webhook_secret_optional,
            records,
            metrics: metrics.clone(),
        },
        metrics,
        api_token: config.api_token.clone(),
        webhook_secret: config.webhook_secret.clone(),
        webhook_secret_optional: config.webhook_secret_optional,
        known_tenants: config.webhook_secret.is_none().then(|| {
            KnownTenants::new(
                api_orch.clone(),
                config.delivery.known_tenant_ttl,
                config.delivery.unknown_tenant_ttl,
            )
        }),
        draining: Default::default(),
        max_pending_per_tenant: config.delivery.max_pending_per_tenant.into(),
    })
}

/// The actix application over `state`.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let chat = web::Data::new(state.chat.for_worker());
    let api_token = state.api_token.clone();
    // The span only when exporting: `/tg` is the hot path.
    let tracking = RequestTracking::data(state.metrics.clone(), Spans::WhenExporting);
    App::new()
        .app_data(state)
        .app_data(chat)
        .app_data(tracking)
        .wrap(from_fn(common::http_auth::require_bearer))
        .wrap(from_fn(common::service::track))
        .configure(|cfg| api::configure(cfg, api_token))
        .default_service(web::to(api::not_found))
}

/// Serves on `listener` until `shutdown` resolves (the binary passes
/// [`common::service::shutdown_signal`]), then drains: `/readyz` turns 503, the server stops
/// accepting and finishes its requests, workers finish their update in flight or leave it in the
/// inbox.
pub async fn serve(
    config: Config,
    replica: String,
    inbox: Arc<dyn Inbox>,
    cache: Arc<dyn EndpointCache>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = build(&config, replica, inbox, cache);
    let server_state = state.clone();
    let server = HttpServer::new(move || app(server_state.clone()))
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
        .listen(listener)?
        .run();
    let mut http = Http::spawn(server);
    tracing::info!(%addr, "router listening");

    let early = http.until(shutdown).await;
    tracing::info!("shutting down: draining requests and deliveries");
    state.draining.store(true, Ordering::Relaxed);
    let result = match early {
        Some(r) => {
            state.dispatcher.shutdown().await;
            r
        }
        None => {
            let (r, ()) = tokio::join!(http.drain(), state.dispatcher.shutdown());
            r
        }
    };
    tracing::info!("router stopped");
    result
}
