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

use super::{ErrorChange, Registry, SettingsUpdate, StatusUpdate};
use crate::lifecycle::{EventType, LastError, NewEvent, TenantEvent, EVENTS_KEPT};
use crate::resources::AgentResources;

/// Attribute names of the resource overrides, with their field in `AgentResources`.
const RESOURCE_ATTRS: [&str; 4] = ["cpu_request", "cpu_limit", "memory_request", "memory_limit"];

fn resource_values(r: &AgentResources) -> [&Option<String>; 4] {
    [
        &r.cpu_request,
        &r.cpu_limit,
        &r.memory_request,
        &r.memory_limit,
    ]
}
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
    /// Events live in their own table (hash `tenant_id`, range `seq`), so that the tenant table
    /// keeps the Go schema and its scans see only tenants. Item `seq = 0` holds the counter.
    events_table: String,
}

/// Name of the events table beside registry table `table` unless configured otherwise.
pub fn default_events_table(table: &str) -> String {
    format!("{table}-events")
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
            events_table: default_events_table(table),
        })
    }

    /// Keeps events in `table` instead of `{registry table}-events`.
    pub fn with_events_table(mut self, table: &str) -> Self {
        self.events_table = table.to_owned();
        self
    }

    pub fn events_table(&self) -> &str {
        &self.events_table
    }

    /// The SDK client, for tools and tests that need more than the port (e.g. bulk loads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the tables (registry and events) if they do not exist (development and tests) and
    /// waits until they are ACTIVE.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        let key = |name: &str, ty: ScalarAttributeType, kind: KeyType| {
            Ok::<_, StoreError>((
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ty)
                    .build()
                    .map_err(StoreError::unavailable)?,
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
                    .map_err(StoreError::unavailable)?,
            ))
        };
        let tenant = key("tenant_id", ScalarAttributeType::S, KeyType::Hash)?;
        let seq = key("seq", ScalarAttributeType::N, KeyType::Range)?;
        self.create_table(&self.table, vec![tenant.clone()]).await?;
        self.create_table(&self.events_table, vec![tenant, seq])
            .await
    }

    async fn create_table(
        &self,
        table: &str,
        keys: Vec<(AttributeDefinition, KeySchemaElement)>,
    ) -> Result<(), StoreError> {
        let (defs, schema): (Vec<_>, Vec<_>) = keys.into_iter().unzip();
        let created = self
            .client
            .create_table()
            .table_name(table)
            .set_attribute_definitions(Some(defs))
            .set_key_schema(Some(schema))
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
                .table_name(table)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeTable", e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::unavailable_msg(format!(
                    "dynamodb table {table} not ACTIVE after {TABLE_ACTIVE_WAIT:?}"
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

impl DynamoRegistry {
    async fn set_flag(
        &self,
        id: &TenantId,
        name: &str,
        on: bool,
    ) -> Result<TenantRecord, StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .expression_attribute_names("#flag", name)
            .condition_expression("attribute_exists(tenant_id)")
            .return_values(ReturnValue::AllNew);
        // Unset flags are removed, so the item looks like the Go platform's again.
        let req = if on {
            req.update_expression("SET #flag = :on")
                .expression_attribute_values(":on", AttributeValue::Bool(true))
        } else {
            req.update_expression("REMOVE #flag")
        };
        match req.send().await {
            Ok(out) => from_item(out.attributes().ok_or(StoreError::NotFound)?),
            Err(e) if is_condition_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }
}

fn sdk_err<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
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
    if !r.agent_token.is_empty() {
        item.insert("agent_token".into(), s(r.agent_token.expose()));
    }
    if let Some(c) = &r.agent_config {
        item.insert("agent_config".into(), s(c));
    }
    if r.suspended {
        item.insert("suspended".into(), AttributeValue::Bool(true));
    }
    if r.deleting {
        item.insert("deleting".into(), AttributeValue::Bool(true));
    }
    if r.fence > 0 {
        item.insert("fence".into(), n(r.fence));
    }
    for (name, v) in RESOURCE_ATTRS.iter().zip(resource_values(&r.resources)) {
        if let Some(v) = v {
            item.insert((*name).into(), s(v));
        }
    }
    if let Some(e) = &r.last_error {
        item.insert("last_error_reason".into(), s(&e.reason));
        item.insert("last_error_message".into(), s(&e.message));
        item.insert("last_error_at".into(), s(&format_time(&e.at)));
    }
    item
}

fn get_bool(item: &Item, name: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
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
    let corrupt = |what: &str| StoreError::corrupt(format!("dynamodb item: {what}"));
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
        agent_token: Secret::new(get_s(item, "agent_token").unwrap_or_default()),
        agent_config: get_s(item, "agent_config").map(str::to_owned),
        resources: AgentResources {
            cpu_request: get_s(item, "cpu_request").map(str::to_owned),
            cpu_limit: get_s(item, "cpu_limit").map(str::to_owned),
            memory_request: get_s(item, "memory_request").map(str::to_owned),
            memory_limit: get_s(item, "memory_limit").map(str::to_owned),
        },
        suspended: get_bool(item, "suspended"),
        deleting: get_bool(item, "deleting"),
        fence: get_n(item, "fence").unwrap_or(0),
        last_error: get_s(item, "last_error_reason").and_then(|reason| {
            Some(LastError {
                reason: reason.to_owned(),
                message: get_s(item, "last_error_message")
                    .unwrap_or_default()
                    .to_owned(),
                at: time("last_error_at")?,
            })
        }),
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
            sets.push("bot_token = :token".to_owned());
            req = req.expression_attribute_values(":token", s(t.expose()));
        }
        if let Some(v) = update.idle_timeout_s {
            sets.push("idle_timeout_s = :timeout".to_owned());
            req = req.expression_attribute_values(":timeout", n(v));
        }
        let mut removes = Vec::new();
        if let Some(r) = &update.resources {
            for (name, v) in RESOURCE_ATTRS.iter().zip(resource_values(r)) {
                match v {
                    Some(v) => {
                        sets.push(format!("{name} = :{name}"));
                        req = req.expression_attribute_values(format!(":{name}"), s(v));
                    }
                    None => removes.push(*name),
                }
            }
        }
        if sets.is_empty() && removes.is_empty() {
            return self.get_item(id).await?.ok_or(StoreError::NotFound);
        }
        let mut expr = String::new();
        if !sets.is_empty() {
            expr = format!("SET {}", sets.join(", "));
        }
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let res = req
            .update_expression(expr.trim())
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
        let mut removes = Vec::new();
        if update.agent_port.is_none() {
            removes.push("agent_port");
        }
        match &update.last_error {
            ErrorChange::Keep => {}
            ErrorChange::Clear => {
                removes.extend(["last_error_reason", "last_error_message", "last_error_at"])
            }
            ErrorChange::Set(e) => {
                sets.extend([
                    "last_error_reason = :err_reason",
                    "last_error_message = :err_message",
                    "last_error_at = :err_at",
                ]);
                req = req
                    .expression_attribute_values(":err_reason", s(&e.reason))
                    .expression_attribute_values(":err_message", s(&e.message))
                    .expression_attribute_values(":err_at", s(&format_time(&e.at)));
            }
        }
        let mut condition = String::from("attribute_exists(tenant_id) AND #status = :from");
        if let Some(f) = update.fence {
            // Items without the attribute (the Go platform's, or never fenced) accept any fence.
            sets.push("fence = :fence");
            condition.push_str(" AND (attribute_not_exists(fence) OR fence <= :fence)");
            req = req.expression_attribute_values(":fence", n(f));
        }
        let mut expr = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let res = req
            .update_expression(expr)
            .condition_expression(condition)
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
                    Some(r) => Err(super::status_conflict(id, from, update, &r)),
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

    async fn set_agent_token_if_absent(
        &self,
        id: &TenantId,
        token: &Secret,
    ) -> Result<TenantRecord, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .update_expression("SET agent_token = :token")
            .condition_expression(
                "attribute_exists(tenant_id) AND (attribute_not_exists(agent_token) OR agent_token = :empty)",
            )
            .expression_attribute_values(":token", s(token.expose()))
            .expression_attribute_values(":empty", s(""))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => from_item(out.attributes().ok_or(StoreError::NotFound)?),
            // Absent, or another replica stored one first: the stored record says which.
            Err(e) if is_condition_failed(&e) => {
                self.get_item(id).await?.ok_or(StoreError::NotFound)
            }
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }

    async fn set_agent_config(
        &self,
        id: &TenantId,
        config: Option<&str>,
    ) -> Result<TenantRecord, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenant_id", s(id.as_str()))
            .condition_expression("attribute_exists(tenant_id)")
            .return_values(ReturnValue::AllNew);
        req = match config {
            Some(c) => req
                .update_expression("SET agent_config = :config")
                .expression_attribute_values(":config", s(c)),
            None => req.update_expression("REMOVE agent_config"),
        };
        match req.send().await {
            Ok(out) => from_item(out.attributes().ok_or(StoreError::NotFound)?),
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

    async fn set_suspended(
        &self,
        id: &TenantId,
        suspended: bool,
    ) -> Result<TenantRecord, StoreError> {
        self.set_flag(id, "suspended", suspended).await
    }

    async fn set_deleting(&self, id: &TenantId) -> Result<TenantRecord, StoreError> {
        self.set_flag(id, "deleting", true).await
    }

    async fn append_event(&self, id: &TenantId, e: &NewEvent) -> Result<u64, StoreError> {
        // The counter item (seq 0) hands out sequence numbers atomically across replicas.
        let out = self
            .client
            .update_item()
            .table_name(&self.events_table)
            .key("tenant_id", s(id.as_str()))
            .key("seq", n(0))
            .update_expression("ADD next_seq :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_err("UpdateItem", e))?;
        let seq = out
            .attributes()
            .and_then(|a| get_n(a, "next_seq"))
            .ok_or_else(|| StoreError::corrupt("dynamodb event counter"))?;
        self.client
            .put_item()
            .table_name(&self.events_table)
            .item("tenant_id", s(id.as_str()))
            .item("seq", n(seq))
            .item("at", s(&format_time(&e.at)))
            .item("type", s(e.kind.as_str()))
            .item("reason", s(&e.reason))
            .item("message", s(&e.message))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        if seq > EVENTS_KEPT {
            // Each append drops the one that fell out of the window: the history stays bounded.
            if let Err(e) = self
                .client
                .delete_item()
                .table_name(&self.events_table)
                .key("tenant_id", s(id.as_str()))
                .key("seq", n(seq - EVENTS_KEPT))
                .send()
                .await
            {
                tracing::warn!(tenant = %id, error = %sdk_err("DeleteItem", e), "events: dropping the oldest event failed");
            }
        }
        Ok(seq)
    }

    async fn events(
        &self,
        id: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TenantEvent>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.events_table)
                .consistent_read(true)
                .key_condition_expression("tenant_id = :id AND seq > :after")
                .expression_attribute_values(":id", s(id.as_str()))
                .expression_attribute_values(":after", n(after))
                .scan_index_forward(false)
                .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            for item in page.items() {
                let (Some(seq), Some(at)) =
                    (get_n(item, "seq"), get_s(item, "at").and_then(parse_time))
                else {
                    continue;
                };
                out.push(TenantEvent {
                    seq,
                    at,
                    kind: EventType::parse(get_s(item, "type").unwrap_or_default()),
                    reason: get_s(item, "reason").unwrap_or_default().to_owned(),
                    message: get_s(item, "message").unwrap_or_default().to_owned(),
                });
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() && out.len() < limit => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(limit);
        out.reverse();
        Ok(out)
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
        assert_eq!(
            r.endpoint(3000).map(|e| e.to_string()).as_deref(),
            Some("10.0.0.7:3000")
        );
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
        r.agent_token = crate::tenant::new_agent_token();
        r.agent_config = Some(r#"{"model":"m"}"#.into());
        assert_eq!(from_item(&to_item(&r)).unwrap(), r);
    }
}
