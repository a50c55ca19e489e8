//! S3 state store: `s3://{bucket}/tenants/{id}/brain.db`. STUB: to be implemented (issue 4).

use async_trait::async_trait;

use super::StateStore;
use crate::{StoreError, TenantId};

pub struct S3StateStore {
    #[allow(dead_code)]
    bucket: String,
}

impl S3StateStore {
    /// `endpoint` overrides the service URL (moto, MinIO) and turns on path-style addressing.
    pub async fn connect(
        bucket: &str,
        _endpoint: Option<&str>,
        _region: Option<&str>,
    ) -> Result<Self, StoreError> {
        Ok(S3StateStore {
            bucket: bucket.to_owned(),
        })
    }

    /// Creates the bucket if it does not exist (development and tests).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        Err(todo())
    }
}

fn todo() -> StoreError {
    StoreError::Unavailable("s3 state store not implemented".into())
}

#[async_trait]
impl StateStore for S3StateStore {
    async fn load(&self, _id: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        Err(todo())
    }
    async fn save(&self, _id: &TenantId, _data: &[u8]) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn delete(&self, _id: &TenantId) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(todo())
    }
    fn name(&self) -> &'static str {
        "s3"
    }
}
