//! `grit export`: write resources as `<name>/<hash>` files into a directory or a tar file.

use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use crate::store::{self, Objects, StoreError, queries};

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
    for name in names {
        queries::resources(&conn, Some(name), all, |row| {
            let source = objects.path(&row.hash);
            let entry = Path::new(&row.name).join(&row.hash);
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
                (None, Some(dir)) => {
                    let target = dir.join(&entry);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
                    }
                    std::fs::copy(&source, &target).map_err(|e| StoreError::io(&target, e))?;
                }
                (None, None) => {}
            }
            count += 1;
            Ok(())
        })?;
    }
    if let Some(builder) = builder {
        builder.into_inner().context("finishing the tar file")?;
    }
    eprintln!("exported {count} resource(s)");
    Ok(Outcome::Success)
}
