//! ZeroClaw as a child process: SIGTERM/SIGINT to the launcher are forwarded to it, and it gets
//! a bounded time to exit before it is killed, so the save after it still fits the grace period.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How the child ended.
#[derive(Debug)]
pub enum Outcome {
    /// The launcher was asked to stop (`signal`) and passed it on; `status` is the child's end
    /// (`killed` when it outlived the stop timeout).
    Stopped {
        signal: &'static str,
        status: ExitStatus,
        killed: bool,
    },
    /// The child ended on its own: the agent is down.
    Died(ExitStatus),
}

/// The launcher's stop signals, installed once at start so that a stop arriving while a warm
/// launcher waits, or before the child starts, is not lost.
pub struct Stops {
    term: Signal,
    int: Signal,
}

impl Stops {
    pub fn install() -> std::io::Result<Self> {
        Ok(Stops {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next stop signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs `command` until it exits or the launcher gets SIGTERM/SIGINT.
pub async fn run(command: Command, stop_timeout: Duration) -> std::io::Result<Outcome> {
    let mut stops = Stops::install()?;
    run_with(command, stop_timeout, &mut stops, std::future::ready(())).await
}

/// [`run`] with the launcher's [`Stops`], polling `started` (the warm launcher's answer to its
/// assignment once ZeroClaw serves) alongside the child until it completes.
pub async fn run_with(
    mut command: Command,
    stop_timeout: Duration,
    stops: &mut Stops,
    started: impl std::future::Future<Output = ()>,
) -> std::io::Result<Outcome> {
    let mut child = command.kill_on_drop(true).spawn()?;
    let mut started = std::pin::pin!(started);
    let mut pending = true;
    let name = loop {
        tokio::select! {
            status = child.wait() => return Ok(Outcome::Died(status?)),
            name = stops.recv() => break name,
            () = &mut started, if pending => pending = false,
        }
    };
    let signo = if name == "SIGTERM" {
        libc::SIGTERM
    } else {
        libc::SIGINT
    };
    tracing::info!(signal = name, "stop requested, passing it on to zeroclaw");
    forward(&child, signo);
    let (status, killed) = match tokio::time::timeout(stop_timeout, child.wait()).await {
        Ok(status) => (status?, false),
        Err(_) => {
            tracing::warn!(
                timeout_ms = stop_timeout.as_millis() as u64,
                "zeroclaw did not exit in time, killing it"
            );
            child.start_kill()?;
            (child.wait().await?, true)
        }
    };
    Ok(Outcome::Stopped {
        signal: name,
        status,
        killed,
    })
}

fn forward(child: &Child, signo: i32) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(pid, signo);
        }
    }
}
