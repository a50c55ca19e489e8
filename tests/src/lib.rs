//! Test support: start the real binaries, a fake Telegram Bot API, real Redis and the AWS emulator,
//! and a fake Kubernetes API server.

pub mod backends;
pub mod cluster;
pub mod fake_k8s;
pub mod mountpoint;
pub mod model;
pub mod platform;
pub mod telegram;
