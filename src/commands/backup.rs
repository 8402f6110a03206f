//! `grit backup DEST`: a consistent, self-contained copy of the store, safe while a run writes.
//! See `store::backup` for how the snapshot stays consistent. DEST may sit in a directory other
//! users can write to: a DEST that is a symbolic link is refused (exit 2), and nothing below it is
//! written through a link.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::exit::{Outcome, STORE_DAMAGED, UsageError};
use crate::report::stdout::outln;
use crate::report::summary::human_bytes;
use crate::store::access::Sharing;
use crate::store::backup::{self, Copied};
use crate::store::dest_dir::DestDir;
use crate::store::{self, Objects, StorePaths};

pub fn backup(db: &Path, dest: &Path, link: bool) -> anyhow::Result<Outcome> {
    let (paths, source) = store::open_read(db)?;
    let not_new = || {
        UsageError(format!(
            "{} exists and is not an empty directory\n  help: back up into a new directory",
            dest.display()
        ))
    };
    if std::fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir() && !m.file_type().is_symlink()) {
        return Err(not_new().into());
    }
    // Created (mode 0700) or opened without following a link, which is refused: DEST may sit in
    // a directory other users can write to.
    let dest_dir = DestDir::create(dest, Some(Sharing::Private.dir_mode()))?;
    if !dest_dir.is_empty()? {
        return Err(not_new().into());
    }
    let target = StorePaths::new(dest);
    let (Some(database_name), Some(objects_name)) =
        (target.database.file_name(), target.objects.file_name())
    else {
        anyhow::bail!("internal: the store layout names no database or objects directory");
    };
    // SQLite opens files by path: the snapshot is taken in a private directory of our own.
    let scratch = tempfile::Builder::new()
        .prefix("grit-backup-")
        .tempdir()
        .context("creating a private temporary directory for the database copy")?;
    let copy_path = scratch.path().join(database_name);
    backup::copy_database(&source, &copy_path)?;
    drop(source);
    let copy = rusqlite::Connection::open(&copy_path)?;
    // The online backup copies pages as they are: a damaged database makes a damaged backup,
    // which must not be reported as a good one.
    backup::check_database(&copy, &paths.database)?;
    let objects = backup::referenced(&copy)?;
    drop(copy);
    backup::install_database(&copy_path, &dest_dir, database_name)?;
    drop(scratch);
    let to = dest_dir.dir(objects_name, Some(Sharing::Private.dir_mode()))?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(objects.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("backing up [{bar:30}] {pos}/{len} objects {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let from = Objects::new(paths.objects.clone());
    let mut copied = Copied::default();
    for (hash, size) in &objects {
        backup::copy_object(&from, &to, hash, *size, link, &mut copied)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    outln!(
        "backed up {} to {}: the database and {} object{} ({}, {} hard-linked)",
        db.display(),
        dest.display(),
        copied.objects,
        if copied.objects == 1 { "" } else { "s" },
        human_bytes(copied.bytes),
        copied.linked
    );
    if !copied.damaged.is_empty() {
        eprintln!(
            "error: {} object{} of the store {} missing or damaged and {} not copied: {}\n  help: run `grit verify --repair --db {}`, then back up again",
            copied.damaged.len(),
            if copied.damaged.len() == 1 { "" } else { "s" },
            if copied.damaged.len() == 1 {
                "is"
            } else {
                "are"
            },
            if copied.damaged.len() == 1 {
                "was"
            } else {
                "were"
            },
            copied.damaged.join(", "),
            db.display()
        );
        return Ok(Outcome::Code(STORE_DAMAGED));
    }
    Ok(Outcome::Success)
}
