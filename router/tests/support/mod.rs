//! In-test fakes of the router's neighbours: an orchestrator, agents and the Telegram Bot API, each a
//! small actix server on a free 127.0.0.1 port, recording what they were asked.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

pub const BOT_TOKEN: &str = "123456:SECRET-bot-token";

/// The shared HTTP stub (`common::stub`): a free 127.0.0.1 port, stopped on drop.
pub use common::stub::Stub as Server;

/// A port nothing listens on.
pub fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

// ---------- Telegram ----------

#[derive(Debug, Clone, PartialEq)]
pub struct TgCall {
    pub token: String,
    pub method: String,
    pub body: Value,
}

#[derive(Default)]
pub struct Telegram {
    pub calls: Mutex<Vec<TgCall>>,
    /// When not 0, every `sendMessage` is refused by flood control with this `retry_after` (s)
    /// and counted in `flooded`, not in `calls`.
    pub flood_retry_after: AtomicU64,
    pub flooded: AtomicUsize,
}

impl Telegram {
    pub fn start() -> (Arc<Telegram>, Server) {
        let state = Arc::new(Telegram::default());
        let s = state.clone();
        let server = Server::routes(move |cfg| {
            cfg.app_data(web::Data::from(s.clone())).route(
                "/bot{token}/{method}",
                web::post().to(
                    |path: web::Path<(String, String)>,
                     body: web::Json<Value>,
                     tg: web::Data<Telegram>| async move {
                        let (token, method) = path.into_inner();
                        let flood = tg.flood_retry_after.load(Ordering::Relaxed);
                        if flood > 0 && method == "sendMessage" {
                            tg.flooded.fetch_add(1, Ordering::Relaxed);
                            return HttpResponse::TooManyRequests().json(json!({
                                "ok": false,
                                "error_code": 429,
                                "description": format!("Too Many Requests: retry after {flood}"),
                                "parameters": {"retry_after": flood},
                            }));
                        }
                        tg.calls.lock().unwrap().push(TgCall {
                            token,
                            method,
                            body: body.into_inner(),
                        });
                        HttpResponse::Ok().json(json!({"ok": true, "result": true}))
                    },
                ),
            );
        });
        (state, server)
    }

    pub fn calls(&self) -> Vec<TgCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Texts sent with sendMessage to `chat`, in order.
    pub fn messages_to(&self, chat: i64) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == json!(chat))
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn sent_texts(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "sendMessage")
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

// ---------- Agent ----------

#[derive(Debug, Clone)]
pub struct AgentCall {
    pub message: String,
    pub idempotency_key: String,
    pub tenant: String,
}

/// The agent credential the fake orchestrator hands out for `tenant`.
pub fn agent_token(tenant: &str) -> String {
    format!("agent-credential-{tenant}")
}

/// Answers `echo: <message>`, or `status` when it is not 200; 401 without the tenant's credential
/// (like ZeroClaw's paired gateway); 421 for a foreign `X-Tenant-Id` unless `ignores_tenant_header`
/// (ZeroClaw ignores it).
pub struct Agent {
    pub tenant: String,
    pub ignores_tenant_header: std::sync::atomic::AtomicBool,
    /// Requests refused for a wrong or missing credential.
    pub refused: AtomicUsize,
    pub status: AtomicU16,
    pub delay_ms: AtomicU64,
    pub calls: Mutex<Vec<AgentCall>>,
}

impl Agent {
    pub fn start(tenant: &str) -> (Arc<Agent>, Server) {
        let state = Arc::new(Agent {
            tenant: tenant.to_owned(),
            ignores_tenant_header: Default::default(),
            refused: AtomicUsize::new(0),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let server = Server::routes(move |cfg| {
            cfg.app_data(web::Data::from(s.clone())).route(
                "/webhook",
                web::post().to(
                    |req: HttpRequest, body: web::Json<Value>, agent: web::Data<Agent>| async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        if header("authorization")
                            != format!("Bearer {}", agent_token(&agent.tenant))
                        {
                            agent.refused.fetch_add(1, Ordering::Relaxed);
                            return HttpResponse::Unauthorized()
                                .json(json!({"error": "unauthorized"}));
                        }
                        let tenant = header("x-tenant-id");
                        if tenant != agent.tenant
                            && !agent.ignores_tenant_header.load(Ordering::Relaxed)
                        {
                            return HttpResponse::MisdirectedRequest()
                                .json(json!({"error": "wrong tenant"}));
                        }
                        let message = body["message"].as_str().unwrap_or_default().to_owned();
                        agent.calls.lock().unwrap().push(AgentCall {
                            message: message.clone(),
                            idempotency_key: header("x-idempotency-key"),
                            tenant,
                        });
                        let delay = agent.delay_ms.load(Ordering::Relaxed);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let status = agent.status.load(Ordering::Relaxed);
                        if status != 200 {
                            return HttpResponse::build(
                                actix_web::http::StatusCode::from_u16(status).unwrap(),
                            )
                            .json(json!({"error": "boom"}));
                        }
                        HttpResponse::Ok().json(json!({"response": format!("echo: {message}")}))
                    },
                ),
            );
        });
        (state, server)
    }

    pub fn messages(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.message.clone())
            .collect()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

// ---------- Orchestrator ----------

#[derive(Debug, Clone)]
pub enum WakeReply {
    Endpoint(String),
    /// An error status without the orchestrator's "agent could not start" code (an outage).
    Status(u16),
    /// 502 with `code: agent_start_failed`: the agent itself could not be started.
    AgentFailed,
}

/// Knows the tenants in `wake`; answers their bot token and wakes them as configured.
#[derive(Default)]
pub struct Orchestrator {
    pub wake: Mutex<HashMap<String, WakeReply>>,
    pub wake_delay_ms: AtomicU64,
    pub wakes: Mutex<HashMap<String, usize>>,
    pub activity: Mutex<HashMap<String, usize>>,
    pub token_calls: AtomicUsize,
    /// `GET /tenants/{id}` calls (the webhook's existence check).
    pub view_calls: AtomicUsize,
    pub agent_token_calls: AtomicUsize,
    /// Tenants whose view says `suspended` (`GET /tenants/{id}`).
    pub suspended: Mutex<std::collections::HashSet<String>>,
}

impl Orchestrator {
    pub fn start() -> (Arc<Orchestrator>, Server) {
        let state = Arc::new(Orchestrator::default());
        let s = state.clone();
        let server = Server::routes(move |cfg| {
            cfg.app_data(web::Data::from(s.clone()))
                .route(
                    "/wake/{id}",
                    web::post().to(
                        |id: web::Path<String>, o: web::Data<Orchestrator>| async move {
                            *o.wakes.lock().unwrap().entry(id.clone()).or_default() += 1;
                            let delay = o.wake_delay_ms.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let reply = o.wake.lock().unwrap().get(id.as_str()).cloned();
                            match reply {
                                Some(WakeReply::Endpoint(ep)) => HttpResponse::Ok()
                                    .json(json!({"pod_ip": "127.0.0.1", "endpoint": ep})),
                                Some(WakeReply::Status(s)) => HttpResponse::build(
                                    actix_web::http::StatusCode::from_u16(s).unwrap(),
                                )
                                .json(json!({"error": "backend unavailable"})),
                                Some(WakeReply::AgentFailed) => HttpResponse::BadGateway().json(
                                    json!({"error": "agent did not start", "code": "agent_start_failed"}),
                                ),
                                None => HttpResponse::NotFound()
                                    .json(json!({"error": "tenant not found"})),
                            }
                        },
                    ),
                )
                .route(
                    "/tenants/{id}",
                    web::get().to(
                        |id: web::Path<String>, o: web::Data<Orchestrator>| async move {
                            o.view_calls.fetch_add(1, Ordering::Relaxed);
                            if !o.wake.lock().unwrap().contains_key(id.as_str()) {
                                return HttpResponse::NotFound()
                                    .json(json!({"error": "tenant not found"}));
                            }
                            let suspended = o.suspended.lock().unwrap().contains(id.as_str());
                            HttpResponse::Ok()
                                .json(json!({"tenant_id": id.as_str(), "suspended": suspended}))
                        },
                    ),
                )
                .route(
                    "/tenants/{id}/bot_token",
                    web::get().to(
                        |id: web::Path<String>, o: web::Data<Orchestrator>| async move {
                            o.token_calls.fetch_add(1, Ordering::Relaxed);
                            if o.wake.lock().unwrap().contains_key(id.as_str()) {
                                HttpResponse::Ok().json(json!({"bot_token": BOT_TOKEN}))
                            } else {
                                HttpResponse::NotFound().json(json!({"error": "tenant not found"}))
                            }
                        },
                    ),
                )
                .route(
                    "/tenants/{id}/agent_token",
                    web::get().to(
                        |id: web::Path<String>, o: web::Data<Orchestrator>| async move {
                            o.agent_token_calls.fetch_add(1, Ordering::Relaxed);
                            if o.wake.lock().unwrap().contains_key(id.as_str()) {
                                HttpResponse::Ok().json(json!({"agent_token": agent_token(&id)}))
                            } else {
                                HttpResponse::NotFound().json(json!({"error": "tenant not found"}))
                            }
                        },
                    ),
                )
                .route(
                    "/tenants/{id}/activity",
                    web::put().to(
                        |id: web::Path<String>, o: web::Data<Orchestrator>| async move {
                            *o.activity
                                .lock()
                                .unwrap()
                                .entry(id.into_inner())
                                .or_default() += 1;
                            HttpResponse::NoContent().finish()
                        },
                    ),
                );
        });
        (state, server)
    }

    pub fn set(&self, tenant: &str, reply: WakeReply) {
        self.wake.lock().unwrap().insert(tenant.to_owned(), reply);
    }

    pub fn set_suspended(&self, tenant: &str, on: bool) {
        let mut s = self.suspended.lock().unwrap();
        if on {
            s.insert(tenant.to_owned());
        } else {
            s.remove(tenant);
        }
    }

    pub fn wakes(&self, tenant: &str) -> usize {
        self.wakes.lock().unwrap().get(tenant).copied().unwrap_or(0)
    }

    pub fn activity(&self, tenant: &str) -> usize {
        self.activity
            .lock()
            .unwrap()
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
}

// ---------- helpers ----------

pub fn update(update_id: i64, chat: i64, text: &str) -> Vec<u8> {
    json!({"update_id": update_id, "message": {"message_id": update_id, "chat": {"id": chat}, "text": text}})
        .to_string()
        .into_bytes()
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
