//! Exit codes and the mapping from errors to them: 0 ok, 1 a task failed, 2 usage or manifest
//! error (also a directory refused as a grit store), 3 store locked, 4 store damaged (an object is
//! missing or corrupt, or `grit verify` found problems).

use crate::manifest::ManifestError;
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
            return match store {
                StoreError::Sqlite(e) if database_damaged(e) => STORE_DAMAGED,
                StoreError::Locked { .. } => 3,
                StoreError::Missing(_)
                | StoreError::NotAStore { .. }
                | StoreError::NotFound(_)
                | StoreError::SchemaTooNew { .. } => 2,
                _ => 1,
            };
        }
        if cause.is::<ManifestError>() || cause.is::<UsageError>() {
            return 2;
        }
    }
    1
}

/// SQLite found the database file damaged (as opposed to busy, full, or a bad query).
fn database_damaged(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}
