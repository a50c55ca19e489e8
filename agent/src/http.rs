//! HTTP surface of the agent contract: `POST /webhook`, `GET /health`, and `GET /api/health`, the
//! identity probe (200 only with this tenant's credential, like ZeroClaw's paired gateway).

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use common::wire::{
    AgentHealth, AgentMessage, AgentReply, ErrorBody, AGENT_HEALTH_PATH, AGENT_PAIRED_HEALTH_PATH,
    AGENT_WEBHOOK_PATH, IDEMPOTENCY_KEY_HEADER, TENANT_ID_HEADER,
};

use crate::service::Agent;
use crate::warm::Warm;

/// The tenant an agent serves: from its environment, or from an assignment (warm agents).
pub struct Serving {
    pub tenant_id: String,
    pub agent: Agent,
    /// The credential every caller must present as `Authorization: Bearer`; `None` refuses all.
    pub agent_token: Option<String>,
}

pub struct AppState {
    serving: OnceLock<Serving>,
    /// `AGENT_REQUIRE_CREDENTIAL=false`: plays an agent of the Go platform, which checks no
    /// credential (the cut-over drill); never set for a real tenant.
    pub accept_any_caller: bool,
    /// Set for a warm-pool agent: it serves nobody until `POST /assign` succeeds.
    warm: Option<Warm>,
}

impl AppState {
    /// An agent that serves its tenant from the start.
    pub fn serving(serving: Serving, accept_any_caller: bool) -> Self {
        AppState {
            serving: OnceLock::from(serving),
            accept_any_caller,
            warm: None,
        }
    }

    /// A warm-pool agent waiting for its assignment.
    pub fn warm(warm: Warm) -> Self {
        AppState {
            serving: OnceLock::new(),
            accept_any_caller: false,
            warm: Some(warm),
        }
    }

    /// The tenant served, once there is one.
    pub fn current(&self) -> Option<&Serving> {
        self.serving.get()
    }

    pub fn warm_slot(&self) -> Option<&Warm> {
        self.warm.as_ref()
    }

    /// Whether the request carries this tenant's credential (compared in constant time).
    fn paired(&self, req: &HttpRequest) -> bool {
        let Some(serving) = self.current() else {
            return false;
        };
        if self.accept_any_caller {
            return true;
        }
        let Some(expected) = &serving.agent_token else {
            return false;
        };
        let got = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim()
            .as_bytes();
        let want = expected.as_bytes();
        got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn unauthorized() -> HttpResponse {
    error(
        StatusCode::UNAUTHORIZED,
        "missing or invalid agent credential",
    )
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(AGENT_WEBHOOK_PATH, web::post().to(webhook))
        .route(AGENT_HEALTH_PATH, web::get().to(health))
        .route(AGENT_PAIRED_HEALTH_PATH, web::get().to(api_health))
        .route(common::assignment::ASSIGN_PATH, web::post().to(assign));
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody::new(message))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<Result<&'a str, ()>> {
    req.headers().get(name).map(|v| v.to_str().map_err(|_| ()))
}

async fn webhook(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let Some(serving) = state.current().filter(|_| state.paired(&req)) else {
        return unauthorized();
    };
    if let Some(tenant) = header(&req, TENANT_ID_HEADER) {
        if tenant != Ok(serving.tenant_id.as_str()) {
            return error(StatusCode::MISDIRECTED_REQUEST, "wrong tenant");
        }
    }
    let key = match header(&req, IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(Ok(k)) => Some(k.to_owned()),
        Some(Err(())) => {
            return error(
                StatusCode::BAD_REQUEST,
                "X-Idempotency-Key is not valid text",
            )
        }
    };
    let msg: AgentMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON {{\"message\": string}}: {e}"),
            )
        }
    };
    let trace_id = header(&req, "traceparent")
        .and_then(Result::ok)
        .and_then(trace_id)
        .unwrap_or_default();
    match serving.agent.handle(key, msg.message.into_owned()).await {
        Ok(response) => {
            // The caller's trace id (W3C `traceparent`) joins this line to the router's delivery.
            tracing::debug!(trace_id, "message answered");
            HttpResponse::Ok().json(AgentReply { response })
        }
        Err(e) => {
            tracing::error!(error = %e, "storing message failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "storing message failed")
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-{32 hex}-{16 hex}-{2 hex}`).
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let serving = state.current();
    HttpResponse::Ok().json(AgentHealth {
        status: "ok".into(),
        warm: serving.is_none().then_some(true),
        tenant_id: serving.map(|s| s.tenant_id.clone()),
        paired: None,
    })
}

async fn api_health(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(serving) = state.current().filter(|_| state.paired(&req)) else {
        return unauthorized();
    };
    HttpResponse::Ok().json(AgentHealth {
        status: "ok".into(),
        tenant_id: Some(serving.tenant_id.clone()),
        paired: Some(true),
        warm: None,
    })
}

/// `POST /assign` (warm agents): the shared protocol of `common::assignment`.
async fn assign(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let Some(warm) = state.warm_slot() else {
        return error(StatusCode::NOT_FOUND, "not a warm agent");
    };
    let auth = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match warm.assign(auth, &body).await {
        Ok((serving, answer)) => {
            tracing::info!(
                tenant = %answer.tenant_id,
                restored_generation = ?answer.restored_generation,
                "warm agent assigned"
            );
            // The gate admits one assignment only, so this is the first and last set.
            let _ = state.serving.set(serving);
            HttpResponse::Ok().json(answer)
        }
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(error = %e, "assignment failed");
            }
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            error(status, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::{test, App};
    use serde_json::Value;

    use super::*;
    use crate::brain::Brain;

    const TOKEN: &str = "bob-credential";
    const AUTH: (&str, &str) = ("Authorization", "Bearer bob-credential");

    fn state(dir: &std::path::Path) -> web::Data<AppState> {
        web::Data::new(AppState::serving(
            Serving {
                tenant_id: "bob".into(),
                agent: Agent::new(Brain::open(dir).unwrap(), Duration::ZERO),
                agent_token: Some(TOKEN.into()),
            },
            false,
        ))
    }

    /// POSTs `body` to /webhook with `headers`; returns the status and the JSON body.
    macro_rules! post {
        ($app:expr, $headers:expr, $body:expr) => {{
            let mut req = test::TestRequest::post()
                .uri("/webhook")
                .insert_header(AUTH)
                .insert_header(("content-type", "application/json"))
                .set_payload($body.to_owned());
            for h in $headers {
                req = req.insert_header(*h);
            }
            let resp = test::call_service(&$app, req.to_request()).await;
            let status = resp.status().as_u16();
            let body: Value = serde_json::from_slice(&test::read_body(resp).await).unwrap();
            (status, body)
        }};
    }

    #[actix_web::test]
    async fn webhook_counts_dedupes_and_checks_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let app =
            test::init_service(App::new().app_data(state(dir.path())).configure(routes)).await;

        let (s, b) = post!(app, &[] as &[(&str, &str)], r#"{"message":"hi"}"#);
        assert_eq!((s, b["response"].as_str()), (200, Some("echo: hi (#1)")));
        let (s, b) = post!(
            app,
            &[("X-Idempotency-Key", "bob:7")],
            r#"{"message":"yo"}"#
        );
        assert_eq!((s, b["response"].as_str()), (200, Some("echo: yo (#2)")));
        let (_, b) = post!(
            app,
            &[("X-Idempotency-Key", "bob:7")],
            r#"{"message":"yo"}"#
        );
        assert_eq!(b["response"], "echo: yo (#2)");
        let (_, b) = post!(app, &[("X-Tenant-Id", "bob")], r#"{"message":"x"}"#);
        assert_eq!(b["response"], "echo: x (#3)");

        let (s, b) = post!(app, &[("X-Tenant-Id", "alice")], r#"{"message":"x"}"#);
        assert_eq!((s, b["error"].as_str()), (421, Some("wrong tenant")));
        for bad in ["{", r#"{"message": 5}"#, "{}", ""] {
            let (s, b) = post!(app, &[] as &[(&str, &str)], bad);
            assert_eq!(s, 400, "{bad}");
            assert!(b["error"].is_string());
        }
        let (_, b) = post!(app, &[] as &[(&str, &str)], r#"{"message":"z"}"#);
        assert_eq!(
            b["response"], "echo: z (#4)",
            "rejected requests must not count"
        );
    }

    #[actix_web::test]
    async fn health_names_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let app =
            test::init_service(App::new().app_data(state(dir.path())).configure(routes)).await;
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        assert_eq!(resp.status(), 200);
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "tenant_id": "bob"})
        );
    }

    /// Only this tenant's credential is answered: another tenant's (a request that reached this
    /// agent through a reused address) or none is 401 and is not counted.
    #[actix_web::test]
    async fn only_the_tenant_credential_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let app =
            test::init_service(App::new().app_data(state(dir.path())).configure(routes)).await;
        for auth in [
            None,
            Some("Bearer alice-credential"),
            Some("bob-credential"),
            Some("Bearer "),
        ] {
            let mut req = test::TestRequest::post()
                .uri("/webhook")
                .insert_header(("content-type", "application/json"))
                .set_payload(r#"{"message":"hi"}"#);
            if let Some(a) = auth {
                req = req.insert_header(("Authorization", a));
            }
            let resp = test::call_service(&app, req.to_request()).await;
            assert_eq!(resp.status(), 401, "{auth:?}");
            let mut probe = test::TestRequest::get().uri("/api/health");
            if let Some(a) = auth {
                probe = probe.insert_header(("Authorization", a));
            }
            let resp = test::call_service(&app, probe.to_request()).await;
            assert_eq!(resp.status(), 401, "{auth:?}");
        }
        let resp = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/health")
                .insert_header(AUTH)
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let (s, b) = post!(app, &[] as &[(&str, &str)], r#"{"message":"hi"}"#);
        assert_eq!(
            (s, b["response"].as_str()),
            (200, Some("echo: hi (#1)")),
            "refused ones did not count"
        );

        // No credential configured: nothing is answered.
        let open = web::Data::new(AppState::serving(
            Serving {
                tenant_id: "bob".into(),
                agent: Agent::new(Brain::open(dir.path()).unwrap(), Duration::ZERO),
                agent_token: None,
            },
            false,
        ));
        let app = test::init_service(App::new().app_data(open).configure(routes)).await;
        let (s, _) = post!(app, &[] as &[(&str, &str)], r#"{"message":"hi"}"#);
        assert_eq!(s, 401);
    }

    #[test]
    async fn trace_id_is_read_from_a_traceparent_and_junk_is_ignored() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("00-short-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(""), None);
    }
}
