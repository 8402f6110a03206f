//! `grit ingest`: add existing files as facts, so that a pipeline can start from them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use crate::capture::invalid_name_reason;
use crate::store::objects::hash_file;
use crate::store::publish::{self, OutputRecord};
use crate::store::{self, Objects};

/// Ingest `files` as `name`. Unless `keep_both`, they replace whatever live fact had that name.
pub fn ingest(
    db: &Path,
    name: &str,
    files: &[PathBuf],
    keep_both: bool,
) -> anyhow::Result<Outcome> {
    if let Some(reason) = invalid_name_reason(name) {
        return Err(UsageError(format!("--name {name}: {reason}")).into());
    }
    let (paths, _lock, writer) = store::open_for_write(db)?;
    let objects = Objects::new(paths.objects.clone());
    let ingestion = writer.call_blocking(move |conn| publish::Ingestion::begin(conn, keep_both))?;
    let (mut new, mut total, mut superseded) = (0, 0, 0);
    for file in files {
        // Copy into staging first: the store must own its bytes, and the user's file stays theirs.
        let staged = paths.tmp.join(format!("ingest-{}", std::process::id()));
        std::fs::copy(file, &staged).with_context(|| format!("reading {}", file.display()))?;
        let (hash, size) =
            hash_file(&staged).with_context(|| format!("hashing {}", file.display()))?;
        objects
            .adopt(&staged, &hash)
            .with_context(|| format!("storing {}", file.display()))?;
        let record = OutputRecord {
            name: name.to_string(),
            hash: hash.clone(),
            size,
        };
        let ingested =
            writer.call_blocking(move |conn| publish::ingest(conn, &record, ingestion))?;
        if ingested.new {
            new += 1;
        }
        superseded += ingested.superseded;
        total += 1;
        println!("{hash}  {name}  {}", file.display());
    }
    eprintln!("ingested {total} file(s) as '{name}' ({new} new)");
    if superseded > 0 {
        eprintln!(
            "  {superseded} earlier '{name}' no longer live (kept as history until `grit gc`; --keep-both keeps both)"
        );
    }
    Ok(Outcome::Success)
}
