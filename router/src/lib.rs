//! The router: Telegram webhooks into a durable inbox, ordered per-tenant delivery to agents that are
//! woken on demand, a plain HTTP chat channel and webhook administration.

pub mod activity;
pub mod adapters;
pub mod agent;
pub mod api;
pub mod app;
pub mod chat;
pub mod config;
pub mod delivery;
pub mod endpoint;
pub mod known_tenants;
pub mod metrics;
pub mod orchestrator_client;
pub mod reply;
pub mod update;
pub mod webhook_admin;
