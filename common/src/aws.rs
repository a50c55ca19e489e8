//! AWS SDK configuration shared by the DynamoDB registry and the S3 state store.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
// The same smithy types, re-exported by whichever SDK this build has.
#[cfg(feature = "dynamodb")]
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
#[cfg(not(feature = "dynamodb"))]
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::StoreError;

/// Region used when neither the caller nor the environment (`AWS_REGION`, profile) names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Default credential chain; `endpoint` overrides the service URL (moto, LocalStack, MinIO).
/// The connect timeout is short so that calls fail fast while the backend is unreachable; the
/// attempt timeout leaves room for big Scan pages on a slow emulator.
pub async fn sdk_config(endpoint: Option<&str>, region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(90))
            .build(),
    );
    if let Some(r) = region.filter(|r| !r.is_empty()) {
        loader = loader.region(Region::new(r.to_owned()));
    }
    if let Some(e) = endpoint.filter(|e| !e.is_empty()) {
        loader = loader.endpoint_url(e);
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::new(DEFAULT_REGION))
        .build()
}

/// Maps an SDK error to `Unavailable` with the error code and message only: never a request's
/// values (bot tokens, object contents). A service's answer is kept as text only: its modeled
/// error can hold the item (`ReturnValuesOnConditionCheckFailure`), a bot token among its values.
/// A timeout or a dispatch failure keeps the SDK error as the source (it holds no request).
pub fn sdk_error<E, R>(service: &str, op: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("service error"),
                err.message().unwrap_or("")
            )
        }
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(d) => match d.as_connector_error() {
            Some(c) => format!("cannot reach the service: {c}"),
            None => "cannot reach the service".to_owned(),
        },
        _ => e.to_string(),
    };
    let message = format!("{service} {op}: {detail}");
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => StoreError::Unavailable {
            message: message.into(),
            source: Some(std::sync::Arc::new(e)),
        },
        _ => StoreError::unavailable_msg(message),
    }
}
