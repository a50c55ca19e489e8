//! S3 state store: `s3://{bucket}/tenants/{id}/brain.db`, the same prefix the Go platform's CSI
//! volume used. A PutObject replaces the object atomically, so a reader never sees a partial file.

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::Client;

use super::{StateStore, BRAIN_FILE};
use crate::{StoreError, TenantId};

/// The SDK, for tools and tests that need more than the port.
pub use aws_sdk_s3 as sdk;

pub struct S3StateStore {
    client: Client,
    bucket: String,
    region: String,
}

impl S3StateStore {
    /// `endpoint` overrides the service URL (moto, MinIO) and turns on path-style addressing.
    pub async fn connect(
        bucket: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, StoreError> {
        let sdk = crate::aws::sdk_config(endpoint, region).await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| crate::aws::DEFAULT_REGION.to_owned());
        let config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(endpoint.is_some_and(|e| !e.is_empty()))
            .build();
        Ok(S3StateStore {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
            region,
        })
    }

    /// The SDK client, for tools and tests that need more than the port.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist (development and tests).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_err("CreateBucket", e)),
        }
    }

    fn key(id: &TenantId) -> String {
        format!("{}{BRAIN_FILE}", id.s3_prefix())
    }
}

fn sdk_err<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    crate::aws::sdk_error("s3", op, e)
}

#[async_trait]
impl StateStore for S3StateStore {
    async fn load(&self, id: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(Self::key(id))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Ok(None)
            }
            Err(e) => return Err(sdk_err("GetObject", e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::unavailable_in("s3 GetObject body", e))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn save(&self, id: &TenantId, data: &[u8]) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(Self::key(id))
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_err("PutObject", e))
    }

    async fn delete(&self, id: &TenantId) -> Result<(), StoreError> {
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(id.s3_prefix())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_err("ListObjectsV2", e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| sdk_err("DeleteObject", e))?;
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(()),
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_err("HeadBucket", e))
    }

    fn name(&self) -> &'static str {
        "s3"
    }
}

/// How many saved generations a restore grant covers (newest first; older ones only matter when
/// a newer one is torn).
const RESTORE_CANDIDATES: usize = 3;

/// The object operations a state grant presigns.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Put,
    Delete,
}

impl S3StateStore {
    /// One presigned URL: `verb` on `key` until `cfg` expires.
    async fn presign(
        &self,
        verb: Verb,
        key: String,
        cfg: &aws_sdk_s3::presigning::PresigningConfig,
    ) -> Result<crate::Secret, StoreError> {
        // One builder shape for every verb; only the operation differs.
        macro_rules! presigned {
            ($op:ident, $name:literal) => {
                self.client
                    .$op()
                    .bucket(&self.bucket)
                    .key(key)
                    .presigned(cfg.clone())
                    .await
                    .map_err(|e| sdk_err($name, e))
            };
        }
        let signed = match verb {
            Verb::Get => presigned!(get_object, "GetObject"),
            Verb::Put => presigned!(put_object, "PutObject"),
            Verb::Delete => presigned!(delete_object, "DeleteObject"),
        };
        signed.map(|r| crate::Secret::new(r.uri()))
    }
}

/// Presigned URLs for exactly one tenant's objects under `tenants/{id}/`, in the `state_file`
/// layout the S3 CSI mount writes (`{name}.{gen:010}` + `.sha256`).
#[async_trait]
impl crate::assignment::StateGrantIssuer for S3StateStore {
    async fn grants(
        &self,
        tenant: &TenantId,
        name: &str,
        ttl: std::time::Duration,
    ) -> Result<crate::assignment::StateGrants, StoreError> {
        use crate::assignment::{GenerationGrant, StateGrants};
        use crate::state_file::{data_name, marker_name, parse_name};
        let prefix = tenant.s3_prefix();
        let mut data = std::collections::BTreeSet::new();
        let mut markers = std::collections::BTreeSet::new();
        let mut legacy = false;
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{prefix}{name}"))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_err("ListObjectsV2", e))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                let file = key.strip_prefix(&prefix).unwrap_or(key);
                match parse_name(name, file) {
                    Some((g, true)) => _ = markers.insert(g),
                    Some((g, false)) => _ = data.insert(g),
                    None if file == name => legacy = true,
                    None => {}
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::unavailable_in("s3 presigning", e))?;
        let key = |file: String| format!("{prefix}{file}");
        let url = |verb, file| self.presign(verb, key(file), &cfg);
        let mut restore = Vec::new();
        for &g in data.iter().rev().filter(|g| markers.contains(g)) {
            if restore.len() == RESTORE_CANDIDATES {
                break;
            }
            restore.push(GenerationGrant {
                generation: g,
                data_url: url(Verb::Get, data_name(name, g)).await?,
                marker_url: Some(url(Verb::Get, marker_name(name, g)).await?),
            });
        }
        if legacy {
            restore.push(GenerationGrant {
                generation: 0,
                data_url: url(Verb::Get, name.to_owned()).await?,
                marker_url: None,
            });
        }
        // A marker whose data is gone still holds its number: files are never overwritten.
        let next = data.iter().chain(&markers).max().copied().unwrap_or(0) + 1;
        let save = Some(GenerationGrant {
            generation: next,
            data_url: url(Verb::Put, data_name(name, next)).await?,
            marker_url: Some(url(Verb::Put, marker_name(name, next)).await?),
        });
        let mut delete = Vec::new();
        for g in data.union(&markers) {
            delete.push(url(Verb::Delete, marker_name(name, *g)).await?);
            delete.push(url(Verb::Delete, data_name(name, *g)).await?);
        }
        if legacy {
            delete.push(url(Verb::Delete, name.to_owned()).await?);
        }
        Ok(StateGrants {
            restore,
            save,
            delete,
            expires_at: chrono::Duration::from_std(ttl)
                .ok()
                .map(|d| chrono::Utc::now() + d),
            holder: None,
        })
    }
}
