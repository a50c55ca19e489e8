//! The state store port: a tenant's agent memory (`brain.db`) while the agent sleeps.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::{StoreError, TenantId};

#[cfg(feature = "s3")]
pub mod s3;

/// File name of the agent's memory, in the agent's `DATA_DIR` and in the store.
pub const BRAIN_FILE: &str = "brain.db";

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The saved `brain.db`, or `None` for a tenant that never saved.
    async fn load(&self, id: &TenantId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the saved `brain.db` atomically (a reader sees the old or the new file, never a mix).
    async fn save(&self, id: &TenantId, data: &[u8]) -> Result<(), StoreError>;
    /// Removes everything saved for the tenant; idempotent.
    async fn delete(&self, id: &TenantId) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    fn name(&self) -> &'static str;
}

/// Embedded store: `$DATA_DIR/state/{id}/brain.db`.
pub struct DirStateStore {
    root: PathBuf,
}

impl DirStateStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirStateStore { root: root.into() }
    }

    fn dir(&self, id: &TenantId) -> PathBuf {
        self.root.join(id.as_str())
    }
}

#[async_trait]
impl StateStore for DirStateStore {
    async fn load(&self, id: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        match tokio::fs::read(self.dir(id).join(BRAIN_FILE)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    async fn save(&self, id: &TenantId, data: &[u8]) -> Result<(), StoreError> {
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::unavailable)?;
        let tmp = dir.join(format!("{BRAIN_FILE}.tmp-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, data)
            .await
            .map_err(StoreError::unavailable)?;
        let file = tokio::fs::File::open(&tmp)
            .await
            .map_err(StoreError::unavailable)?;
        file.sync_all().await.map_err(StoreError::unavailable)?;
        tokio::fs::rename(&tmp, dir.join(BRAIN_FILE))
            .await
            .map_err(StoreError::unavailable)
    }

    async fn delete(&self, id: &TenantId) -> Result<(), StoreError> {
        match tokio::fs::remove_dir_all(self.dir(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(StoreError::unavailable)
    }

    fn name(&self) -> &'static str {
        "directory"
    }
}
