//! Delivery of inbox entries: a dispatcher ([`dispatcher`]) runs one worker per tenant with pending
//! work; a worker ([`worker`]) holds the tenant's claim (one deliverer across replicas), wakes the
//! agent when needed ([`wake`]), forwards the entries in order, replies on Telegram and acknowledges
//! each entry only when it is finished. Every wait between attempts (Telegram's too) goes through
//! [`retry`].

use std::sync::Arc;

use common::inbox::Inbox;

use crate::activity::Activity;
use crate::agent::AgentClient;
use crate::config::DeliveryConfig;
use crate::endpoint::Endpoints;
use crate::metrics::Metrics;
use crate::orchestrator_client::OrchestratorClient;
use crate::reply::Sender;

mod dispatcher;
pub(crate) mod retry;
mod wake;
mod worker;

pub use dispatcher::Dispatcher;

/// Sent to every chat waiting for a wake that failed.
pub const FAILED_TO_START: &str = "❌ Failed to start. Please try again.";
/// Sent when the agent kept failing (5xx, timeouts) or kept being unreachable.
pub const AGENT_FAILED: &str = "❌ The agent failed to answer. Please try again.";

/// The delivery was interrupted by shutdown or a lost claim; the entry stays in the inbox.
#[derive(Debug)]
pub struct Interrupted;

/// Everything a worker needs; shared by all workers.
pub struct Delivery {
    pub inbox: Arc<dyn Inbox>,
    /// The endpoint cache and wakes (over the same orchestrator client as `orch`).
    pub endpoints: Endpoints,
    pub orch: Arc<OrchestratorClient>,
    pub agent: AgentClient,
    /// Telegram sends: pacing, flood control, token rotation, typing (`crate::reply`).
    pub telegram: Sender,
    pub activity: Arc<Activity>,
    pub metrics: Arc<Metrics>,
    pub cfg: DeliveryConfig,
    /// This replica's name in claims.
    pub replica: String,
}
