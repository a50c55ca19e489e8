//! `ztm` entry point: parse, pick the transport, run, print; exit 0 ok, 1 failed, 2 usage.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ztm::cli::{Cli, Command, Shell};
use ztm::commands;
use ztm::error::ZtmError;
use ztm::output::colour_wanted;
use ztm::transport::{Selected, Transport};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        let shell = match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        };
        clap_complete::generate(shell, &mut Cli::command(), "ztm", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let format = cli.global.output;
    let no_color = cli.global.no_color;
    let colour = !no_color && colour_wanted();
    let result = runtime.block_on(async {
        let transport = Selected::new(&cli.global);
        let work = async {
            match cli.command {
                Command::Migrate(m) => ztm::migrate::run(m, &transport, &cli.global).await,
                other => commands::run_as(other, &transport, format).await,
            }
        };
        let result = tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err(ZtmError::Interrupted),
        };
        transport.close().await;
        result
    });
    match result {
        Ok(run) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(run.outcome.render(format, colour).as_bytes());
            let _ = out.flush();
            match run.problem {
                None => ExitCode::SUCCESS,
                Some(p) => fail(&p, 1, !no_color),
            }
        }
        Err(e) => fail(&e.to_string(), e.exit_code(), !no_color),
    }
}

/// One line on stderr, `error: ...` (red on a terminal).
fn fail(message: &str, code: i32, colour_allowed: bool) -> ExitCode {
    let line = message.replace('\n', " ");
    let colour = colour_allowed
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if colour {
        eprintln!("\x1b[31merror:\x1b[0m {line}");
    } else {
        eprintln!("error: {line}");
    }
    ExitCode::from(code as u8)
}
