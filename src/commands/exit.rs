//! Exit codes and the mapping from errors to them:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | ok (also when stdout's reader went away, as in `grit status \| head -1`) |
//! | 1 | a task failed |
//! | 2 | usage or manifest error (also a run parameter that is unknown or lacks a value, a server config error, a token secret file that is too short); a directory that is not a grit store, or a newer schema; an export or backup destination that is a symbolic link |
//! | 3 | the store is locked by another run |
//! | 4 | the store is damaged: an object is corrupt or missing |
//! | 5 | environment error: the store or a file cannot be opened or written (permissions, I/O, disk full) |
//! | 130, 143 | interrupted by SIGINT, SIGTERM |

use crate::engine::EngineError;
use crate::manifest::{ManifestError, ParamError};
use crate::serve::auth::SecretError;
use crate::store::dest_dir::DestError;
use crate::store::{ObjectError, StoreError};

/// Exit code when the store is damaged: an object is missing or corrupt, or `grit verify` found
/// problems.
pub const STORE_DAMAGED: u8 = 4;

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
        // A damaged object can arrive bare, inside a StoreError, or inside an io::Error (through
        // `Read`); io::Error's `source` skips the error it wraps, so it is looked at directly.
        let object = cause
            .downcast_ref::<ObjectError>()
            .or_else(|| match cause.downcast_ref::<StoreError>() {
                Some(StoreError::Object(e)) => Some(e),
                _ => None,
            })
            .or_else(|| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .and_then(ObjectError::in_io)
            });
        if let Some(object) = object {
            return if object.is_damage() { STORE_DAMAGED } else { 1 };
        }
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            match store {
                StoreError::Sqlite(e) if database_damaged(e) => return STORE_DAMAGED,
                StoreError::DatabaseDamaged { .. } => return STORE_DAMAGED,
                StoreError::Locked { .. } => return LOCKED,
                StoreError::Missing(_)
                | StoreError::NotAStore { .. }
                | StoreError::NotFound(_)
                | StoreError::SchemaTooNew { .. } => return USAGE,
                StoreError::Io { .. } => return ENVIRONMENT,
                StoreError::Dest(DestError::Symlink { .. }) => return USAGE,
                StoreError::Dest(DestError::Io { .. }) => return ENVIRONMENT,
                StoreError::Sqlite(e) if sqlite_environment_error(e) => return ENVIRONMENT,
                // The chain may go on to a cause that says more.
                _ => {}
            }
        }
        // SQLite errors that reach here without a StoreError around them (through the writer).
        if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
            if database_damaged(e) {
                return STORE_DAMAGED;
            }
            if sqlite_environment_error(e) {
                return ENVIRONMENT;
            }
        }
        // A token secret too short to be safe is the user's to fix, like a bad config.
        if matches!(cause.downcast_ref(), Some(SecretError::TooShort { .. })) {
            return USAGE;
        }
        // A destination that is a symbolic link: the user names another one.
        if matches!(cause.downcast_ref(), Some(DestError::Symlink { .. })) {
            return USAGE;
        }
        let bad_params = cause.is::<ParamError>()
            || matches!(cause.downcast_ref(), Some(EngineError::Params(_)));
        if cause.is::<ManifestError>() || cause.is::<UsageError>() || bad_params {
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

/// Exit code for a run interrupted by `signal`: 128 + signal, as shells report it.
pub fn interrupted(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// The process's exit status for how a command ended, printing the error (if any) on stderr.
pub fn exit_status(result: anyhow::Result<Outcome>) -> std::process::ExitCode {
    use std::process::ExitCode;
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::TaskFailed) => ExitCode::from(1),
        Ok(Outcome::Code(code)) => ExitCode::from(code),
        // The reader of stdout went away (`grit status | head -1`): it has what it wanted.
        Err(_) if crate::report::stdout::reader_gone() => ExitCode::SUCCESS,
        Err(error) => {
            crate::report::print_error(&error);
            ExitCode::from(exit_code_for(&error))
        }
    }
}

/// SQLite found the database file damaged (as opposed to busy, full, or a bad query).
fn database_damaged(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
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
