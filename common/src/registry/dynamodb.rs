//! DynamoDB registry on table `tenant-registry` (hash key `tenant_id`), item for item compatible
//! with the Go platform: every write is conditional, `list` pages through the whole table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::{Registry, SettingsUpdate, StatusUpdate};
use crate::tenant::{format_time, parse_time, DEFAULT_NAMESPACE};
use crate::{Secret, StoreError, TenantId, TenantRecord, TenantStatus};

/// The SDK, for tools and tests that need more than the port (e.g. bulk loads with BatchWriteItem).
pub use aws_sdk_dynamodb as sdk;

type Item = HashMap<String, AttributeValue>;

/// How long `ensure_table` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(60);

pub struct DynamoRegistry {
    client: Client,
    table: String,
}

impl DynamoRegistry {
    /// Connects with the default AWS credential chain; `endpoint` overrides the service URL (moto, local).
    pub async fn connect(
        table: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, StoreError> {
        let config = crate::aws::sdk_config(endpoint, region).await;
        Ok(DynamoRegistry {
            client: Client::new(&config),
            table: table.to_owned(),
        })
    }

    /// The SDK client, for tools and tests that need more than the port (e.g. bulk loads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if it does not exist (development and tests) and waits until it is ACTIVE.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("tenant_id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(StoreError::unavailable)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("tenant_id")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(StoreError::unavailable)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(e) = created {
            if e.code() != Some("ResourceInUseException") {
                return Err(sdk_err("CreateTable", e));
            }
        }
        let deadline = Instant::now() + TABLE_ACTIVE_WAIT;
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeTable", e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::Unavailable(format!(
                    "dynamodb table {} not ACTIVE after {TABLE_ACTIVE_WAIT:?}",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get_item(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        out.item().map(from_item).transpose()
    }
}

fn sdk_err<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::aws::sdk_error("dynamodb", op, e)
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn to_item(r: &TenantRecord) -> Item {
    let mut item = Item::from([
        ("tenant_id".into(), s(r.tenant_id.as_str())),
        ("status".into(), s(r.status.as_str())),
        ("pod_name".into(), s(&r.pod_name)),
        ("pod_ip".into(), s(&r.pod_ip)),
        ("namespace".into(), s(&r.namespace)),
        ("s3_prefix".into(), s(&r.s3_prefix)),
        ("bot_token".into(), s(r.bot_token.expose())),
        ("created_at".into(), s(&format_time(&r.created_at))),
        ("last_active_at".into(), s(&format_time(&r.last_active_at))),
        ("idle_timeout_s".into(), n(r.idle_timeout_s)),
    ]);
    if let Some(p) = r.agent_port {
        item.insert("agent_port".into(), n(p.into()));
    }
    item
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v >= 0.0)
        .map(|v| v as u64)
}

/// Reads an item, also one the Go platform wrote (optional attributes absent, fractional seconds).
fn from_item(item: &Item) -> Result<TenantRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("dynamodb item: {what}"));
    let id = get_s(item, "tenant_id").ok_or_else(|| corrupt("tenant_id missing"))?;
    let tenant_id = TenantId::parse(id).map_err(|e| corrupt(&e.to_string()))?;
    let status = get_s(item, "status")
        .ok_or_else(|| corrupt("status missing"))?
        .parse::<TenantStatus>()
        .map_err(|e| corrupt(&e))?;
    let time = |name: &str| get_s(item, name).and_then(parse_time);
    let created_at = time("created_at").ok_or_else(|| corrupt("created_at"))?;
    Ok(TenantRecord {
        status,
        pod_name: get_s(item, "pod_name").unwrap_or_default().to_owned(),
        pod_ip: get_s(item, "pod_ip").unwrap_or_default().to_owned(),
        agent_port: get_n(item, "agent_port").and_then(|p| u16::try_from(p).ok()),
        namespace: get_s(item, "namespace")
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned(),
        s3_prefix: get_s(item, "s3_prefix")
            .map(str::to_owned)
            .unwrap_or_else(|| tenant_id.s3_prefix()),
        bot_token: Secret::new(get_s(item, "bot_token").unwrap_or_default()),
        last_active_at: time("last_active_at").unwrap_or(created_at),
        created_at,
        idle_timeout_s: super::stored_idle_timeout(get_n(item, "idle_timeout_s")),
        tenant_id,
    })
}

#[async_trait]
impl Registry for DynamoRegistry {
    async fn create(&self, r: &TenantRecord) -> Result<(), StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(r)))
            .condition_expression("attribute_not_exists(tenant_id)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::AlreadyExists),
            Err(e) => Err(sdk_err("PutItem", e)),
        }
    }

    async fn get(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        self.get_item(id).await
    }

    async fn list(&self, status: Option<TenantStatus>) -> Result<Vec<TenantRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                req = req
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(st.as_str()));
            }
            let page = req.send().await.map_err(|e| sdk_err("Scan", e))?;
            for item in page.items() {
                // One unreadable item must not hide every other tenant from the operator.
                match from_item(item) {
                    Ok(r) => records.push(r),
                    Err(e) => tracing::warn!(
                        tenant = get_s(item, "tenant_id").unwrap_or("?"),
                        error = %e,
                        "registry: skipping unreadable item"
                    ),
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        records.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(records)
    }

    async fn update_settings(
        &self,
        id: &TenantId,
        update: &SettingsUpdate,
    ) -> Result<TenantRecord, StoreError> {
        let mut sets = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()));
        if let Some(t) = &update.bot_token {
            sets.push("bot_token = :token");
            req = req.expression_attribute_values(":token", s(t.expose()));
        }
        if let Some(v) = update.idle_timeout_s {
            sets.push("idle_timeout_s = :timeout");
            req = req.expression_attribute_values(":timeout", n(v));
        }
        if sets.is_empty() {
            return self.get_item(id).await?.ok_or(StoreError::NotFound);
        }
        let res = req
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_exists(tenant_id)")
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => from_item(out.attributes().ok_or(StoreError::NotFound)?),
            Err(e) if is_condition_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }

    async fn set_status(
        &self,
        id: &TenantId,
        from: TenantStatus,
        update: &StatusUpdate,
    ) -> Result<TenantRecord, StoreError> {
        let mut sets = vec!["#status = :to", "pod_name = :pod_name", "pod_ip = :pod_ip"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":from", s(from.as_str()))
            .expression_attribute_values(":to", s(update.status.as_str()))
            .expression_attribute_values(":pod_name", s(&update.pod_name))
            .expression_attribute_values(":pod_ip", s(&update.pod_ip));
        if let Some(p) = update.agent_port {
            sets.push("agent_port = :port");
            req = req.expression_attribute_values(":port", n(p.into()));
        }
        if let Some(t) = update.touch {
            sets.push("last_active_at = :active");
            req = req.expression_attribute_values(":active", s(&format_time(&t)));
        }
        let mut expr = format!("SET {}", sets.join(", "));
        if update.agent_port.is_none() {
            expr.push_str(" REMOVE agent_port");
        }
        let res = req
            .update_expression(expr)
            .condition_expression("attribute_exists(tenant_id) AND #status = :from")
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => from_item(out.attributes().ok_or(StoreError::NotFound)?),
            Err(e) if is_condition_failed(&e) => {
                let returned = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item(),
                    _ => None,
                };
                let old = match returned {
                    Some(item) => Some(from_item(item)?),
                    // Emulators may not return the old item: look it up.
                    None => self.get_item(id).await?,
                };
                match old {
                    Some(r) => Err(StoreError::Conflict(format!(
                        "tenant {id} is {}, not {from}",
                        r.status
                    ))),
                    None => Err(StoreError::NotFound),
                }
            }
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }

    async fn touch(&self, id: &TenantId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .update_expression("SET last_active_at = :active")
            .condition_expression("attribute_exists(tenant_id)")
            .expression_attribute_values(":active", s(&format_time(&at)))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_err("DeleteItem", e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_err("DescribeTable", e))
    }

    fn name(&self) -> &'static str {
        "dynamodb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_item_reads_back() {
        let item = Item::from([
            ("tenant_id".into(), s("bob")),
            ("status".into(), s("running")),
            ("pod_name".into(), s("zeroclaw-bob")),
            ("pod_ip".into(), s("10.0.0.7")),
            ("namespace".into(), s("tenants")),
            ("s3_prefix".into(), s("tenants/bob/")),
            ("bot_token".into(), s("1:abc")),
            ("created_at".into(), s("2024-05-01T10:00:00.123456789Z")),
            ("last_active_at".into(), s("2024-05-01T10:05:00Z")),
            ("idle_timeout_s".into(), AttributeValue::N("600".into())),
        ]);
        let r = from_item(&item).unwrap();
        assert_eq!(r.status, TenantStatus::Running);
        assert_eq!(r.endpoint(3000).as_deref(), Some("10.0.0.7:3000"));
        assert_eq!(r.idle_timeout_s, 600);
        assert_eq!(r.agent_port, None);

        let mut idle = item.clone();
        idle.insert("status".into(), s("idle"));
        idle.remove("pod_name");
        idle.remove("pod_ip");
        let r = from_item(&idle).unwrap();
        assert_eq!((r.pod_name.as_str(), r.pod_ip.as_str()), ("", ""));
    }

    #[test]
    fn a_go_item_with_idle_timeout_zero_reads_as_the_go_default() {
        let item = Item::from([
            ("tenant_id".into(), s("carol")),
            ("status".into(), s("idle")),
            ("namespace".into(), s("tenants")),
            ("s3_prefix".into(), s("tenants/carol/")),
            ("created_at".into(), s("2024-05-01T10:00:00Z")),
            ("last_active_at".into(), s("2024-05-01T10:00:00Z")),
            ("idle_timeout_s".into(), AttributeValue::N("0".into())),
        ]);
        assert_eq!(from_item(&item).unwrap().idle_timeout_s, 300);
    }

    #[test]
    fn record_round_trips() {
        let mut r = TenantRecord::new(
            TenantId::parse("alice").unwrap(),
            Secret::new("1:tok"),
            300,
            "tenants",
            parse_time("2024-05-01T10:00:00Z").unwrap(),
        );
        r.agent_port = Some(4000);
        assert_eq!(from_item(&to_item(&r)).unwrap(), r);
    }
}
