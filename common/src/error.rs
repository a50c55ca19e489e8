use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The `code` of the orchestrator's `/wake` error body when the agent itself could not be started
/// (image, configuration, crash, not healthy in time): a definitive failure. Any other wake error
/// (503, no body, a proxy's page) means a backend or the orchestrator is unavailable: retry.
pub const AGENT_START_FAILED: &str = "agent_start_failed";

/// A cause kept as an error's `#[source]`: the driver's own error (`redis::RedisError`,
/// `rusqlite::Error`, `std::io::Error`, ...), so callers can walk or downcast the chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What any port adapter (registry, lock, cache, inbox, state store) can fail with.
///
/// The message keeps the text operators read (`backend unavailable: redis: ...`); the driver's
/// error is the `source` (`std::error::Error::source` reaches it). Neither ever carries a secret:
/// adapters keep no source that holds a request's values (reqwest errors lose their URL, AWS
/// service errors are not kept, see `aws::sdk_error`). Clones share the source (one batch error
/// goes to every waiter); equality compares the variant and the text, not the source.
#[derive(Debug, Clone)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    /// A conditional write lost: the stored state is not the one the caller expected.
    Conflict(String),
    /// The backend could not be reached or failed; the caller may retry later.
    Unavailable {
        /// What failed, with the cause's text (`redis: Connection refused`).
        message: Cow<'static, str>,
        source: Option<SharedError>,
    },
    /// Stored data could not be decoded.
    Corrupt {
        message: Cow<'static, str>,
        source: Option<SharedError>,
    },
}

/// A source several clones of one error share.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::AlreadyExists => f.write_str("already exists"),
            StoreError::Conflict(why) => write!(f, "conflict: {why}"),
            StoreError::Unavailable { message, .. } => write!(f, "backend unavailable: {message}"),
            StoreError::Corrupt { message, .. } => write!(f, "corrupt data: {message}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Unavailable { source, .. } | StoreError::Corrupt { source, .. } => source
                .as_deref()
                .map(|s| s as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

impl StoreError {
    /// `Unavailable` caused by `e` (a driver error; a plain message is kept as its text).
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        let source = e.into();
        StoreError::Unavailable {
            message: source.to_string().into(),
            source: Some(source.into()),
        }
    }

    /// `Unavailable` caused by `e` while doing `what`: `backend unavailable: {what}: {e}`.
    pub fn unavailable_in(what: impl fmt::Display, e: impl Into<BoxError>) -> Self {
        let source = e.into();
        StoreError::Unavailable {
            message: format!("{what}: {source}").into(),
            source: Some(source.into()),
        }
    }

    /// `Unavailable` with no underlying error (e.g. a lock lost, a writer task gone).
    pub fn unavailable_msg(message: impl Into<Cow<'static, str>>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// `Corrupt` with no underlying error: `message` says what did not decode.
    pub fn corrupt(message: impl Into<Cow<'static, str>>) -> Self {
        StoreError::Corrupt {
            message: message.into(),
            source: None,
        }
    }

    /// `Corrupt` caused by `e` (a parse error): `corrupt data: {e}`.
    pub fn corrupt_from(e: impl Into<BoxError>) -> Self {
        let source = e.into();
        StoreError::Corrupt {
            message: source.to_string().into(),
            source: Some(source.into()),
        }
    }
}

/// An error with its causes, e.g. `error sending request: client error (Connect): tcp connect
/// error: Connection refused`. A cause whose text its parent's message already shows (errors here
/// keep the operator's text and the source both) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The first error of `e`'s source chain (itself included) that is a `T`: the driver's error
/// behind an adapter's, e.g. `find_source::<redis::RedisError>(&store_error)`.
pub fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use thiserror::Error;

    use super::*;

    #[test]
    fn the_source_is_kept_and_the_text_is_the_operators() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::unavailable_in("sqlite", io);
        assert_eq!(e.to_string(), "backend unavailable: sqlite: refused");
        let io = find_source::<std::io::Error>(&e).expect("the io error is the source");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        // The chain does not repeat the cause the message already shows.
        assert_eq!(error_chain(&e), "backend unavailable: sqlite: refused");
        assert!(std::error::Error::source(&StoreError::unavailable_msg("lock lost")).is_none());
    }

    #[test]
    fn error_chain_appends_causes_the_message_does_not_show() {
        #[derive(Debug, Error)]
        #[error("registry get")]
        struct Top(#[source] std::io::Error);
        let e = Top(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&e), "registry get: connection reset");
    }
}
