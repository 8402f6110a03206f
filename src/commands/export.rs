//! `grit export`: write resources as `<name>/<hash>` files (or `<name>` with `--flat`) into a
//! directory or a tar file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use super::select;
use crate::store::queries::ResourceRow;
use crate::store::{self, Objects, StoreError};

pub fn export(
    db: &Path,
    names: &[String],
    to: Option<&Path>,
    tar: Option<&Path>,
    all: bool,
    flat: bool,
) -> anyhow::Result<Outcome> {
    let (paths, conn) = store::open_read(db)?;
    let objects = Objects::new(paths.objects);
    let rows = select::all_of(&conn, names, all)?;
    if flat {
        refuse_name_clashes(&rows)?;
    }
    let mut builder = match tar {
        Some(file) => Some(tar::Builder::new(
            std::fs::File::create(file).map_err(|e| StoreError::io(file, e))?,
        )),
        None => None,
    };
    for row in &rows {
        let source = objects.path(&row.hash);
        let entry = if flat {
            PathBuf::from(&row.name)
        } else {
            Path::new(&row.name).join(&row.hash)
        };
        let io = |e| StoreError::io(&source, e);
        match (&mut builder, to) {
            (Some(builder), _) => {
                let mut file = std::fs::File::open(&source).map_err(io)?;
                let mut header = tar::Header::new_gnu();
                header.set_size(row.size);
                header.set_mode(0o644);
                header.set_mtime(0);
                builder
                    .append_data(&mut header, &entry, &mut file)
                    .map_err(io)?;
            }
            (None, Some(dir)) => copy_out(&source, &dir.join(&entry))?,
            (None, None) => {}
        }
    }
    if let Some(builder) = builder {
        builder.into_inner().context("finishing the tar file")?;
    }
    eprintln!("exported {} resource(s)", rows.len());
    Ok(Outcome::Success)
}

/// `--flat` writes one file per name, so two live resources of one name cannot both be exported.
fn refuse_name_clashes(rows: &[ResourceRow]) -> Result<(), UsageError> {
    let mut clashes: Vec<&str> = rows
        .windows(2)
        .filter(|pair| pair[0].name == pair[1].name)
        .map(|pair| pair[0].name.as_str())
        .collect();
    clashes.dedup();
    if clashes.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "--flat writes one file per name, but several live resources are named {}\n  help: export without --flat (as <name>/<hash>), or `grit delete --hash` the one you do not want",
        clashes.join(", ")
    )))
}

/// Copy an object out of the store as an ordinary file: mode 0666 under the umask (usually 0644),
/// not the store's read-only mode, so exporting again or editing the copy just works.
fn copy_out(source: &Path, target: &Path) -> Result<(), StoreError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    let mut input = std::fs::File::open(source).map_err(|e| StoreError::io(source, e))?;
    // Replace rather than write through: the old file may be read-only (an export by an earlier
    // grit) or a symlink pointing somewhere else.
    match std::fs::remove_file(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(target, e)),
    }
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| StoreError::io(target, e))?;
    std::io::copy(&mut input, &mut output)
        .and_then(|_| output.flush())
        .map_err(|e| StoreError::io(target, e))?;
    Ok(())
}
