//! Exit codes and the mapping from errors to them:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | ok (also when stdout's reader went away, as in `grit status \| head -1`) |
//! | 1 | a task failed |
//! | 2 | usage or manifest error; a directory that is not a grit store, or a newer schema |
//! | 3 | the store is locked by another run |
//! | 4 | the store is damaged: an object is corrupt or missing |
//! | 5 | environment error: the store or a file cannot be opened or written (permissions, I/O, disk full) |
//! | 130, 143 | interrupted by SIGINT, SIGTERM |

use crate::manifest::ManifestError;
use crate::store::StoreError;

/// How a command that did not error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    TaskFailed,
    /// A specific code, e.g. 130/143 after SIGINT/SIGTERM.
    Code(u8),
}

/// A mistake in what the user asked for: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Usage or manifest error.
pub const USAGE: u8 = 2;
/// The store is locked.
pub const LOCKED: u8 = 3;
/// The store or a file cannot be opened or written.
pub const ENVIRONMENT: u8 = 5;

pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            match store {
                StoreError::Locked { .. } => return LOCKED,
                StoreError::Missing(_)
                | StoreError::NotFound(_)
                | StoreError::SchemaTooNew { .. } => return USAGE,
                StoreError::Io { .. } => return ENVIRONMENT,
                StoreError::Sqlite(e) if sqlite_environment_error(e) => return ENVIRONMENT,
                // The chain may go on to a cause that says more.
                _ => {}
            }
        }
        if cause.is::<ManifestError>() || cause.is::<UsageError>() {
            return USAGE;
        }
        // A file grit itself reads or writes (not a task's: those are task failures).
        if cause.is::<std::io::Error>() {
            return ENVIRONMENT;
        }
    }
    1
}

/// SQLite errors that come from the machine, not from grit: the database file cannot be opened,
/// is read-only, the disk is full or the I/O failed.
fn sqlite_environment_error(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{
        CannotOpen, DiskFull, NoLargeFileSupport, PermissionDenied, ReadOnly, SystemIoFailure,
    };
    matches!(
        error.sqlite_error_code(),
        Some(
            CannotOpen
                | DiskFull
                | NoLargeFileSupport
                | PermissionDenied
                | ReadOnly
                | SystemIoFailure
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_errors_are_5_and_usage_errors_2() {
        let io = |kind| anyhow::Error::from(std::io::Error::from(kind));
        assert_eq!(
            exit_code_for(&io(std::io::ErrorKind::PermissionDenied).context("opening x")),
            ENVIRONMENT
        );
        let store = StoreError::io(
            std::path::Path::new("db"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(exit_code_for(&store.into()), ENVIRONMENT);
        let usage = anyhow::Error::from(UsageError("no".into()));
        assert_eq!(exit_code_for(&usage), USAGE);
        let missing = StoreError::Missing("db".into());
        assert_eq!(exit_code_for(&missing.into()), USAGE);
        assert_eq!(exit_code_for(&anyhow::anyhow!("other")), 1);
    }
}
