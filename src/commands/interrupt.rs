//! SIGINT and SIGTERM during `grit run`: the CLI's side of cancellation. The engine installs no
//! signal handlers; while a run is under way, [`cancel_on_signals`] turns the first of these
//! signals into a cancellation of the run's [`CancelToken`], and the run's caller exits 128 + the
//! signal ([`super::exit::interrupted`]).

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use crate::engine::{CancelReason, CancelToken};

/// Stops listening when dropped. Like before the engine gave up its handlers, the process keeps
/// ignoring the default action of these signals afterwards (tokio never restores it), so a late
/// Ctrl-C during the summary does not cut it short.
pub struct InterruptHandler {
    listener: JoinHandle<()>,
}

impl Drop for InterruptHandler {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Cancel `token` on SIGINT or SIGTERM. Must be called inside the tokio runtime that runs the
/// engine; the handlers are installed before this returns, so no signal slips through.
pub fn cancel_on_signals(token: CancelToken) -> anyhow::Result<InterruptHandler> {
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let listener = tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                Some(()) = interrupt.recv() => libc::SIGINT,
                Some(()) = terminate.recv() => libc::SIGTERM,
                else => return,
            };
            token.cancel(CancelReason::Signal(signal));
        }
    });
    Ok(InterruptHandler { listener })
}
