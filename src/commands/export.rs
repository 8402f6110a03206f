//! `grit export`: write resources as `<name>/<hash>` files into a directory or a tar file.
//!
//! Every object is read through a [`VerifiedReader`]: a damaged one stops the export with exit 4,
//! its partial copy is removed (a directory export writes `<hash>.partial` and renames it only
//! once verified), and a tar file being written is deleted rather than left with bad bytes.

use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use crate::store::{self, ObjectError, Objects, StoreError, VerifiedReader, queries};

pub fn export(
    db: &Path,
    names: &[String],
    to: Option<&Path>,
    tar: Option<&Path>,
    all: bool,
) -> anyhow::Result<Outcome> {
    let (paths, conn) = store::open_read(db)?;
    let objects = Objects::new(paths.objects);
    let mut count = 0u64;
    let mut builder = match tar {
        Some(file) => Some(tar::Builder::new(
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
        )),
        None => None,
    };
    let exported = names.iter().try_for_each(|name| {
        queries::resources(&conn, Some(name), all, |row| {
            let entry = Path::new(&row.name).join(&row.hash);
            let what = format!("resource {}", row.name);
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
                (None, Some(dir)) => {
                    let target = dir.join(&entry);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
                    }
                    copy_verified(&mut reader, &target)?;
                }
                (None, None) => {}
            }
            count += 1;
            Ok(())
        })
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
    eprintln!("exported {count} resource(s)");
    Ok(Outcome::Success)
}

/// Copy a verified object to `target` through `<target>.partial`, renamed only once the whole
/// object checked out.
fn copy_verified(reader: &mut VerifiedReader, target: &Path) -> Result<(), StoreError> {
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let copied = std::fs::File::create(&partial)
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
