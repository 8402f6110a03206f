//! Exit codes (0 ok, 1 a task failed, 2 usage or manifest error, 3 store locked) and the mapping
//! from errors to them.

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

pub fn exit_code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return match store {
                StoreError::Locked { .. } => 3,
                StoreError::Missing(_)
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
