//! `grit validate`: parse and check a manifest, print its warnings and step graph.

use super::exit::Outcome;
use crate::manifest;
use crate::report::stdout;

pub fn validate(path: &std::path::Path) -> anyhow::Result<Outcome> {
    let loaded = manifest::load(path)?;
    for warning in &loaded.warnings {
        eprintln!(
            "{}:{}:{}: warning: {}",
            path.display(),
            warning.line,
            warning.column,
            warning.message
        );
    }
    stdout::print(&loaded.manifest.render_graph())?;
    Ok(Outcome::Success)
}
