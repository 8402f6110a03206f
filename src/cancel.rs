//! Stopping a run from outside: a [`CancelToken`] the caller keeps a clone of and cancels (the CLI
//! on SIGINT/SIGTERM, a server on a cancel request). The engine then kills the running tasks,
//! publishes nothing of them, puts them back to pending and records the run as interrupted, so
//! the next run resumes where this one stopped.
//!
//! Built on `tokio::sync::watch` (already a dependency) rather than `tokio-util`'s token, since
//! the engine also needs to know *why* it was cancelled: the summary names the signal, and the CLI
//! exits 128 + that signal.

use std::sync::Arc;

use tokio::sync::watch;

/// Why a run was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The process received this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// A client asked for it (no signal involved).
    Requested,
}

impl CancelReason {
    /// The signal behind the cancellation, if there was one.
    pub fn signal(self) -> Option<i32> {
        match self {
            CancelReason::Signal(signal) => Some(signal),
            CancelReason::Requested => None,
        }
    }
}

/// A clonable handle that cancels a run; every clone sees the first cancellation.
#[derive(Debug, Clone)]
pub struct CancelToken {
    state: Arc<watch::Sender<Option<CancelReason>>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        CancelToken {
            state: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Cancel the run. Only the first reason counts: a second Ctrl-C does not change the story.
    pub fn cancel(&self, reason: CancelReason) {
        self.state.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(reason);
            true
        });
    }

    /// Why the run was cancelled, or `None` while it was not.
    pub fn reason(&self) -> Option<CancelReason> {
        *self.state.borrow()
    }

    /// Resolves when the token is cancelled (at once if it already is).
    pub async fn cancelled(&self) -> CancelReason {
        let mut receiver = self.state.subscribe();
        loop {
            if let Some(reason) = *receiver.borrow_and_update() {
                return reason;
            }
            // `self` holds the sender, so the channel cannot close while we wait.
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_first_reason() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert_eq!(clone.reason(), None);
        let waiter = tokio::spawn({
            let clone = clone.clone();
            async move { clone.cancelled().await }
        });
        token.cancel(CancelReason::Signal(libc::SIGTERM));
        token.cancel(CancelReason::Requested);
        assert_eq!(waiter.await.ok(), Some(CancelReason::Signal(libc::SIGTERM)));
        assert_eq!(clone.reason(), Some(CancelReason::Signal(libc::SIGTERM)));
        assert_eq!(clone.cancelled().await.signal(), Some(libc::SIGTERM));
    }
}
