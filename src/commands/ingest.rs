//! `grit ingest`: add existing files as facts, so that a pipeline can start from them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use crate::capture::invalid_name_reason;
use crate::report::escape::printable;
use crate::report::stdout;
use crate::store::objects::hash_file;
use crate::store::publish::{self, OutputRecord};
use crate::store::{self, Objects};

/// Ingest `files`, each as `name` or as its own file name. Unless `keep_both`, they replace
/// whatever live fact had that name; files added in one command stay live together.
pub fn ingest(
    db: &Path,
    group: Option<&str>,
    name: Option<&str>,
    files: &[PathBuf],
    keep_both: bool,
) -> anyhow::Result<Outcome> {
    // Every name is checked before the store is touched, so a bad one ingests nothing.
    let names = resource_names(name, files)?;
    let group = super::store_group(group)?;
    let (paths, _lock, writer) = store::open_for_write_shared(db, group.as_ref())?;
    let objects = Objects::new(paths.objects.clone());
    let ingestion = writer.call_blocking(move |conn| publish::Ingestion::begin(conn, keep_both))?;
    let (mut new, mut total, mut superseded) = (0, 0, 0);
    for (file, name) in files.iter().zip(names) {
        // Copy into staging first: the store must own its bytes, and the user's file stays theirs.
        let staged = paths.tmp.join(format!("ingest-{}", std::process::id()));
        std::fs::copy(file, &staged).with_context(|| format!("reading {}", file.display()))?;
        let (hash, size) =
            hash_file(&staged).with_context(|| format!("hashing {}", file.display()))?;
        objects
            .adopt(&staged, &hash)
            .with_context(|| format!("storing {}", file.display()))?;
        let record = OutputRecord {
            name: name.clone(),
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
        stdout::println(&format!(
            "{hash}  {}  {}",
            printable(&name),
            printable(&file.display().to_string())
        ))?;
    }
    match name {
        Some(name) => eprintln!("ingested {total} file(s) as '{name}' ({new} new)"),
        None => eprintln!("ingested {total} file(s) ({new} new)"),
    }
    if superseded > 0 {
        eprintln!(
            "  {superseded} earlier {} no longer live (kept as history until `grit gc`; --keep-both keeps both)",
            name.map(|n| format!("'{n}'"))
                .unwrap_or_else(|| "resource(s) of these names".into())
        );
    }
    Ok(Outcome::Success)
}

/// The resource name of each file: `--name` for one file, else each file's own name
/// (`data/a.txt` becomes `a.txt`), as `cp` and `tar` name what they copy.
fn resource_names(name: Option<&str>, files: &[PathBuf]) -> Result<Vec<String>, UsageError> {
    if let Some(name) = name {
        if files.len() > 1 {
            return Err(UsageError(format!(
                "--name {name} names one file, but {} were given\n  help: leave out --name to name each file after itself, or ingest one file at a time",
                files.len()
            )));
        }
        if let Some(reason) = invalid_name_reason(name) {
            return Err(UsageError(format!("--name {name}: {reason}")));
        }
        return Ok(vec![name.to_string()]);
    }
    files
        .iter()
        .map(|file| {
            let own = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                UsageError(format!(
                    "{} has no usable file name\n  help: give it one with --name",
                    file.display()
                ))
            })?;
            match invalid_name_reason(own) {
                Some(reason) => Err(UsageError(format!(
                    "{}: {reason}\n  help: give it another name with --name",
                    file.display()
                ))),
                None => Ok(own.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_after_themselves_unless_one_is_renamed() {
        let files = [PathBuf::from("data/a.txt"), PathBuf::from("/x/b.csv")];
        assert_eq!(resource_names(None, &files).unwrap(), ["a.txt", "b.csv"]);
        assert_eq!(resource_names(Some("url"), &files[..1]).unwrap(), ["url"]);
        assert!(resource_names(Some("url"), &files).is_err());
        assert!(resource_names(None, &[PathBuf::from("data/.hidden")]).is_err());
        assert!(resource_names(None, &[PathBuf::from("/")]).is_err());
    }
}
