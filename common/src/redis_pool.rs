//! Redis connections shared by the Redis adapters (`REDIS_ADDR` is `host:port` or a `redis://` URL).
//!
//! One multiplexed connection per pool: redis-rs pipelines concurrent commands on it, so no caller
//! waits for a free connection and no checkout costs a health round trip (deadpool-redis sent
//! `PING` on every checkout, doubling the round trips of an inbox append). A connection that
//! dropped is replaced by the next call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::StoreError;

/// Bound on connecting, on one command and on waiting for a connection, so that calls fail fast
/// (`Unavailable`) while Redis is down instead of hanging a request.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A shared, lazily (re)connected Redis connection. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// The live connection and its generation (so that a late failure report on an old
    /// connection does not drop its replacement).
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
    /// One connect attempt at a time.
    connecting: tokio::sync::Mutex<()>,
}

/// A handle on the pool's connection; reports a dropped connection back to the pool.
pub struct Connection {
    conn: MultiplexedConnection,
    generation: u64,
    pool: Arc<Inner>,
}

/// Builds a pool; the connection is made by the first call, so this succeeds while Redis is down.
pub fn pool(addr: &str) -> Result<Pool, StoreError> {
    let url = if addr.starts_with("redis://") || addr.starts_with("rediss://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    };
    let client = redis::Client::open(url.as_str())
        .map_err(|e| StoreError::Unavailable(format!("redis address {addr:?}: {e}")))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    Ok(Pool {
        inner: Arc::new(Inner {
            client,
            config,
            current: Mutex::new((0, None)),
            connecting: tokio::sync::Mutex::new(()),
        }),
    })
}

impl Inner {
    fn live(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        slot.1.clone().map(|c| (slot.0, c))
    }

    fn forget(&self, generation: u64) {
        let mut slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if slot.0 == generation {
            slot.1 = None;
        }
    }

    async fn connect(&self) -> Result<(u64, MultiplexedConnection), StoreError> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(err)?;
        let mut slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        slot.0 += 1;
        slot.1 = Some(conn.clone());
        Ok((slot.0, conn))
    }
}

/// The pool's connection, or `Unavailable` when Redis cannot be reached within the timeout.
pub async fn conn(pool: &Pool) -> Result<Connection, StoreError> {
    let inner = &pool.inner;
    let (generation, conn) = match inner.live() {
        Some(live) => live,
        None => tokio::time::timeout(TIMEOUT, inner.connect())
            .await
            .map_err(|_| StoreError::Unavailable("redis: connect timed out".into()))??,
    };
    Ok(Connection {
        conn,
        generation,
        pool: inner.clone(),
    })
}

impl Connection {
    fn observe<T>(&self, result: &Result<T, RedisError>) {
        if let Err(e) = result {
            if e.is_connection_dropped() || e.is_unrecoverable_error() {
                self.pool.forget(self.generation);
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Maps a command error; Redis errors carry no request arguments, so no secret leaks.
pub fn err(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// `PING` round trip for `/readyz`.
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    let mut c = conn(pool).await?;
    redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .map(drop)
        .map_err(err)
}

/// A TTL as the whole milliseconds `PX` takes (at least 1: Redis rejects 0).
pub fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}
