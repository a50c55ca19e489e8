//! What can go wrong in a ztm command; every variant is one line for stderr.

use thiserror::Error;

use crate::transport::TransportError;

#[derive(Debug, Error)]
pub enum ZtmError {
    /// The service could not be asked.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The service refused the operation; the text is its `{"error"}` message or the status.
    #[error("{0}")]
    Rejected(String),
    /// Bad local input (invalid tenant id, unreadable stdin).
    #[error("{0}")]
    Input(String),
    #[error("interrupted")]
    Interrupted,
}

impl ZtmError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ZtmError::Interrupted => 130,
            _ => 1,
        }
    }
}
