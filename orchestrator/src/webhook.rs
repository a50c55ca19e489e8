//! Telegram webhook registration for tenants' bots (when `ROUTER_PUBLIC_URL` is set).

use common::{Secret, TenantId};

use crate::app::App;
use crate::error::Error;
use crate::metrics::TelegramMethod;

/// `{ROUTER_PUBLIC_URL}/tg/{id}`, or `None` when the router's public URL is not configured.
pub fn webhook_url(app: &App, id: &TenantId) -> Option<String> {
    app.settings
        .router_public_url
        .as_deref()
        .map(|base| format!("{}/tg/{id}", base.trim_end_matches('/')))
}

/// Points the bot at the router, with the tenant's secret token when `WEBHOOK_SECRET` is set.
/// A no-op without `ROUTER_PUBLIC_URL`.
pub async fn register(app: &App, id: &TenantId, token: &Secret) -> Result<(), Error> {
    let Some(url) = webhook_url(app, id) else {
        return Ok(());
    };
    let secret = app
        .settings
        .webhook_secret
        .as_ref()
        .map(|s| common::webhook::secret_token(s.expose(), id));
    let result = app
        .telegram
        .set_webhook(token, &url, secret.as_deref())
        .await;
    app.metrics
        .telegram_call(TelegramMethod::setWebhook, result.is_ok());
    result.map_err(|e| Error::Telegram {
        method: "setWebhook",
        reason: reason(e),
    })?;
    tracing::info!(tenant = %id, url = %url, "telegram webhook registered");
    // The router's `GET /admin/webhook/{id}` reads this to know the token Telegram sends.
    let record = common::webhook_record::WebhookRecord {
        url,
        secret_fingerprint: app
            .settings
            .webhook_secret
            .as_ref()
            .map(|s| common::webhook::secret_fingerprint(s.expose(), id)),
        registered_at: chrono::Utc::now().timestamp(),
    };
    if let Err(e) = app.webhook_records.put(id, &record).await {
        tracing::warn!(tenant = %id, error = %e, "cannot record the webhook registration");
    }
    Ok(())
}

/// Removes the bot's webhook; best effort (the tenant is going away either way), failures logged.
pub async fn unregister(app: &App, id: &TenantId, token: &Secret) {
    match app.telegram.delete_webhook(token).await {
        Ok(()) => {
            app.metrics
                .telegram_call(TelegramMethod::deleteWebhook, true);
            tracing::info!(tenant = %id, "telegram webhook deleted");
            if let Err(e) = app.webhook_records.remove(id).await {
                tracing::warn!(tenant = %id, error = %e, "cannot remove the webhook record");
            }
        }
        Err(e) => {
            app.metrics
                .telegram_call(TelegramMethod::deleteWebhook, false);
            tracing::warn!(tenant = %id, error = %e, "telegram deleteWebhook failed")
        }
    }
}

/// The part of a Telegram error after "telegram {method} failed: ", so messages do not repeat it.
fn reason(e: common::telegram::TelegramError) -> String {
    use common::telegram::TelegramError as T;
    match e {
        T::Transport { reason, .. } => reason,
        T::Api {
            code, description, ..
        } => format!("{description} ({code})"),
    }
}
