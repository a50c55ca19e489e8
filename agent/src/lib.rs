//! `tenant-agent`: a small reference agent that speaks the agent contract (`POST /webhook`,
//! `GET /health`) and keeps its memory in SQLite `brain.db`, saved to the state directory on shutdown.

pub mod activity;
pub mod brain;
pub mod config;
pub mod http;
pub mod service;
pub mod tenant_config;
pub mod warm;
