//! `stand-in-model [PORT]`: the tests' OpenAI-compatible stand-in model server on 127.0.0.1, for
//! `make run-zeroclaw` without a real model. It answers every chat with what it was told.

use platform_tests::model::StandInModel;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 8091,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: stand-in-model [PORT]");
            std::process::exit(2);
        }
    };
    let model = StandInModel::start_on(port).await?;
    eprintln!(
        "stand-in-model: OpenAI-compatible API at {}",
        model.base_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
