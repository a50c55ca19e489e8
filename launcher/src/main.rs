//! `zeroclaw-launcher`: configure ZeroClaw for one tenant, run its gateway, save its memory.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use zeroclaw_launcher::settings::Settings;

#[tokio::main]
async fn main() {
    init_logging();
    let result = match Settings::from_env() {
        Ok(settings) => zeroclaw_launcher::run(&settings).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "zeroclaw-launcher failed");
        std::process::exit(e.exit_code());
    }
}

fn init_logging() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LAUNCHER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A bad value falls back to text here: the agent must start to answer at all.
    if common::config::LogFormat::from_env().unwrap_or_default() == common::config::LogFormat::Json
    {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
