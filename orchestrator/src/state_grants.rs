//! Renewal of an assigned agent's state grants (`POST /tenants/{id}/state_grants`): the presigned
//! URLs an assignment carries expire (`WARM_GRANT_TTL_S`, or earlier with the session of the
//! credentials that signed them), and an agent that outlives them must still save at stop.
//!
//! Only the tenant's current agent gets fresh grants: the request names the pod the held grants
//! were issued to ([`RenewRequest::holder`]) and the generation their save writes. While the
//! registry records the tenant running in another pod, or once a save at or past that generation
//! landed (the tenant slept and woke elsewhere, and that agent saved), the answer is 409, so a
//! stale pod never gets grants that overwrite newer memory.

use common::assignment::{RenewRequest, StateGrants};
use common::{TenantRecord, TenantStatus};

use crate::app::App;
use crate::error::Error;

/// Fresh grants for `rec`'s tenant, for the holder `req` names; see the module doc for refusals.
pub async fn renew(
    app: &App,
    rec: &TenantRecord,
    req: &RenewRequest,
) -> Result<StateGrants, Error> {
    let id = &rec.tenant_id;
    if req.holder.trim().is_empty() {
        return Err(Error::BadRequest("holder: missing".into()));
    }
    let refuse = |why: String| {
        tracing::warn!(tenant = %id, holder = %req.holder, reason = %why, "state grant renewal refused");
        Err(Error::StaleAgent(format!("state grants refused: {why}")))
    };
    // The recorded agent is the tenant's; a stopping one is no longer recorded (the record goes
    // idle as its pod is deleted) but may still save if nothing newer did.
    let current = rec.status == TenantStatus::Running && rec.pod_name == req.holder;
    if !current && !rec.pod_name.is_empty() {
        return refuse("the tenant's agent runs in another pod now".into());
    }
    let mut grants = app.runtime.state_grants(id).await?;
    let newest = grants.restore.first().map(|g| g.generation);
    if let Some(newest) = newest.filter(|&n| !current && n >= req.generation) {
        return refuse(format!(
            "a newer save (generation {newest}) landed since these grants were issued"
        ));
    }
    // What a save needs: the next generation and what it replaces, not the reads.
    grants.restore.clear();
    grants.holder = Some(req.holder.clone());
    tracing::info!(tenant = %id, holder = %req.holder, generation = ?grants.save.as_ref().map(|g| g.generation), "state grants renewed");
    Ok(grants)
}
