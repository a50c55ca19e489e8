//! Redis inbox under `router:inbox:`, shared by every router replica:
//! - `router:inbox:stream:{id}`: a stream per tenant (arrival order; the stream id gives the time);
//! - `router:inbox:seen:{id}`: dedupe marks, a sorted set of update ids scored by the time they
//!   were seen, trimmed to `DEDUPE_TTL` and `DEDUPE_MAX_PER_TENANT` on every append, so that a
//!   tenant's marks cost a bounded amount (a key per update filled Redis at ~45 updates/s);
//!   `router:inbox:seen:{id}:{update_id}` marks of older versions are still honoured until they expire;
//! - `router:inbox:tenants`: set of tenants with undelivered entries;
//! - `router:inbox:lease:{id}`: the deliverer's claim (owner token, TTL).
//!
//! Append and ack are Lua scripts, so the mark, the entry and the tenant set never disagree.
//! Durability across a Redis crash needs AOF (`appendonly yes`, `appendfsync everysec` or `always`).

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::streams::StreamRangeReply;
use redis::{AsyncTypedCommands, Script, Value};

use super::{now_ms, Appended, Inbox, InboxEntry, InboxStats, DEDUPE_MAX_PER_TENANT, DEDUPE_TTL};
use crate::lock::redis::RedisLock;
use crate::lock::WakeLock;
use crate::redis_pool::{self, Pool};
use crate::{StoreError, TenantId};

const TENANTS_KEY: &str = "router:inbox:tenants";

fn stream_key(t: &TenantId) -> String {
    format!("router:inbox:stream:{t}")
}

fn seen_key(t: &TenantId) -> String {
    format!("router:inbox:seen:{t}")
}

/// The one-key-per-update mark of versions before the bounded set.
fn legacy_seen_key(t: &TenantId, update_id: i64) -> String {
    format!("router:inbox:seen:{t}:{update_id}")
}

/// KEYS: seen set, stream, tenant set, legacy mark. ARGV: dedupe TTL ms, update_id, payload,
/// tenant, now ms, most marks kept, most pending entries. Returns the new entry id, 0 for a
/// duplicate, or -1 when the tenant's stream already holds the most pending entries (nothing written).
///
/// The first write is the `ZADD`: under `maxmemory` with `noeviction` Redis refuses a script's
/// first growing write, so a full Redis refuses the whole append (the router answers 503) and
/// never half of it.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local horizon = tonumber(ARGV[5]) - tonumber(ARGV[1]) \
         local seen = redis.call('zscore', KEYS[1], ARGV[2]) \
         if (seen and tonumber(seen) > horizon) or redis.call('exists', KEYS[4]) == 1 then return 0 end \
         if redis.call('xlen', KEYS[2]) >= tonumber(ARGV[7]) then return -1 end \
         redis.call('zadd', KEYS[1], ARGV[5], ARGV[2]) \
         redis.call('zremrangebyscore', KEYS[1], '-inf', horizon) \
         local extra = redis.call('zcard', KEYS[1]) - tonumber(ARGV[6]) \
         if extra > 0 then redis.call('zpopmin', KEYS[1], extra) end \
         redis.call('pexpire', KEYS[1], ARGV[1]) \
         local id = redis.call('xadd', KEYS[2], '*', 'u', ARGV[2], 'p', ARGV[3]) \
         redis.call('sadd', KEYS[3], ARGV[4]) \
         return id",
    )
});

/// KEYS: stream, tenant set. ARGV: entry id, tenant. Drops the stream and the tenant once empty,
/// in one step so that an append racing with the last ack is never left out of the set.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('xdel', KEYS[1], ARGV[1]) \
         if redis.call('xlen', KEYS[1]) == 0 then \
           redis.call('del', KEYS[1]) \
           redis.call('srem', KEYS[2], ARGV[2]) \
         end \
         return 1",
    )
});

pub struct RedisInbox {
    pool: Pool,
    /// Delivery claims are wake-lock-style leases on `router:inbox:lease:{id}`.
    claims: RedisLock,
}

impl RedisInbox {
    pub fn new(pool: Pool) -> Self {
        RedisInbox {
            claims: RedisLock::new(pool.clone()),
            pool,
        }
    }
}

/// Milliseconds part of a stream id `ms-seq`; `None` for anything else.
fn id_ms(id: &str) -> Option<i64> {
    let (ms, seq) = id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(format!("redis inbox: {what}"))
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn append_within(
        &self,
        tenant: &TenantId,
        update_id: i64,
        payload: &[u8],
        max_pending: u64,
    ) -> Result<Appended, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let v: Value = APPEND
            .key(seen_key(tenant))
            .key(stream_key(tenant))
            .key(TENANTS_KEY)
            .key(legacy_seen_key(tenant, update_id))
            .arg(DEDUPE_TTL.as_millis() as u64)
            .arg(update_id)
            .arg(payload)
            .arg(tenant.as_str())
            .arg(now_ms())
            .arg(DEDUPE_MAX_PER_TENANT)
            .arg(max_pending)
            .invoke_async(&mut c)
            .await
            .map_err(redis_pool::err)?;
        Ok(match v {
            Value::Int(0) => Appended::Duplicate,
            Value::Int(-1) => Appended::Full,
            _ => Appended::New,
        })
    }

    async fn pending(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = redis_pool::conn(&self.pool).await?;
        let reply = c
            .xrange_count(stream_key(tenant), "-", "+", limit)
            .await
            .map_err(redis_pool::err)?;
        reply
            .ids
            .into_iter()
            .map(|e| {
                Ok(InboxEntry {
                    received_at_ms: id_ms(&e.id).ok_or_else(|| corrupt("entry id"))?,
                    update_id: e.get("u").ok_or_else(|| corrupt("update_id"))?,
                    payload: e.get("p").ok_or_else(|| corrupt("payload"))?,
                    id: e.id,
                })
            })
            .collect()
    }

    async fn ack(&self, tenant: &TenantId, entry_id: &str) -> Result<(), StoreError> {
        if id_ms(entry_id).is_none() {
            return Ok(()); // never one of ours, so nothing to remove
        }
        let mut c = redis_pool::conn(&self.pool).await?;
        ACK.key(stream_key(tenant))
            .key(TENANTS_KEY)
            .arg(entry_id)
            .arg(tenant.as_str())
            .invoke_async::<i64>(&mut c)
            .await
            .map(drop)
            .map_err(redis_pool::err)
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let mut c = redis_pool::conn(&self.pool).await?;
        let names = c.smembers(TENANTS_KEY).await.map_err(redis_pool::err)?;
        let mut ids: Vec<TenantId> = names
            .iter()
            .filter_map(|n| TenantId::parse(n).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn claims(&self) -> &dyn WakeLock {
        &self.claims
    }

    async fn stats(&self) -> Result<InboxStats, StoreError> {
        let tenants = self.tenants().await?;
        if tenants.is_empty() {
            return Ok(InboxStats::default());
        }
        let mut pipe = redis::pipe();
        for t in &tenants {
            let key = stream_key(t);
            pipe.xlen(&key).xrange_count(&key, "-", "+", 1);
        }
        let mut c = redis_pool::conn(&self.pool).await?;
        let replies: Vec<Value> = pipe.query_async(&mut c).await.map_err(redis_pool::err)?;
        let mut stats = InboxStats::default();
        for pair in replies.chunks(2) {
            let [len, first] = pair else { continue };
            let len: u64 =
                redis::from_redis_value_ref(len).map_err(|_| corrupt("stream length"))?;
            let first: StreamRangeReply =
                redis::from_redis_value_ref(first).map_err(|_| corrupt("stream entry"))?;
            stats.depth += len;
            if let Some(ms) = first.ids.first().and_then(|e| id_ms(&e.id)) {
                stats.oldest_received_at_ms =
                    Some(stats.oldest_received_at_ms.map_or(ms, |o| o.min(ms)));
            }
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis_pool::ping(&self.pool).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
