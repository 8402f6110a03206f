//! `grit export`: write resources as `<name>/<hash>` files (or `<name>` with `--flat`) into a
//! directory or a tar file.
//!
//! Every object is read through a [`VerifiedReader`]: a damaged one stops the export with exit 4.
//! Each file (the tar file too) is written under a temporary name created exclusively and renamed
//! into place only once complete and verified, so a damaged export leaves no file behind.
//! Exported files are ordinary files (0666 under the umask), not the store's read-only objects.
//!
//! The destination may be a shared directory: nothing is written through a symbolic link planted
//! there (see [`DestDir`]). A `--to` directory, a `--tar` file or a `<name>` directory below the
//! destination that is a link is refused with exit 2; a link where an exported file goes is
//! replaced by the file.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use super::select;
use crate::report::escape::printable;
use crate::store::dest_dir::{DestDir, DestError};
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
    let entry = |row: &ResourceRow| {
        if flat {
            PathBuf::from(&row.name)
        } else {
            Path::new(&row.name).join(&row.hash)
        }
    };
    let open = |row: &ResourceRow| {
        let what = format!("resource {}", printable(&row.name));
        VerifiedReader::open(&objects, &row.hash, Some(row.size), &what)
    };
    match (tar, to) {
        (Some(file), _) => write_tar(file, &rows, entry, open)?,
        (None, Some(dir)) => {
            let dir = DestDir::create(dir, None)?;
            for row in &rows {
                copy_out(&mut open(row)?, &dir, &entry(row))?;
            }
        }
        (None, None) => {
            for row in &rows {
                open(row)?;
            }
        }
    }
    eprintln!("exported {} resource(s)", rows.len());
    Ok(Outcome::Success)
}

/// Write the resources into the tar file `file`, under a temporary name renamed over `file` once
/// every member checked out: a tar with a damaged member never looks like a finished export.
fn write_tar(
    file: &Path,
    rows: &[ResourceRow],
    entry: impl Fn(&ResourceRow) -> PathBuf,
    open: impl Fn(&ResourceRow) -> Result<VerifiedReader, ObjectError>,
) -> anyhow::Result<()> {
    let Some(name) = file.file_name() else {
        return Err(UsageError(format!(
            "--tar {}: not a file name\n  help: name the tar file to write, e.g. --tar out.tar",
            file.display()
        ))
        .into());
    };
    let dir = DestDir::open(file.parent().unwrap_or(Path::new("")))?;
    if dir.is_symlink(name) {
        return Err(DestError::Symlink {
            path: file.to_path_buf(),
        }
        .into());
    }
    let mut new = dir.new_file(name, 0o666)?;
    let mut builder = tar::Builder::new(new.file());
    for row in rows {
        let mut reader = open(row)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(row.size);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder
            .append_data(&mut header, entry(row), &mut reader)
            .map_err(|e| damage_or_io(e, file))?;
    }
    builder.into_inner().context("finishing the tar file")?;
    new.commit()?;
    Ok(())
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

/// Copy a verified object out of the store as the ordinary file `entry` under `dir`: mode 0666
/// under the umask (usually 0644), not the store's read-only mode, so exporting again or editing
/// the copy just works. It is written under a temporary name and renamed over the target only once
/// the whole object checked out; renaming replaces rather than writes through an earlier export,
/// which may be read-only or a symlink pointing somewhere else.
fn copy_out(reader: &mut VerifiedReader, dir: &DestDir, entry: &Path) -> anyhow::Result<()> {
    let (dir, name) = dir.parent_of(entry, None)?;
    let mut new = dir.new_file(name, 0o666)?;
    let target = new.path();
    std::io::copy(reader, new.file()).map_err(|e| damage_or_io(e, &target))?;
    new.commit()?;
    Ok(())
}

/// The object damage inside an I/O error, or the error as an I/O error on `path`.
fn damage_or_io(error: std::io::Error, path: &Path) -> StoreError {
    match error.downcast::<ObjectError>() {
        Ok(damage) => StoreError::Object(damage),
        Err(e) => StoreError::io(path, e),
    }
}
