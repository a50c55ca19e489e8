//! Redis connections shared by the Redis adapters. `REDIS_ADDR` is `host:port` or a
//! `redis://[user][:password@]host:port[/db]` (`rediss://` for TLS) URL; `REDIS_PASSWORD`, when set
//! and the URL has none, is the password (convenient from a Kubernetes Secret). Neither the
//! address nor an error ever carries the password into a log line.
//!
//! One `redis::aio::ConnectionManager` per pool: a multiplexed connection on which redis-rs
//! pipelines concurrent commands, replaced by the crate when it drops. Not a pool of connections
//! checked out per call: deadpool-redis sent `PING` on every checkout, which doubled the round
//! trips of an inbox append (measured: bench/results/profile.md, "Third round").

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, IntoConnectionInfo, RedisError};

use crate::{Secret, StoreError};

/// Bound on connecting and on one command, so that calls fail fast (`Unavailable`) while Redis
/// is down instead of hanging a request.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The shared connection, connected by the first call (so building it succeeds while Redis is
/// down) and reconnected by the call after it dropped. Cloning shares it.
#[derive(Clone)]
pub struct Pool {
    manager: ConnectionManager,
    #[cfg(test)]
    client: redis::Client,
}

/// What the adapters send commands on (`redis::AsyncCommands`, scripts, pipelines).
pub type Connection = ConnectionManager;

/// Builds a pool for `REDIS_ADDR`, with `REDIS_PASSWORD` from the environment when set. Call it
/// on the runtime that will use it (the manager spawns its reconnects there).
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
        |e: RedisError| StoreError::unavailable_in(format!("redis address {:?}", redact(&url)), e);
    let mut info = url.as_str().into_connection_info().map_err(invalid)?;
    if let Some(p) = password.filter(|_| info.redis_settings().password().is_none()) {
        let settings = info.redis_settings().clone().set_password(p.expose());
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info).map_err(invalid)?;
    // One connect attempt per reconnect (no retries with backoff): a caller during an outage
    // waits for at most one `TIMEOUT`, and the next call tries again.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(0);
    let manager =
        ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(invalid)?;
    Ok(Pool {
        manager,
        #[cfg(test)]
        client,
    })
}

/// The pool's connection (a cheap clone of the shared one).
pub async fn conn(pool: &Pool) -> Result<Connection, StoreError> {
    Ok(pool.manager.clone())
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

/// What an `Unavailable` from [`err`] starts with when Redis refused the credentials.
const REFUSED: &str =
    "redis refused the credentials (check the password of REDIS_ADDR or REDIS_PASSWORD)";

/// Maps a command error, keeping it as the source; Redis errors carry no request arguments, so
/// no secret leaks.
pub fn err(e: RedisError) -> StoreError {
    if refused(&e) {
        return StoreError::unavailable_in(REFUSED, e);
    }
    StoreError::unavailable_in("redis", e)
}

fn refused(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// At start-up: fails when Redis answers but refuses the credentials (a configuration error that
/// retrying cannot fix); an unreachable Redis is not an error here, the services wait for it.
pub async fn check_credentials(pool: &Pool) -> Result<(), StoreError> {
    let result = ping(pool).await;
    match result {
        Err(e) if crate::error::find_source::<RedisError>(&e).is_some_and(refused) => Err(e),
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
    redis::AsyncCommands::ping::<String>(&mut c)
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

    #[tokio::test]
    async fn a_password_from_the_url_or_the_variable_reaches_the_connection() {
        let pw = Secret::new("from-var");
        let p = pool_with_password("redis:6379", Some(&pw)).unwrap();
        let info = p.client.get_connection_info();
        assert_eq!(info.redis_settings().password(), Some("from-var"));
        let p = pool_with_password("redis://u:in-url@redis:6379", Some(&pw)).unwrap();
        let info = p.client.get_connection_info();
        assert_eq!(info.redis_settings().password(), Some("in-url"));
        assert_eq!(info.redis_settings().username(), Some("u"));
        let e = pool_with_password("redis://:s3cret@[bad", None)
            .err()
            .unwrap();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    /// A command that fails (nothing listens) keeps redis-rs's error as the source.
    #[tokio::test]
    async fn a_redis_failure_keeps_the_driver_error_as_its_source() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = pool_with_password(&format!("127.0.0.1:{port}"), None).unwrap();
        let err = ping(&p).await.unwrap_err();
        assert!(
            err.to_string().starts_with("backend unavailable: redis: "),
            "{err}"
        );
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<RedisError>().is_some(), "{source:?}");
        // An unreachable Redis is not a credentials error: the services start and wait for it.
        check_credentials(&p).await.unwrap();
    }
}
