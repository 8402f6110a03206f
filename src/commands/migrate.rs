//! `grit migrate-manifest`: prints a manifest written in task-pipeline's forms in grit's own,
//! so that its users can move over for good (see `manifest::Dialect`).

use std::path::Path;

use super::exit::{Outcome, UsageError};
use crate::manifest::{self, Dialect};
use crate::report::stdout;

pub fn migrate_manifest(path: &Path, start: Option<&str>) -> anyhow::Result<Outcome> {
    let loaded = manifest::load_starting_at(path, start)?;
    let manifest = loaded.manifest;
    match manifest.in_grit_form() {
        None => {
            eprintln!(
                "note: {} is already in grit's form; printing it unchanged",
                path.display()
            );
            stdout::print(&manifest.text)?;
        }
        Some(Ok(text)) => {
            let from = match &manifest.dialect {
                Dialect::TaskPipeline { start } => {
                    format!("task-pipeline's [[step]] tables routed by file name from `{start}`")
                }
                _ => manifest.dialect.describe().to_string(),
            };
            eprintln!(
                "note: rewrote {} from {from}: each step now names its `inputs`",
                path.display()
            );
            stdout::print(&text)?;
        }
        Some(Err(message)) => {
            return Err(UsageError(format!("{}: {message}", path.display())).into());
        }
    }
    Ok(Outcome::Success)
}
