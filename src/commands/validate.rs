//! `grit validate`: parse and check a manifest, print its warnings and step graph.

use std::path::Path;

use super::exit::Outcome;
use crate::manifest;
use crate::report::stdout;
use crate::store;

/// Checks the manifest at `path`. The store at `db`, when there is one, answers the warning
/// "nothing writes `x`" for names that were ingested, as a run does; validating never creates
/// or changes a store.
pub fn validate(path: &Path, db: &Path) -> anyhow::Result<Outcome> {
    let loaded = manifest::load(path)?;
    let conn = match store::open_read(db) {
        Ok((_, conn)) => Some(conn),
        // No store yet, or one this user cannot read: the manifest alone decides.
        Err(_) => None,
    };
    // The manifest-only "nothing writes `x`" warnings the store answers (an ingested `x`).
    let answered: Vec<manifest::Warning> = match &conn {
        Some(c) => {
            let still = loaded
                .manifest
                .unwritten_inputs(&|pattern| store::queries::has_resource_matching(c, pattern));
            loaded
                .manifest
                .unwritten_inputs(&|_| false)
                .into_iter()
                .filter(|w| !still.contains(w))
                .collect()
        }
        None => Vec::new(),
    };
    for warning in loaded.warnings.iter().filter(|w| !answered.contains(w)) {
        eprintln!(
            "{}:{}:{}: warning: {}",
            path.display(),
            warning.line,
            warning.column,
            warning.message
        );
    }
    if loaded.manifest.dialect != manifest::Dialect::Grit {
        eprintln!(
            "note: {} is read as {}; `grit migrate-manifest {}` prints it in grit's form",
            path.display(),
            loaded.manifest.dialect.describe(),
            path.display()
        );
    }
    for note in several_inputs_notes(&loaded.manifest) {
        eprintln!("{}:{note}", path.display());
    }
    stdout::print(&loaded.manifest.render_graph())?;
    stdout::print(&manifest::params::render(&loaded.manifest))?;
    Ok(Outcome::Success)
}

/// Several `inputs` read like a join, but a map step runs once per input resource: say so, at the
/// step's `inputs`, and point to `gather = true`.
fn several_inputs_notes(manifest: &manifest::Manifest) -> Vec<String> {
    manifest
        .steps
        .iter()
        // Exclusions (`!tmp_*`) narrow a selection; only what selects can read like a join.
        .filter(|step| {
            !step.gather
                && step
                    .inputs
                    .iter()
                    .filter(|i| manifest::exclusion(i).is_none())
                    .count()
                    > 1
        })
        // The ancestors' forms fill in `inputs` themselves.
        .filter(|_| manifest.dialect == manifest::Dialect::Grit)
        .map(|step| {
            let (line, column) = step
                .input_positions
                .first()
                .map_or((step.line, 1), |p| (p.line, p.column));
            let names: Vec<String> = step
                .inputs
                .iter()
                .filter(|i| manifest::exclusion(i).is_none())
                .map(|i| format!("`{i}`"))
                .collect();
            format!(
                "{line}:{column}: note: step `{}` has several inputs ({}): it runs once per input resource, with that one file in $INPUT_FILE, not once with all of them\n  help: for a join over all of them, set gather = true (the task then sees every input in $INPUT_DIR)",
                step.name,
                names.join(", ")
            )
        })
        .collect()
}
