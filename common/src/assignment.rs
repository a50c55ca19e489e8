//! Warm-agent assignment: the one protocol by which the orchestrator hands a running warm-pool agent
//! (no tenant, no tenant secret, no tenant state) its tenant, shared by the orchestrator (client),
//! the reference agent and the launcher (servers).
//!
//! `POST /assign` with `Authorization: Bearer {pool token}` (Secret `warm-pool`, key
//! `ASSIGN_TOKEN`) and an [`Assignment`]: the tenant's id, agent credential, rendered `tenant.json`
//! and [`StateGrants`], presigned URLs for exactly that tenant's state objects. The pool token only
//! opens this one call on an unassigned agent; it reaches no tenant's data. An agent accepts one
//! assignment in its life ([`AssignGate`]): a second one is 409, so a pod is never reused.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::{Secret, StoreError, TenantId};

/// Path of the assignment call on the agent's port.
pub const ASSIGN_PATH: &str = "/assign";
/// The orchestrator's route that renews an assigned agent's [`StateGrants`] (a [`RenewRequest`]
/// with `Authorization: Bearer {agent credential}`; the answer is fresh `StateGrants`).
pub const RENEW_PATH: &str = "/tenants/{id}/state_grants";
/// Grants are renewed before a save once less than this fraction of their lifetime is left.
pub const RENEW_MARGIN_DIVISOR: u32 = 10;
/// Environment variable (from Secret `warm-pool`) holding the pool credential in a warm pod.
pub const POOL_TOKEN_ENV: &str = "ASSIGN_TOKEN";

/// What a warm agent is given to become a tenant's agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub tenant_id: String,
    /// The tenant's agent credential: the only bearer the agent answers from now on.
    pub agent_token: Secret,
    /// The rendered `tenant.json` (`common::agent_config`), written to the agent's config dir.
    pub config: serde_json::Value,
    /// Where the agent reads its memory now and writes it at stop.
    #[serde(default)]
    pub state: StateGrants,
}

/// Presigned URLs for one tenant's state file (`common::state_file` layout:
/// `{name}.{gen:010}` and its `.sha256` marker). Every URL is a credential: `Debug` hides them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateGrants {
    /// Saved generations, newest first: the first whose bytes match its marker is restored.
    #[serde(default)]
    pub restore: Vec<GenerationGrant>,
    /// Where the next save goes (PUT URLs of the next generation).
    #[serde(default)]
    pub save: Option<GenerationGrant>,
    /// DELETE URLs of what the save replaces (each marker before its data), used after it landed.
    #[serde(default)]
    pub delete: Vec<Secret>,
    /// When the URLs stop working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The pod they were issued to: a renewal ([`RENEW_PATH`]) names it, and is refused once
    /// the tenant's agent runs in another pod. `None`: issued by an orchestrator without renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// One generation's data and marker URLs; generation 0 is the legacy plain file (no marker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationGrant {
    pub generation: u64,
    pub data_url: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker_url: Option<Secret>,
}

/// The agent's answer to a successful assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignResponse {
    pub tenant_id: String,
    /// The generation restored; `None` for a tenant with no saved memory.
    pub restored_generation: Option<u64>,
}

/// Why an assignment was refused or failed; [`AssignError::status`] is the HTTP status.
#[derive(Debug, Error)]
pub enum AssignError {
    #[error("missing or invalid pool credential")]
    Unauthorized,
    #[error("invalid assignment: {0}")]
    BadRequest(String),
    #[error("this agent was already assigned")]
    AlreadyAssigned,
    /// Accepted, but restoring or starting failed: the pod is spent and must be deleted.
    #[error("assignment failed: {0}")]
    Failed(String),
}

impl AssignError {
    pub fn status(&self) -> u16 {
        match self {
            AssignError::Unauthorized => 401,
            AssignError::BadRequest(_) => 400,
            AssignError::AlreadyAssigned => 409,
            AssignError::Failed(_) => 500,
        }
    }
}

/// The server side's check: pool credential (constant time), a valid body, and one assignment only.
pub struct AssignGate {
    pool_token: Secret,
    taken: AtomicBool,
}

impl AssignGate {
    pub fn new(pool_token: Secret) -> Self {
        AssignGate {
            pool_token,
            taken: AtomicBool::new(false),
        }
    }

    /// Whether an assignment was admitted (the agent is no longer a pool member).
    pub fn taken(&self) -> bool {
        self.taken.load(Ordering::SeqCst)
    }

    /// Admits the assignment in `body` if `authorization` carries the pool credential and no
    /// assignment was admitted before. Refused requests (401, 400) do not use up the agent.
    pub fn admit(
        &self,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<Assignment, AssignError> {
        let got = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim()
            .as_bytes();
        let want = self.pool_token.expose().as_bytes();
        if want.is_empty() || !bool::from(got.ct_eq(want)) {
            return Err(AssignError::Unauthorized);
        }
        let a: Assignment = serde_json::from_slice(body)
            .map_err(|e| AssignError::BadRequest(format!("body: {e}")))?;
        validate(&a)?;
        if self.taken.swap(true, Ordering::SeqCst) {
            return Err(AssignError::AlreadyAssigned);
        }
        Ok(a)
    }
}

fn validate(a: &Assignment) -> Result<(), AssignError> {
    let bad = |m: String| Err(AssignError::BadRequest(m));
    if let Err(e) = TenantId::parse(&a.tenant_id) {
        return bad(format!("tenant_id: {e}"));
    }
    if a.agent_token.expose().trim().len() < 16 {
        return bad("agent_token: missing or too short".into());
    }
    match a.config.get("tenant_id").and_then(|v| v.as_str()) {
        Some(t) if t == a.tenant_id => {}
        _ if !a.config.is_object() => return bad("config: not a JSON object".into()),
        _ => return bad("config: tenant_id does not match the assignment".into()),
    }
    let urls = a
        .state
        .restore
        .iter()
        .chain(&a.state.save)
        .flat_map(|g| std::iter::once(&g.data_url).chain(&g.marker_url))
        .chain(&a.state.delete);
    for u in urls {
        if !(u.expose().starts_with("http://") || u.expose().starts_with("https://")) {
            return bad("state: a grant is not an http(s) URL".into());
        }
    }
    Ok(())
}

/// Issues [`StateGrants`] for one tenant's state file (the S3 state store presigns them).
#[async_trait]
pub trait StateGrantIssuer: Send + Sync + 'static {
    async fn grants(
        &self,
        tenant: &TenantId,
        name: &str,
        ttl: Duration,
    ) -> Result<StateGrants, StoreError>;
}

/// A grant call that failed; never names the URL (it is a credential).
#[derive(Debug, Error)]
pub enum GrantError {
    #[error("{what}: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}")]
    Status { what: &'static str, status: u16 },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The orchestrator refused the renewal; `message` is its error text (never a secret).
    #[error("state grant renewal refused: HTTP {status}: {message}")]
    RenewalRefused { status: u16, message: String },
    /// The held grants cannot be renewed (no holder or no save grant in them).
    #[error("state grants cannot be renewed: {0}")]
    NotRenewable(&'static str),
}

fn http_err(what: &'static str) -> impl FnOnce(reqwest::Error) -> GrantError {
    move |e| GrantError::Http {
        what,
        source: e.without_url(),
    }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> GrantError {
    move |source| GrantError::Io { what, source }
}

async fn fetch(
    http: &reqwest::Client,
    url: &Secret,
    what: &'static str,
) -> Result<Option<Vec<u8>>, GrantError> {
    let r = http
        .get(url.expose())
        .send()
        .await
        .map_err(http_err(what))?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !r.status().is_success() {
        return Err(GrantError::Status {
            what,
            status: r.status().as_u16(),
        });
    }
    Ok(Some(r.bytes().await.map_err(http_err(what))?.to_vec()))
}

/// Restores the newest generation whose bytes match its marker into `dest` (a temp file renamed
/// over it); returns the generation, or `None` when nothing was saved.
pub async fn restore(
    http: &reqwest::Client,
    grants: &StateGrants,
    dest: &Path,
) -> Result<Option<u64>, GrantError> {
    for g in &grants.restore {
        let Some(data) = fetch(http, &g.data_url, "state GET").await? else {
            continue;
        };
        if let Some(marker) = &g.marker_url {
            let Some(expected) = fetch(http, marker, "state marker GET").await? else {
                continue;
            };
            let actual = hex::encode(Sha256::digest(&data));
            if String::from_utf8_lossy(&expected).trim() != actual {
                tracing::warn!(
                    generation = g.generation,
                    "saved state does not match its marker, trying an older one"
                );
                continue;
            }
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("creating the data dir"))?;
        }
        let tmp = dest.with_extension("restore-tmp");
        std::fs::write(&tmp, &data).map_err(io_err("writing the restored state"))?;
        std::fs::rename(&tmp, dest).map_err(io_err("renaming the restored state"))?;
        return Ok(Some(g.generation));
    }
    Ok(None)
}

async fn put(
    http: &reqwest::Client,
    url: &Secret,
    body: Vec<u8>,
    what: &'static str,
) -> Result<(), GrantError> {
    let r = http
        .put(url.expose())
        .body(body)
        .send()
        .await
        .map_err(http_err(what))?;
    if !r.status().is_success() {
        return Err(GrantError::Status {
            what,
            status: r.status().as_u16(),
        });
    }
    Ok(())
}

/// Saves the file `src` through the save grant (data, then its marker), then deletes what it
/// replaced (best effort: leftovers are skipped by a restore). Returns the generation written.
pub async fn save(
    http: &reqwest::Client,
    grants: &StateGrants,
    src: &Path,
) -> Result<u64, GrantError> {
    let Some(g) = &grants.save else {
        return Err(GrantError::Status {
            what: "no save grant",
            status: 403,
        });
    };
    let data = std::fs::read(src).map_err(io_err("reading the state to save"))?;
    let digest = hex::encode(Sha256::digest(&data));
    put(http, &g.data_url, data, "state PUT").await?;
    if let Some(marker) = &g.marker_url {
        put(http, marker, digest.into_bytes(), "state marker PUT").await?;
    }
    for url in &grants.delete {
        match http.delete(url.expose()).send().await {
            Ok(r) if r.status().is_success() || r.status() == 404 => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "old state not deleted"),
            Err(e) => tracing::warn!(error = %e.without_url(), "old state not deleted"),
        }
    }
    Ok(g.generation)
}

/// Body of a renewal: what the agent holds, which the orchestrator checks against the registry
/// and the saved generations before it issues anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// [`StateGrants::holder`] of the grants held: the pod they were issued to.
    pub holder: String,
    /// The generation the held save grant writes: no save may have landed at or past it since.
    pub generation: u64,
}

/// How an assigned agent renews its grants: the orchestrator's route, the tenant's credential,
/// and the margin before expiry (a tenth of the lifetime the grants had when they arrived).
pub struct Renewer {
    url: String,
    agent_token: Secret,
    margin: Duration,
}

impl Renewer {
    /// `orchestrator_url` is the orchestrator as agents reach it (`ORCHESTRATOR_URL`); `grants`
    /// are the ones just assigned (their remaining lifetime sets the margin).
    pub fn new(
        orchestrator_url: &str,
        tenant_id: &str,
        agent_token: Secret,
        grants: &StateGrants,
    ) -> Self {
        let left = grants
            .expires_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or_default();
        Renewer {
            url: format!(
                "{}{}",
                orchestrator_url.trim_end_matches('/'),
                RENEW_PATH.replace("{id}", tenant_id)
            ),
            agent_token,
            margin: left / RENEW_MARGIN_DIVISOR,
        }
    }

    /// Whether `grants` expired or expire within the margin (grants without an expiry never do).
    pub fn due(&self, grants: &StateGrants) -> bool {
        grants.expires_at.is_some_and(|at| {
            let margin = chrono::Duration::from_std(self.margin).unwrap_or_default();
            Utc::now() + margin >= at
        })
    }

    /// Fresh grants for the same objects, from the orchestrator.
    pub async fn renew(
        &self,
        http: &reqwest::Client,
        held: &StateGrants,
    ) -> Result<StateGrants, GrantError> {
        let what = "state grant renewal";
        let holder = held
            .holder
            .clone()
            .ok_or(GrantError::NotRenewable("they name no holder"))?;
        let generation = held
            .save
            .as_ref()
            .map(|g| g.generation)
            .ok_or(GrantError::NotRenewable("they hold no save grant"))?;
        let r = http
            .post(&self.url)
            .bearer_auth(self.agent_token.expose())
            .json(&RenewRequest { holder, generation })
            .send()
            .await
            .map_err(http_err(what))?;
        let status = r.status().as_u16();
        if !r.status().is_success() {
            let message = r
                .json::<crate::wire::ErrorBody>()
                .await
                .map(|b| b.error)
                .unwrap_or_default();
            return Err(GrantError::RenewalRefused { status, message });
        }
        r.json().await.map_err(http_err(what))
    }
}

/// [`save`], renewing the grants first when they are expired or near expiry, and once more when
/// S3 refuses one (HTTP 403, or 400 `ExpiredToken`: expired early, e.g. the session of the
/// credentials that signed them ended). Without a `renewer` it is a plain `save`.
pub async fn save_renewing(
    http: &reqwest::Client,
    grants: &StateGrants,
    renewer: Option<&Renewer>,
    src: &Path,
) -> Result<u64, GrantError> {
    let Some(renewer) = renewer else {
        return save(http, grants, src).await;
    };
    let mut held = std::borrow::Cow::Borrowed(grants);
    if renewer.due(&held) {
        match renewer.renew(http, &held).await {
            Ok(fresh) => {
                tracing::info!("state grants expire soon: renewed before the save");
                held = std::borrow::Cow::Owned(fresh);
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the state grants failed; saving with the ones held")
            }
        }
    }
    match save(http, &held, src).await {
        Err(GrantError::Status {
            status: status @ (400 | 403),
            what,
        }) if held.save.is_some() => {
            tracing::warn!(
                what,
                status,
                "S3 refused a state grant: renewing and retrying once"
            );
            let fresh = renewer.renew(http, &held).await?;
            save(http, &fresh, src).await
        }
        saved => saved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(tenant: &str, config_tenant: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "tenant_id": tenant,
            "agent_token": "0123456789abcdef0123",
            "config": {"tenant_id": config_tenant, "provider": "p", "model": "m"},
            "state": {"restore": [], "save": {"generation": 1, "data_url": "http://s3/x", "marker_url": "http://s3/x.sha256"}},
        }))
        .unwrap()
    }

    #[test]
    fn only_the_pool_credential_and_only_once() {
        let gate = AssignGate::new(Secret::new("pool-secret"));
        let ok = body("alice", "alice");
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("pool-secret"),
            Some("Bearer "),
        ] {
            assert_eq!(gate.admit(auth, &ok).unwrap_err().status(), 401, "{auth:?}");
        }
        assert!(!gate.taken(), "refused calls do not use the agent up");
        let bad = [
            b"{".to_vec(),
            body("Alice!", "Alice!"),
            body("alice", "bob"),
            br#"{"tenant_id":"alice","agent_token":"short","config":{"tenant_id":"alice"}}"#
                .to_vec(),
        ];
        for b in bad {
            let e = gate.admit(Some("Bearer pool-secret"), &b).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
        }
        assert!(!gate.taken());
        let a = gate.admit(Some("Bearer pool-secret"), &ok).unwrap();
        assert_eq!(a.tenant_id, "alice");
        assert!(gate.taken());
        let again = gate.admit(Some("Bearer pool-secret"), &body("bob", "bob"));
        assert_eq!(again.unwrap_err().status(), 409);
    }

    #[test]
    fn debug_hides_credentials_and_urls() {
        let gate = AssignGate::new(Secret::new("pool-secret"));
        let a = gate
            .admit(Some("Bearer pool-secret"), &body("alice", "alice"))
            .unwrap();
        let shown = format!("{a:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("http://s3"), "{shown}");
    }
}
