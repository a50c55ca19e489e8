//! State-grant renewal on the fake cluster (`WARM_POOL_MODE=agent`): an assigned agent that
//! outlives its presigned grants renews them at the orchestrator (`POST /tenants/{id}/state_grants`,
//! its own credential) before it saves at sleep, and the next wake restores that memory; a stale
//! pod (its tenant woke elsewhere) is refused.
//!
//! moto_server does not enforce presigned-URL expiry (5.x accepts an expired URL), so the S3
//! endpoint the grants are signed for is [`Gate`]: a proxy in front of moto that refuses, as S3
//! does (403 `AccessDenied`, "Request has expired"), a presigned request past its
//! `X-Amz-Date + X-Amz-Expires`, and (403 `ExpiredToken`) one signed in a session the test ended,
//! as S3 refuses URLs signed with temporary credentials whose session ended. (moto checks no
//! signature, so the session is a query parameter [`Recorder`] adds: `x-test-session`.)

mod k8s_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use async_trait::async_trait;
use chrono::Utc;
use common::assignment::{StateGrantIssuer, StateGrants};
use common::{Secret, StoreError, TenantId, TenantRecord};
use k8s_support::*;
use orchestrator::app::{App, Ports, Settings};
use orchestrator::leader::AlwaysLeader;
use orchestrator::runtime::kubernetes::{KubeRuntime, WarmAgents};
use orchestrator::warm_pool::WarmPoolManager;
use platform_tests::backends::{unique_name, Moto};
use platform_tests::fake_k8s::FakeK8s;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Refuses presigned requests past their expiry (as S3 does), forwards the rest to moto.
struct Gate {
    url: String,
    refused: Arc<Mutex<u64>>,
    revoked: Arc<Mutex<std::collections::HashSet<String>>>,
    server: actix_web::dev::ServerHandle,
}

struct GateState {
    moto: String,
    http: reqwest::Client,
    refused: Arc<Mutex<u64>>,
    revoked: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Whether a presigned request's `X-Amz-Date` + `X-Amz-Expires` is past.
fn expired(query: &HashMap<String, String>) -> bool {
    let (Some(date), Some(expires)) = (query.get("X-Amz-Date"), query.get("X-Amz-Expires")) else {
        return false;
    };
    let signed = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .expect("X-Amz-Date")
        .and_utc();
    let expires: i64 = expires.parse().expect("X-Amz-Expires");
    Utc::now() > signed + chrono::Duration::seconds(expires)
}

async fn gate(req: HttpRequest, body: web::Bytes, st: web::Data<GateState>) -> HttpResponse {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let revoked = query
        .get("x-test-session")
        .is_some_and(|session| st.revoked.lock().unwrap().contains(session));
    let refusal = if expired(&query) {
        Some(("AccessDenied", "Request has expired"))
    } else if revoked {
        Some(("ExpiredToken", "The provided token has expired."))
    } else {
        None
    };
    if let Some((code, message)) = refusal {
        *st.refused.lock().unwrap() += 1;
        return HttpResponse::Forbidden()
            .content_type("application/xml")
            .body(format!(
                "<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            ));
    }
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut forward = st.http.request(method, format!("{}{}", st.moto, req.uri()));
    for (name, value) in req.headers() {
        if name != "host" && name != "content-length" {
            forward = forward.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = forward.body(body.to_vec()).send().await.unwrap();
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let mut out = HttpResponse::build(status);
    for name in ["content-type", "etag"] {
        if let Some(v) = answer.headers().get(name).and_then(|v| v.to_str().ok()) {
            out.insert_header((name, v.to_owned()));
        }
    }
    out.body(answer.bytes().await.unwrap())
}

impl Gate {
    async fn start(moto: String) -> Gate {
        let refused = Arc::new(Mutex::new(0));
        let revoked = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let state = web::Data::new(GateState {
            moto,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            refused: refused.clone(),
            revoked: revoked.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(gate))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Gate {
            url,
            refused,
            revoked,
            server: handle,
        }
    }

    fn refusals(&self) -> u64 {
        *self.refused.lock().unwrap()
    }

    /// Every URL signed in `session` is refused from now on (its credentials expired).
    fn end_session(&self, session: u64) {
        self.revoked.lock().unwrap().insert(session.to_string());
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let server = self.server.clone();
        tokio::spawn(async move { server.stop(false).await });
    }
}

/// The S3 issuer, recording every grant set it issues (assignment and renewal alike) and tagging
/// each URL with the signing session (`x-test-session`), which [`Env::end_session`] ends.
struct Recorder {
    inner: common::state::s3::S3StateStore,
    issued: Mutex<Vec<StateGrants>>,
    session: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl StateGrantIssuer for Recorder {
    async fn grants(
        &self,
        tenant: &TenantId,
        name: &str,
        ttl: Duration,
    ) -> Result<StateGrants, StoreError> {
        let mut g = self.inner.grants(tenant, name, ttl).await?;
        let session = self.session.load(std::sync::atomic::Ordering::SeqCst);
        let tag =
            |u: &mut Secret| *u = Secret::new(format!("{}&x-test-session={session}", u.expose()));
        for grant in g.restore.iter_mut().chain(&mut g.save) {
            tag(&mut grant.data_url);
            grant.marker_url.iter_mut().for_each(tag);
        }
        g.delete.iter_mut().for_each(tag);
        self.issued.lock().unwrap().push(g.clone());
        Ok(g)
    }
}

struct Env {
    fake: FakeK8s,
    shared: Shared,
    _moto: Moto,
    gate: Gate,
    /// Straight to moto, for the test's own reads.
    direct: common::state::s3::S3StateStore,
    recorder: Arc<Recorder>,
    bucket: String,
    app: Arc<App>,
    api: String,
    _server: actix_web::dev::ServerHandle,
}

/// One replica with warm agents whose grants last `ttl`, its API served where the warm pool's
/// agents reach it (`ORCHESTRATOR_URL`).
async fn env(ttl: Duration) -> Env {
    capture_logs();
    let moto = Moto::start().await;
    let bucket = unique_name("grants");
    let direct = moto.state_store(&bucket).await;
    let gate = Gate::start(moto.endpoint()).await;
    let signer = common::state::s3::S3StateStore::connect(&bucket, Some(&gate.url), None)
        .await
        .unwrap();
    let recorder = Arc::new(Recorder {
        inner: signer,
        issued: Mutex::new(Vec::new()),
        session: Default::default(),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let fake = FakeK8s::start().await;
    let shared = Shared::new();
    let runtime =
        KubeRuntime::new(fake.client().await, settings(&api)).with_warm_agents(WarmAgents {
            grants: recorder.clone(),
            grant_ttl: ttl,
        });
    let ports = Ports {
        registry: shared.registry.clone(),
        lock: shared.lock.clone(),
        cache: Arc::new(common::cache::MemoryCache::new()),
        state: Arc::new(common::state::DirStateStore::new(
            shared.dir.path().join("state"),
        )),
        runtime: Arc::new(runtime),
        leader: Arc::new(AlwaysLeader),
        webhook_records: Arc::new(common::webhook_record::MemoryWebhookRecords::default()),
    };
    let app = App::new(
        ports,
        common::telegram::TelegramClient::new("http://127.0.0.1:1"),
        Settings {
            pod_ready_wait: T,
            ..Settings::default()
        },
    );
    let server = {
        let app = app.clone();
        actix_web::HttpServer::new(move || {
            use actix_web::middleware::from_fn;
            use orchestrator::api;
            actix_web::App::new()
                .wrap(from_fn(api::require_token))
                .wrap(from_fn(api::track))
                .configure(api::configure(
                    app.clone(),
                    api::ApiConfig {
                        api_token: Some(Secret::new("api-token")),
                    },
                ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run()
    };
    let handle = server.handle();
    tokio::spawn(server);
    Env {
        fake,
        shared,
        _moto: moto,
        gate,
        direct,
        recorder,
        bucket,
        app,
        api,
        _server: handle,
    }
}

fn settings(api: &str) -> common::k8s::K8sSettings {
    common::k8s::K8sSettings {
        orchestrator_url: Some(api.to_owned()),
        ..k8s_settings()
    }
}

impl Env {
    /// Creates the warm pool and waits until `n` warm agents answer.
    async fn pool(&self, n: u32) {
        WarmPoolManager::new(
            self.fake.client().await,
            settings(&self.api),
            n,
            Duration::from_secs(3600),
        )
        .with_warm_agents(true)
        .ensure()
        .await
        .unwrap();
        assert!(self.wait_warm(n as usize).await, "{n} warm agents not up");
    }

    async fn wait_warm(&self, n: usize) -> bool {
        wait_warm_agents(&self.fake, n, T).await
    }

    async fn tenant(&self, id: &str) -> TenantId {
        self.shared.add_tenant(id).await
    }

    async fn record(&self, id: &TenantId) -> TenantRecord {
        self.shared.registry.get(id).await.unwrap().unwrap()
    }

    /// A warm hit: returns the endpoint and the warm pod's name.
    async fn wake(&self, id: &TenantId) -> (common::wire::Endpoint, String) {
        self.wait_warm(1).await;
        let woken = orchestrator::wake::wake(&self.app, id).await.unwrap();
        let pod = self.record(id).await.pod_name;
        assert_ne!(pod, id.pod_name(), "a warm hit");
        (woken.endpoint, pod)
    }

    /// Sleeps the tenant and waits until its pod is gone (its save landed or failed).
    async fn sleep(&self, id: &TenantId, pod: &str) {
        orchestrator::tenants::sleep(&self.app, id).await.unwrap();
        assert!(eventually(T, || self.fake.get("pods", NS, pod).is_none()).await);
    }

    async fn saved_keys(&self, id: &TenantId) -> Vec<String> {
        let out = self
            .direct
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(id.s3_prefix())
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The signing session ends: every URL issued so far is refused, later ones are not.
    fn end_session(&self) {
        let ended = self
            .recorder
            .session
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.gate.end_session(ended);
    }

    fn issued(&self) -> Vec<StateGrants> {
        self.recorder.issued.lock().unwrap().clone()
    }

    /// What the pod `holder` would send to renew grants whose save writes `generation`.
    async fn renew(
        &self,
        id: &TenantId,
        bearer: &str,
        holder: &str,
        generation: u64,
    ) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/tenants/{id}/state_grants", self.api))
            .bearer_auth(bearer)
            .json(&json!({"holder": holder, "generation": generation}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }
}

/// The status the gate answers a GET through `url`.
async fn probe(url: &Secret) -> u16 {
    reqwest::Client::new()
        .get(url.expose())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// An agent assigned with grants that last 3 s lives past them; at sleep it renews them (its own
/// credential, its pod named) and saves, and the next wake restores that memory. Without renewal
/// the save is refused (403) and the next wake answers from the older memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_past_its_grants_renews_them_saves_at_sleep_and_the_next_wake_restores_it() {
    let e = env(Duration::from_secs(3)).await;
    let id = e.tenant("wg-renew").await;
    e.pool(1).await;

    let (endpoint, first) = e.wake(&id).await;
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "hello").await,
        "echo: hello (#1)"
    );
    e.sleep(&id, &first).await;
    assert!(e
        .saved_keys(&id)
        .await
        .contains(&"tenants/wg-renew/brain.db.0000000001".into()));

    let (endpoint, second) = e.wake(&id).await;
    let assigned = e.issued().last().cloned().unwrap();
    assert_eq!(assigned.save.as_ref().unwrap().generation, 2);
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "again").await,
        "echo: again (#2)"
    );
    // The assignment's grants expire (the gate refuses them, as S3 would) while the agent runs.
    let read = &assigned.restore[0].data_url;
    let until = std::time::Instant::now() + T;
    while probe(read).await != 403 {
        assert!(std::time::Instant::now() < until, "the grant never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let issued_before = e.issued().len();
    e.sleep(&id, &second).await;
    assert_eq!(
        e.saved_keys(&id).await,
        [
            "tenants/wg-renew/brain.db.0000000002",
            "tenants/wg-renew/brain.db.0000000002.sha256"
        ],
        "saved through renewed grants (and the older generation deleted)"
    );
    assert_eq!(e.issued().len(), issued_before + 1, "renewed once");
    let renewed = log_lines(&["state grants renewed", "tenant=wg-renew", &second]);
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert!(
        log_lines(&["X-Amz-Signature"]).is_empty(),
        "no URL signature in a log line"
    );

    let (endpoint, _) = e.wake(&id).await;
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "third").await,
        "echo: third (#3)",
        "the memory saved through the renewed grants is restored"
    );
    assert!(e.gate.refusals() >= 1);
}

/// Grants S3 refuses before their expiry (the session of the credentials that signed them ended:
/// 403 `ExpiredToken`) are renewed on that refusal and the save retried once; the memory lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_refused_by_s3_before_expiry_renews_the_grants_and_retries_once() {
    let e = env(Duration::from_secs(600)).await;
    let id = e.tenant("wg-revoked").await;
    e.pool(1).await;
    let (endpoint, pod) = e.wake(&id).await;
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "hi").await,
        "echo: hi (#1)"
    );
    e.end_session();
    e.sleep(&id, &pod).await;
    assert_eq!(
        e.saved_keys(&id).await,
        [
            "tenants/wg-revoked/brain.db.0000000001",
            "tenants/wg-revoked/brain.db.0000000001.sha256"
        ],
        "saved through the grants renewed after the refusal"
    );
    assert_eq!(e.gate.refusals(), 1, "one refused PUT, then the retry");
    assert_eq!(
        e.issued().len(),
        2,
        "the assignment's grants and one renewal"
    );
    let (endpoint, _) = e.wake(&id).await;
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "again").await,
        "echo: again (#2)"
    );
}

/// Renewal is for the tenant's current agent only: a pod whose tenant woke elsewhere is refused
/// (409) while that agent runs and once it saved, so it never overwrites the newer memory; other
/// credentials are 401. The tenant's current pod is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pods_renewal_is_refused_and_the_current_pods_is_not() {
    let e = env(Duration::from_secs(600)).await;
    let id = e.tenant("wg-stale").await;
    let other = e.tenant("wg-other").await;
    e.pool(1).await;
    let token = e.record(&id).await.agent_token;
    let token = token.expose();

    let (endpoint, first) = e.wake(&id).await;
    let (s, v) = e.renew(&id, token, &first, 1).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["holder"], first.as_str());
    assert_eq!(v["save"]["generation"], 1);
    let other_token = e.record(&other).await.agent_token;
    for bearer in ["api-token", other_token.expose(), "nope"] {
        let (s, v) = e.renew(&id, bearer, &first, 1).await;
        assert_eq!(s, 401, "{v}");
    }
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "one").await,
        "echo: one (#1)"
    );
    e.sleep(&id, &first).await;

    // Woken elsewhere: the first pod is refused while the second is the tenant's agent...
    let (endpoint, second) = e.wake(&id).await;
    assert_ne!(first, second);
    let (s, v) = e.renew(&id, token, &first, 2).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("another pod"), "{v}");
    let (s, v) = e.renew(&id, token, &second, 2).await;
    assert_eq!(s, 200, "{v}");
    // ...and once the second saved newer memory, though the record no longer names any pod.
    assert_eq!(
        agent_chat(&e.shared, &id, &endpoint, "two").await,
        "echo: two (#2)"
    );
    e.sleep(&id, &second).await;
    let (s, v) = e.renew(&id, token, &first, 2).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("newer save"), "{v}");
    assert!(!v.to_string().contains("X-Amz"), "{v}");
    assert_eq!(
        e.saved_keys(&id).await,
        [
            "tenants/wg-stale/brain.db.0000000002",
            "tenants/wg-stale/brain.db.0000000002.sha256"
        ]
    );
}
