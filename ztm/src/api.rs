//! The orchestrator and router APIs as typed calls over any transport.

use common::agent_config::AgentConfig;
use common::wire::{CreateTenant, UpdateTenant};
use common::{TenantId, TenantStatus, TenantView};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::ZtmError;
use crate::transport::{Method, Response, Service, Transport};

pub struct Api<'a> {
    transport: &'a dyn Transport,
}

/// Validates a tenant id before it goes into a path; the message matches the server's 400.
pub fn tenant_id(id: &str) -> Result<TenantId, ZtmError> {
    TenantId::parse(id).map_err(|e| ZtmError::Input(format!("invalid tenant id {id:?}: {e}")))
}

impl<'a> Api<'a> {
    pub fn new(transport: &'a dyn Transport) -> Self {
        Api { transport }
    }

    /// Sends the request; a non-2xx answer becomes `ZtmError::Rejected` with the server's message.
    pub async fn call(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response, ZtmError> {
        let resp = self
            .transport
            .request(service, method, path, body.map(|b| b.to_string()))
            .await?;
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        Err(ZtmError::Rejected(rejection(service, &resp)))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ZtmError> {
        let resp = self.call(service, method, path, body).await?;
        serde_json::from_str(&resp.body).map_err(|e| {
            ZtmError::Rejected(format!(
                "unexpected answer from {service} to {} {path}: {e}",
                method.as_str()
            ))
        })
    }

    pub async fn create(
        &self,
        id: &TenantId,
        bot_token: &str,
        idle_timeout: Option<i64>,
    ) -> Result<TenantView, ZtmError> {
        let body = CreateTenant {
            tenant_id: id.to_string(),
            bot_token: bot_token.to_owned(),
            idle_timeout_s: idle_timeout,
        };
        self.json(
            Service::Orchestrator,
            Method::Post,
            "/tenants",
            Some(body_of(&body)?),
        )
        .await
    }

    pub async fn list(&self, status: Option<TenantStatus>) -> Result<Vec<TenantView>, ZtmError> {
        let path = match status {
            Some(s) => format!("/tenants?status={s}"),
            None => "/tenants".to_owned(),
        };
        self.json(Service::Orchestrator, Method::Get, &path, None)
            .await
    }

    pub async fn get(&self, id: &TenantId) -> Result<TenantView, ZtmError> {
        self.json(
            Service::Orchestrator,
            Method::Get,
            &format!("/tenants/{id}"),
            None,
        )
        .await
    }

    pub async fn update(
        &self,
        id: &TenantId,
        bot_token: Option<&str>,
        idle_timeout: Option<i64>,
    ) -> Result<TenantView, ZtmError> {
        let body = UpdateTenant {
            bot_token: bot_token.map(str::to_owned),
            idle_timeout_s: idle_timeout,
            resources: None,
        };
        self.json(
            Service::Orchestrator,
            Method::Patch,
            &format!("/tenants/{id}"),
            Some(body_of(&body)?),
        )
        .await
    }

    pub async fn get_config(&self, id: &TenantId) -> Result<AgentConfig, ZtmError> {
        self.json(
            Service::Orchestrator,
            Method::Get,
            &format!("/tenants/{id}/config"),
            None,
        )
        .await
    }

    pub async fn put_config(
        &self,
        id: &TenantId,
        config: &AgentConfig,
    ) -> Result<AgentConfig, ZtmError> {
        let body = serde_json::to_value(config)
            .map_err(|e| ZtmError::Input(format!("cannot encode the configuration: {e}")))?;
        self.json(
            Service::Orchestrator,
            Method::Put,
            &format!("/tenants/{id}/config"),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, id: &TenantId, purge_state: bool) -> Result<(), ZtmError> {
        let path = if purge_state {
            format!("/tenants/{id}?purge_state=true")
        } else {
            format!("/tenants/{id}")
        };
        self.call(Service::Orchestrator, Method::Delete, &path, None)
            .await
            .map(drop)
    }

    pub async fn wake(&self, id: &TenantId) -> Result<Value, ZtmError> {
        self.json(
            Service::Orchestrator,
            Method::Post,
            &format!("/wake/{id}"),
            None,
        )
        .await
    }

    pub async fn sleep(&self, id: &TenantId) -> Result<(), ZtmError> {
        self.call(
            Service::Orchestrator,
            Method::Post,
            &format!("/tenants/{id}/sleep"),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn webhook(&self, id: &TenantId, method: Method) -> Result<Value, ZtmError> {
        self.json(
            Service::Router,
            method,
            &format!("/admin/webhook/{id}"),
            None,
        )
        .await
    }

    pub async fn chat(&self, id: &TenantId, message: &str) -> Result<Value, ZtmError> {
        self.json(
            Service::Router,
            Method::Post,
            &format!("/chat/{id}"),
            Some(json!({ "message": message })),
        )
        .await
    }
}

/// A request body from one of the API's `common::wire` types.
pub(crate) fn body_of(body: &impl serde::Serialize) -> Result<Value, ZtmError> {
    serde_json::to_value(body)
        .map_err(|e| ZtmError::Input(format!("cannot encode the request: {e}")))
}

/// One line for a refused request: the server's `{"error"}` text, with a hint for auth failures.
fn rejection(service: Service, resp: &Response) -> String {
    let message = serde_json::from_str::<Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| {
            resp.body
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(|l| l.chars().take(200).collect())
        });
    match (resp.status, message) {
        (401 | 403, m) => format!(
            "{service} refused the API token (HTTP {}){}: set ZTM_API_TOKEN to the service's API_TOKEN",
            resp.status,
            m.map(|m| format!(": {m}")).unwrap_or_default()
        ),
        (_, Some(m)) => m,
        (status, None) => format!("{service} answered HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.into(),
        }
    }

    #[test]
    fn rejections_pass_the_server_message_on() {
        assert_eq!(
            rejection(
                Service::Orchestrator,
                &resp(404, r#"{"error":"tenant \"bob\" not found"}"#)
            ),
            r#"tenant "bob" not found"#
        );
        assert_eq!(
            rejection(Service::Router, &resp(502, "")),
            "router answered HTTP 502"
        );
        let auth = rejection(
            Service::Orchestrator,
            &resp(401, r#"{"error":"missing bearer token"}"#),
        );
        assert!(
            auth.contains("HTTP 401") && auth.contains("ZTM_API_TOKEN"),
            "{auth}"
        );
    }

    #[test]
    fn bad_ids_are_refused_before_any_request() {
        let err = tenant_id("../x").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid tenant id \"../x\""),
            "{err}"
        );
    }
}
