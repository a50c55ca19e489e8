//! Redis connections shared by the Redis adapters. `REDIS_ADDR` is `host:port` or a
//! `redis://[user][:password@]host:port[/db]` (`rediss://` for TLS) URL; `REDIS_PASSWORD`, when set
//! and the URL has none, is the password (convenient from a Kubernetes Secret). Neither the
//! address nor an error ever carries the password into a log line.
//!
//! One multiplexed connection per pool: redis-rs pipelines concurrent commands on it, so no caller
//! waits for a free connection and no checkout costs a health round trip (deadpool-redis sent
//! `PING` on every checkout, doubling the round trips of an inbox append). A connection that
//! dropped is replaced by the next call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    Value,
};

use crate::{Secret, StoreError};

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

/// Builds a pool for `REDIS_ADDR`, with `REDIS_PASSWORD` from the environment when set; the
/// connection is made by the first call, so this succeeds while Redis is down.
pub fn pool(addr: &str) -> Result<Pool, StoreError> {
    let password = crate::config::var("REDIS_PASSWORD").map(Secret::new);
    pool_with_password(addr, password.as_ref())
}

/// Builds a pool; `password` is used when `addr` carries none.
pub fn pool_with_password(addr: &str, password: Option<&Secret>) -> Result<Pool, StoreError> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    };
    let invalid =
        |e: RedisError| StoreError::Unavailable(format!("redis address {:?}: {e}", redact(&url)));
    let mut info = url.as_str().into_connection_info().map_err(invalid)?;
    if let Some(p) = password.filter(|_| info.redis_settings().password().is_none()) {
        let settings = info.redis_settings().clone().set_password(p.expose());
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info).map_err(invalid)?;
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

/// `addr` with the password of a `scheme://user:password@host` URL replaced by `***`.
pub fn redact(addr: &str) -> String {
    let Some((scheme, rest)) = addr.split_once("://") else {
        return addr.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return addr.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}:***@{host}")
}

/// Maps a command error; Redis errors carry no request arguments, so no secret leaks.
pub fn err(e: RedisError) -> StoreError {
    let refused = e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"));
    if refused {
        return StoreError::Unavailable(format!(
            "redis refused the credentials (check the password of REDIS_ADDR or REDIS_PASSWORD): {e}"
        ));
    }
    StoreError::Unavailable(format!("redis: {e}"))
}

/// At start-up: fails when Redis answers but refuses the credentials (a configuration error that
/// retrying cannot fix); an unreachable Redis is not an error here, the services wait for it.
pub async fn check_credentials(pool: &Pool) -> Result<(), StoreError> {
    let result = async {
        let mut c = conn(pool).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(drop)
            .map_err(err)
    }
    .await;
    match result {
        Err(StoreError::Unavailable(why)) if why.starts_with("redis refused the credentials") => {
            Err(StoreError::Unavailable(why))
        }
        _ => Ok(()),
    }
}

/// A pool for `REDIS_ADDR` whose credentials were checked: what both services start with.
pub async fn connect(addr: &Secret) -> Result<Pool, StoreError> {
    let pool = pool(addr.expose())?;
    check_credentials(&pool).await?;
    Ok(pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("redis://:s3cret@redis:6379"),
            "redis://:***@redis:6379"
        );
        assert_eq!(
            redact("rediss://app:s3cret@h:1/2"),
            "rediss://app:***@h:1/2"
        );
        assert_eq!(redact("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(redact("redis:6379"), "redis:6379");
    }

    #[test]
    fn a_password_from_the_url_or_the_variable_reaches_the_connection() {
        let pw = Secret::new("from-var");
        let p = pool_with_password("redis:6379", Some(&pw)).unwrap();
        let info = p.inner.client.get_connection_info();
        assert_eq!(info.redis_settings().password(), Some("from-var"));
        let p = pool_with_password("redis://u:in-url@redis:6379", Some(&pw)).unwrap();
        let info = p.inner.client.get_connection_info();
        assert_eq!(info.redis_settings().password(), Some("in-url"));
        assert_eq!(info.redis_settings().username(), Some("u"));
        let e = pool_with_password("redis://:s3cret@[bad", None)
            .err()
            .unwrap();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
