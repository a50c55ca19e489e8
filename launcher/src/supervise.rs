//! ZeroClaw as a child process: SIGTERM/SIGINT to the launcher are forwarded to it, and it gets
//! a bounded time to exit before it is killed, so the save after it still fits the grace period.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

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

/// Runs `command` until it exits or the launcher gets SIGTERM/SIGINT. The signal handlers are
/// installed before the child starts, so a stop that arrives early is not lost.
pub async fn run(mut command: Command, stop_timeout: Duration) -> std::io::Result<Outcome> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut child = command.kill_on_drop(true).spawn()?;
    let (name, signo) = tokio::select! {
        status = child.wait() => return Ok(Outcome::Died(status?)),
        _ = term.recv() => ("SIGTERM", libc::SIGTERM),
        _ = int.recv() => ("SIGINT", libc::SIGINT),
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
