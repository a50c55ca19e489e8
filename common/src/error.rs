use thiserror::Error;

/// The `code` of the orchestrator's `/wake` error body when the agent itself could not be started
/// (image, configuration, crash, not healthy in time): a definitive failure. Any other wake error
/// (503, no body, a proxy's page) means a backend or the orchestrator is unavailable: retry.
pub const AGENT_START_FAILED: &str = "agent_start_failed";

/// What any port adapter (registry, lock, cache, inbox, state store) can fail with.
///
/// Messages never carry secrets: adapters map backend errors to text without request bodies.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// A conditional write lost: the stored state is not the one the caller expected.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend could not be reached or failed; the caller may retry later.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// An error with its causes, e.g. `error sending request: client error (Connect): tcp connect
/// error: Connection refused`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
