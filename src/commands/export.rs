//! `grit export`: write resources as `<name>/<hash>` files (or `<name>` with `--flat`) into a
//! directory or a tar file.
//!
//! Every object is read through a [`VerifiedReader`]: a damaged one stops the export with exit 4,
//! its partial copy is removed (a directory export writes `<name>.partial` and renames it only
//! once verified), and a tar file being written is deleted rather than left with bad bytes.
//! Exported files are ordinary files (0666 under the umask), not the store's read-only objects.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use super::select;
use crate::report::escape::printable;
use crate::store::queries::ResourceRow;
use crate::store::{self, ObjectError, Objects, StoreError, VerifiedReader};

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
    let exported = rows.iter().try_for_each(|row| -> Result<(), StoreError> {
        let entry = if flat {
            PathBuf::from(&row.name)
        } else {
            Path::new(&row.name).join(&row.hash)
        };
        let what = format!("resource {}", printable(&row.name));
        let mut reader = VerifiedReader::open(&objects, &row.hash, Some(row.size), &what)?;
        match (&mut builder, to) {
            (Some(builder), _) => {
                let mut header = tar::Header::new_gnu();
                header.set_size(row.size);
                header.set_mode(0o644);
                header.set_mtime(0);
                let target = tar.unwrap_or(Path::new("tar"));
                builder
                    .append_data(&mut header, &entry, &mut reader)
                    .map_err(|e| damage_or_io(e, target))?;
            }
            (None, Some(dir)) => copy_out(&mut reader, &dir.join(&entry))?,
            (None, None) => {}
        }
        Ok(())
    });
    if let Err(e) = exported {
        if let Some(file) = tar {
            // A tar with a damaged member must not look like a finished export.
            drop(builder);
            let _ = std::fs::remove_file(file);
        }
        return Err(e.into());
    }
    if let Some(builder) = builder {
        builder.into_inner().context("finishing the tar file")?;
    }
    eprintln!("exported {} resource(s)", rows.len());
    Ok(Outcome::Success)
}

/// `--flat` writes one file per name, so two live resources of one name cannot both be exported.
fn refuse_name_clashes(rows: &[ResourceRow]) -> Result<(), UsageError> {
    let mut clashes: Vec<_> = rows
        .windows(2)
        .filter(|pair| pair[0].name == pair[1].name)
        .map(|pair| printable(&pair[0].name))
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

/// Copy a verified object out of the store as an ordinary file: mode 0666 under the umask
/// (usually 0644), not the store's read-only mode, so exporting again or editing the copy just
/// works. It goes through `<target>.partial`, renamed over the target only once the whole object
/// checked out; renaming replaces rather than writes through an earlier export, which may be
/// read-only or a symlink pointing somewhere else.
fn copy_out(reader: &mut VerifiedReader, target: &Path) -> Result<(), StoreError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let copied = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .and_then(|mut file| std::io::copy(reader, &mut file).map(|_| ()))
        .and_then(|()| std::fs::rename(&partial, target));
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        damage_or_io(e, target)
    })
}

/// The object damage inside an I/O error, or the error as an I/O error on `path`.
fn damage_or_io(error: std::io::Error, path: &Path) -> StoreError {
    match error.downcast::<ObjectError>() {
        Ok(damage) => StoreError::Object(damage),
        Err(e) => StoreError::io(path, e),
    }
}
