//! `grit backup DEST`: a consistent, self-contained copy of the store, safe while a run writes.
//! See `store::backup` for how the snapshot stays consistent.

use crate::report::stdout::outln;
use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::exit::{Outcome, STORE_DAMAGED, UsageError};
use crate::report::summary::human_bytes;
use crate::store::backup::{self, Copied};
use crate::store::{self, Objects, StorePaths};

pub fn backup(db: &Path, dest: &Path, link: bool) -> anyhow::Result<Outcome> {
    let (paths, source) = store::open_read(db)?;
    let not_empty = std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some());
    if not_empty || (dest.exists() && !dest.is_dir()) {
        return Err(UsageError(format!(
            "{} exists and is not an empty directory\n  help: back up into a new directory",
            dest.display()
        ))
        .into());
    }
    let target = StorePaths::new(dest);
    backup::copy_database(&source, &target)?;
    drop(source);
    let copy = rusqlite::Connection::open(&target.database)?;
    // The online backup copies pages as they are: a damaged database makes a damaged backup,
    // which must not be reported as a good one.
    backup::check_database(&copy, &target.database)?;
    let objects = backup::referenced(&copy)?;
    drop(copy);
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
    let (from, to) = (
        Objects::new(paths.objects.clone()),
        Objects::new(target.objects.clone()),
    );
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
