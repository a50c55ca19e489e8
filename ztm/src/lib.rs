//! `ztm`: the operator CLI of the tenancy platform, over HTTP, `kubectl port-forward` or `kubectl exec`.

pub mod api;
pub mod cli;
pub mod commands;
pub mod config_cmd;
pub mod error;
pub mod lifecycle;
pub mod migrate;
pub mod output;
pub mod transport;
pub mod webhook_all;
