//! Test support: start the real binaries, a fake Telegram Bot API, real Redis and the AWS emulator,
//! a fake Kubernetes API server, and a real nginx in front of the services.

pub mod backends;
pub mod cluster;
pub mod fake_k8s;
pub mod model;
pub mod mountpoint;
pub mod nginx;
pub mod platform;
pub mod telegram;
pub mod ztm;
