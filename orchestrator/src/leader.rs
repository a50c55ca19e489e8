//! Leader election: only the leader runs the idle controller.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait LeaderElector: Send + Sync + 'static {
    /// True only while this replica holds leadership; turns false as soon as it may have lost it.
    fn is_leader(&self) -> bool;
    /// Campaigns and renews until `shutdown`, then steps down.
    async fn run(&self, shutdown: CancellationToken);
}

/// The embedded default: a single replica always leads.
pub struct AlwaysLeader;

#[async_trait]
impl LeaderElector for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }

    async fn run(&self, shutdown: CancellationToken) {
        tracing::info!("leader election: became leader");
        shutdown.cancelled().await;
    }
}
