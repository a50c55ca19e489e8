//! Tenant management: create, read, update, delete, sleep and activity.

use chrono::Utc;
use common::agent_config::{AgentConfig, PlatformDefaults};
use common::registry::SettingsUpdate;
use common::tenant::{validate_bot_token, validate_idle_timeout};
use common::{Secret, StoreError, TenantId, TenantRecord, TenantStatus, TenantView};
use tokio::time::Instant;

use crate::app::App;
use crate::error::Error;
use crate::events::{self, reason};
use crate::lifecycle::stop_locked;
use crate::tenant_lock::TenantGuard;
use crate::webhook;
use common::lifecycle::NewEvent;

/// How long a purge waits for the agent's last save: past the pod's 30 s termination grace period,
/// after which the kubelet has killed it.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

/// Bodies of `POST /tenants` and `PATCH /tenants/{id}`, shared with `ztm`.
pub use common::wire::{CreateTenant, UpdateTenant};

/// Creates an idle tenant. The record is written first, so that an update Telegram delivers as soon
/// as the webhook is set finds its tenant; when Telegram refuses the webhook the record is removed
/// again (under the tenant's lock, so no wake sees it meanwhile) and nothing is left.
pub async fn create(app: &App, req: CreateTenant) -> Result<TenantView, Error> {
    let id = TenantId::parse(&req.tenant_id)?;
    let token = validate_bot_token(&req.bot_token).map_err(Error::BadRequest)?;
    let timeout = match req.idle_timeout_s {
        Some(t) => validate_idle_timeout(t).map_err(Error::BadRequest)?,
        None => app.settings.default_idle_timeout_s,
    };
    if find(app, &id).await?.is_some() {
        return Err(Error::AlreadyExists(id));
    }
    let mut rec = TenantRecord::new(
        id.clone(),
        token,
        timeout,
        &app.settings.namespace,
        Utc::now(),
    );
    rec.agent_token = common::tenant::new_agent_token();
    let guard = lock(app, &id).await?;
    let result = create_locked(app, &rec).await;
    guard.release().await;
    result?;
    tracing::info!(tenant = %id, idle_timeout_s = timeout, "tenant created");
    let message = format!("tenant created (idle timeout {timeout}s)");
    events::record(app, &id, NewEvent::normal(reason::CREATED, message)).await;
    Ok(rec.into_view())
}

async fn create_locked(app: &App, rec: &TenantRecord) -> Result<(), Error> {
    let id = &rec.tenant_id;
    app.registry.create(rec).await.map_err(|e| match e {
        StoreError::AlreadyExists => Error::AlreadyExists(id.clone()),
        other => Error::store("registry create")(other),
    })?;
    if let Err(e) = webhook::register(app, id, &rec.bot_token).await {
        if let Err(undo) = app.registry.delete(id).await {
            // The webhook was refused, so Telegram sends nothing for it; a retry of the create
            // answers 409 and a DELETE removes the record.
            tracing::error!(tenant = %id, error = %undo, "could not remove the record of a refused create");
        }
        return Err(e);
    }
    Ok(())
}

pub async fn get(app: &App, id: &TenantId) -> Result<TenantView, Error> {
    Ok(require(app, id).await?.into_view())
}

/// All tenants, optionally those of one status (`status` as given in the query string; empty =
/// all), handed to `each` in id order while the registry still reads: a 10,000-tenant list is
/// encoded as it is read, never held whole as records. Stops at the first error of `each`.
pub async fn list_each(
    app: &App,
    status: Option<&str>,
    mut each: impl FnMut(TenantView) -> Result<(), Error>,
) -> Result<(), Error> {
    let status = status
        .filter(|s| !s.is_empty())
        .map(str::parse::<TenantStatus>)
        .transpose()
        .map_err(Error::BadRequest)?;
    let (chunks, mut read) = tokio::sync::mpsc::unbounded_channel();
    let reading = app.registry.list_chunks(status, chunks);
    // An error of `each` ends `handing`, which drops `read`: the registry stops at its next chunk.
    let handing = async {
        while let Some(chunk) = read.recv().await {
            for record in chunk {
                each(record.into_view())?;
            }
        }
        Ok::<(), Error>(())
    };
    let (listed, handed) = tokio::join!(reading, handing);
    handed?;
    listed.map_err(Error::store("registry list"))
}

/// The bot token, for the router (the only place it leaves the service).
pub async fn bot_token(app: &App, id: &TenantId) -> Result<Secret, Error> {
    Ok(require(app, id).await?.bot_token)
}

/// The agent credential, for the router (the only place it leaves the service). A record without
/// one (written by the Go platform) gets one now, the same conditional write a wake does.
pub async fn agent_token(app: &App, id: &TenantId) -> Result<Secret, Error> {
    let rec = require(app, id).await?;
    if !rec.agent_token.is_empty() {
        return Ok(rec.agent_token);
    }
    let rec = app
        .registry
        .set_agent_token_if_absent(id, &common::tenant::new_agent_token())
        .await
        .map_err(|e| not_found_or(id, e, "registry set agent token"))?;
    Ok(rec.agent_token)
}

/// The tenant's agent configuration as stored (platform defaults not applied).
pub async fn get_config(app: &App, id: &TenantId) -> Result<AgentConfig, Error> {
    let rec = require(app, id).await?;
    match rec.agent_config {
        None => Ok(AgentConfig::default()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("stored agent configuration is unreadable: {e}"))),
    }
}

/// Validates and stores the whole configuration; in force from the agent's next start.
/// Nothing is stored when it is refused.
pub async fn set_config(
    app: &App,
    id: &TenantId,
    config: AgentConfig,
) -> Result<AgentConfig, Error> {
    config
        .render(id.as_str(), &PlatformDefaults::default())
        .map_err(|e| Error::BadRequest(format!("invalid agent configuration: {e}")))?;
    let empty = config == AgentConfig::default();
    let json = serde_json::to_string(&config)
        .map_err(|e| Error::Internal(format!("cannot encode the configuration: {e}")))?;
    app.registry
        .set_agent_config(id, (!empty).then_some(json.as_str()))
        .await
        .map_err(|e| not_found_or(id, e, "registry set agent config"))?;
    tracing::info!(
        tenant = %id,
        files = ?config.files.keys().collect::<Vec<_>>(),
        delegates = config.agents.len(),
        "agent configuration stored; in force from the next start"
    );
    Ok(config)
}

/// Changes the bot token and/or idle timeout. A new token re-registers the webhook before it is stored.
pub async fn update(app: &App, id: &TenantId, req: UpdateTenant) -> Result<TenantView, Error> {
    if req.bot_token.is_none() && req.idle_timeout_s.is_none() && req.resources.is_none() {
        // The Go platform answered `{}` with the record, a no-op its operations guide relies on.
        return Ok(require(app, id).await?.into_view());
    }
    let current = require(app, id).await?;
    let resources = req
        .resources
        .as_ref()
        .map(|change| {
            let next = current.resources.updated(change);
            next.over(&app.settings.agent_resources)
                .validate(&app.settings.resource_bounds)
                .map(|()| next)
        })
        .transpose()
        .map_err(Error::BadRequest)?;
    let update = SettingsUpdate {
        resources,
        bot_token: req
            .bot_token
            .as_deref()
            .map(validate_bot_token)
            .transpose()
            .map_err(Error::BadRequest)?,
        idle_timeout_s: req
            .idle_timeout_s
            .map(validate_idle_timeout)
            .transpose()
            .map_err(Error::BadRequest)?,
    };
    if let Some(token) = &update.bot_token {
        if *token != current.bot_token {
            webhook::register(app, id, token).await?;
        }
    }
    let rec = app
        .registry
        .update_settings(id, &update)
        .await
        .map_err(|e| not_found_or(id, e, "registry update"))?;
    tracing::info!(
        tenant = %id,
        bot_token_changed = update.bot_token.is_some(),
        idle_timeout_s = rec.idle_timeout_s,
        "tenant updated"
    );
    let mut changed = Vec::new();
    if update.bot_token.is_some() {
        changed.push("bot token changed".to_owned());
    }
    if current.idle_timeout_s != rec.idle_timeout_s {
        changed.push(format!(
            "idle timeout {}s -> {}s",
            current.idle_timeout_s, rec.idle_timeout_s
        ));
    }
    if current.resources != rec.resources {
        let r = rec.resources.over(&app.settings.agent_resources);
        changed.push(format!(
            "resources cpu {}/{} memory {}/{} (request/limit), applied at the next start",
            r.cpu_request.unwrap_or_default(),
            r.cpu_limit.unwrap_or_default(),
            r.memory_request.unwrap_or_default(),
            r.memory_limit.unwrap_or_default()
        ));
    }
    if !changed.is_empty() {
        let event = NewEvent::normal(reason::CONFIG_CHANGED, changed.join(", "));
        events::record(app, id, event).await;
    }
    Ok(rec.into_view())
}

/// Sets `last_active_at` to now.
pub async fn touch(app: &App, id: &TenantId) -> Result<(), Error> {
    app.registry
        .touch(id, Utc::now())
        .await
        .map_err(|e| not_found_or(id, e, "registry touch"))
}

/// Stops the agent now (its state is saved) and marks the tenant idle; a no-op when already idle.
pub async fn sleep(app: &App, id: &TenantId) -> Result<(), Error> {
    if require(app, id).await?.status == TenantStatus::Idle {
        return Ok(());
    }
    let guard = lock(app, id).await?;
    let result = async {
        let rec = require(app, id).await?;
        if rec.status == TenantStatus::Idle {
            return Ok(());
        }
        tracing::info!(tenant = %id, "sleep: stopping agent");
        stop_locked(app, &guard, id, "sleep").await
    }
    .await;
    guard.release().await;
    result
}

/// Removes the tenant and everything it owns; idempotent. The saved state is kept unless `purge_state`.
pub async fn delete(app: &App, id: &TenantId, purge_state: bool) -> Result<(), Error> {
    let guard = lock(app, id).await?;
    let result = delete_locked(app, &guard, id, purge_state).await;
    guard.release().await;
    result
}

/// The deletion proper, under the lock. The record says `deleting` (phase Deleting) until every
/// object is gone, so that the reconciler finishes a deletion this replica could not.
pub(crate) async fn delete_locked(
    app: &App,
    _guard: &TenantGuard,
    id: &TenantId,
    purge_state: bool,
) -> Result<(), Error> {
    let mut rec = find(app, id).await?;
    if rec.as_ref().is_some_and(|r| !r.deleting) {
        match app.registry.set_deleting(id).await {
            Ok(r) => rec = Some(r),
            Err(StoreError::NotFound) => rec = None,
            Err(e) => return Err(Error::store("registry set_deleting")(e)),
        }
        let event = NewEvent::normal(reason::DELETING, "deletion begun: agent, objects, webhook");
        events::record(app, id, event).await;
    }
    app.runtime.stop(id).await?;
    if purge_state {
        // The agent saves after SIGTERM: deleting the state before it is gone would let the
        // "purged" memory come back (and a new tenant of the same id inherit it).
        app.runtime.wait_stopped(id, PURGE_WAIT).await?;
    }
    match rec.as_ref().map(|r| r.status) {
        Some(TenantStatus::Running) => {
            app.metrics.agent_stopped("delete");
            app.metrics
                .running_tenants
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(TenantStatus::Provisioning) => app.metrics.agent_stopped("delete"),
        _ => {}
    }
    app.runtime.remove(id).await?;
    app.forget_endpoint(id).await;
    if let Some(rec) = &rec {
        webhook::unregister(app, id, &rec.bot_token).await;
    }
    if purge_state {
        app.state
            .delete(id)
            .await
            .map_err(Error::store("state store delete"))?;
    }
    // Last: until here the record (phase Deleting) lets the reconciler finish the work.
    let existed = app
        .registry
        .delete(id)
        .await
        .map_err(Error::store("registry delete"))?;
    if existed {
        tracing::info!(tenant = %id, purge_state, "tenant deleted");
        let message = if purge_state {
            "tenant deleted, saved state purged"
        } else {
            "tenant deleted, saved state kept"
        };
        events::record(app, id, NewEvent::normal(reason::DELETED, message)).await;
    }
    Ok(())
}

/// Waits for the tenant's lock (a wake in progress finishes first).
async fn lock(app: &App, id: &TenantId) -> Result<TenantGuard, Error> {
    let deadline = Instant::now() + app.settings.wake_wait();
    app.locks
        .lock(id, deadline)
        .await
        .map_err(Error::store("wake lock"))?
        .ok_or_else(|| Error::Busy(id.clone()))
}

async fn find(app: &App, id: &TenantId) -> Result<Option<TenantRecord>, Error> {
    app.registry
        .get(id)
        .await
        .map_err(Error::store("registry get"))
}

async fn require(app: &App, id: &TenantId) -> Result<TenantRecord, Error> {
    find(app, id)
        .await?
        .ok_or_else(|| Error::NotFound(id.clone()))
}

fn not_found_or(id: &TenantId, e: StoreError, what: &'static str) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound(id.clone()),
        other => Error::store(what)(other),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::app::Settings;
    use crate::metrics::{CallResult, TelegramLabels, TelegramMethod};
    use crate::testing::*;

    fn create_req(id: &str, token: &str) -> CreateTenant {
        CreateTenant {
            tenant_id: id.into(),
            bot_token: token.into(),
            idle_timeout_s: None,
        }
    }

    fn with_router(settings: Settings) -> Settings {
        Settings {
            router_public_url: Some("https://router.example.com".into()),
            webhook_secret: Some(Secret::new("s3cret")),
            ..settings
        }
    }

    #[tokio::test]
    async fn create_registers_the_webhook_with_the_tenant_secret() {
        let telegram = StubServer::json(r#"{"ok":true,"result":true}"#);
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            with_router(quick_settings()),
            &telegram.url(),
        );
        let view = create(&t.app, create_req("bob", "123:abc")).await.unwrap();
        assert_eq!(view.status, TenantStatus::Idle);
        assert_eq!(view.idle_timeout_s, 300);
        let calls = telegram.requests();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].line(), "POST /bot123:abc/setWebhook");
        let body: serde_json::Value = serde_json::from_str(&calls[0].body).unwrap();
        assert_eq!(body["url"], "https://router.example.com/tg/bob");
        assert_eq!(
            body["secret_token"],
            common::webhook::secret_token("s3cret", &tid("bob"))
        );
        assert!(matches!(
            create(&t.app, create_req("bob", "123:abc")).await,
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(
            telegram.requests().len(),
            1,
            "a duplicate does not touch Telegram"
        );
        assert_eq!(
            t.app.metrics.telegram_calls.get(TelegramLabels {
                method: TelegramMethod::setWebhook,
                result: CallResult::ok
            }),
            1
        );
    }

    #[tokio::test]
    async fn telegram_failure_writes_nothing() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            with_router(quick_settings()),
            "http://127.0.0.1:1",
        );
        let err = create(&t.app, create_req("bob", "123:abc"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Telegram { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("telegram setWebhook failed: "),
            "{err}"
        );
        assert!(!err.to_string().contains("123:abc"), "no token in errors");
        assert!(t.app.registry.get(&tid("bob")).await.unwrap().is_none());
        assert_eq!(
            t.app.metrics.telegram_calls.get(TelegramLabels {
                method: TelegramMethod::setWebhook,
                result: CallResult::error
            }),
            1
        );
    }

    #[tokio::test]
    async fn invalid_input_is_rejected_before_any_write() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        for (id, token, timeout) in [
            ("Bad_ID", "1:a", None),
            ("-x", "1:a", None),
            ("", "1:a", None),
            ("ok", "", None),
            ("ok", "1:a", Some(0)),
            ("ok", "1:a", Some(-5)),
        ] {
            let req = CreateTenant {
                tenant_id: id.into(),
                bot_token: token.into(),
                idle_timeout_s: timeout,
            };
            let err = create(&t.app, req).await.unwrap_err();
            assert!(
                matches!(err, Error::InvalidTenantId(_) | Error::BadRequest(_)),
                "{id:?}: {err:?}"
            );
        }
        assert!(t.app.registry.list(None).await.unwrap().is_empty());
        // `{}` is the Go platform's no-op: the record back, nothing written.
        let id = add_tenant(&t.app, "bob").await;
        let before = t.app.registry.get(&id).await.unwrap().unwrap();
        let view = update(&t.app, &id, UpdateTenant::default()).await.unwrap();
        assert_eq!(view.tenant_id.as_str(), "bob");
        assert_eq!(t.app.registry.get(&id).await.unwrap().unwrap(), before);
    }

    #[tokio::test]
    async fn a_new_token_re_registers_before_it_is_stored() {
        let telegram = StubServer::json(r#"{"ok":true,"result":true}"#);
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            with_router(quick_settings()),
            &telegram.url(),
        );
        let id = add_tenant(&t.app, "bob").await;
        let req = UpdateTenant {
            bot_token: Some("456:def".into()),
            idle_timeout_s: Some(60),
            resources: None,
        };
        let view = update(&t.app, &id, req).await.unwrap();
        assert_eq!(view.idle_timeout_s, 60);
        assert_eq!(telegram.requests()[0].line(), "POST /bot456:def/setWebhook");
        assert_eq!(bot_token(&t.app, &id).await.unwrap().expose(), "456:def");
    }

    #[tokio::test]
    async fn delete_stops_the_agent_and_is_idempotent() {
        let telegram = StubServer::json(r#"{"ok":true,"result":true}"#);
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            &telegram.url(),
        );
        let id = add_tenant(&t.app, "bob").await;
        crate::wake::wake(&t.app, &id).await.unwrap();
        t.app.state.save(&id, b"memory").await.unwrap();
        delete(&t.app, &id, false).await.unwrap();
        assert!(!t.runtime.running(&id));
        assert!(t.app.registry.get(&id).await.unwrap().is_none());
        assert_eq!(t.app.cache.get(&id).await.unwrap(), None);
        assert!(telegram
            .requests()
            .iter()
            .any(|r| r.line().ends_with("/deleteWebhook")));
        assert_eq!(
            t.app.state.load(&id).await.unwrap().as_deref(),
            Some(&b"memory"[..]),
            "state kept"
        );
        delete(&t.app, &id, true).await.unwrap();
        assert_eq!(t.app.state.load(&id).await.unwrap(), None, "state purged");
    }

    #[tokio::test]
    async fn sleep_and_activity() {
        let t = test_app(
            FakeRuntime::new(Duration::ZERO),
            quick_settings(),
            "http://127.0.0.1:1",
        );
        assert!(matches!(
            sleep(&t.app, &tid("ghost")).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            touch(&t.app, &tid("ghost")).await,
            Err(Error::NotFound(_))
        ));
        let id = add_tenant(&t.app, "bob").await;
        sleep(&t.app, &id).await.unwrap(); // already idle: a no-op
        crate::wake::wake(&t.app, &id).await.unwrap();
        sleep(&t.app, &id).await.unwrap();
        assert!(!t.runtime.running(&id));
        let rec = t.app.registry.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TenantStatus::Idle);
        assert!(rec.pod_ip.is_empty());
        touch(&t.app, &id).await.unwrap();
    }
}
