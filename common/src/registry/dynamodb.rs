//! DynamoDB registry on table `tenant-registry` (hash key `tenant_id`). STUB: to be implemented (issue 4).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Registry, SettingsUpdate, StatusUpdate};
use crate::{StoreError, TenantId, TenantRecord, TenantStatus};

pub struct DynamoRegistry {
    #[allow(dead_code)]
    table: String,
}

impl DynamoRegistry {
    /// Connects with the default AWS credential chain; `endpoint` overrides the service URL (moto, local).
    pub async fn connect(
        table: &str,
        _endpoint: Option<&str>,
        _region: Option<&str>,
    ) -> Result<Self, StoreError> {
        Ok(DynamoRegistry {
            table: table.to_owned(),
        })
    }

    /// Creates the table if it does not exist (development and tests).
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        Err(todo())
    }
}

fn todo() -> StoreError {
    StoreError::Unavailable("dynamodb registry not implemented".into())
}

#[async_trait]
impl Registry for DynamoRegistry {
    async fn create(&self, _r: &TenantRecord) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn get(&self, _id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        Err(todo())
    }
    async fn list(&self, _s: Option<TenantStatus>) -> Result<Vec<TenantRecord>, StoreError> {
        Err(todo())
    }
    async fn update_settings(
        &self,
        _id: &TenantId,
        _u: &SettingsUpdate,
    ) -> Result<TenantRecord, StoreError> {
        Err(todo())
    }
    async fn set_status(
        &self,
        _id: &TenantId,
        _f: TenantStatus,
        _u: &StatusUpdate,
    ) -> Result<TenantRecord, StoreError> {
        Err(todo())
    }
    async fn touch(&self, _id: &TenantId, _at: DateTime<Utc>) -> Result<(), StoreError> {
        Err(todo())
    }
    async fn delete(&self, _id: &TenantId) -> Result<bool, StoreError> {
        Err(todo())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(todo())
    }
    fn name(&self) -> &'static str {
        "dynamodb"
    }
}
