//! `grit gc`, `grit delete` and `grit prune`: remove history and report the bytes freed.

use std::path::Path;

use super::exit::Outcome;
use crate::report::stdout;
use crate::report::summary::human_bytes;
use crate::store::gc::Removed;
use crate::store::{self, Objects, queries};

fn report(what: &str, removed: &Removed) -> anyhow::Result<()> {
    let verb = if removed.dry_run {
        "would remove"
    } else {
        "removed"
    };
    stdout::println(&format!(
        "{what}: {verb} {} resource(s), {} task(s), {} object(s); {} freed",
        removed.resources,
        removed.tasks,
        removed.objects,
        human_bytes(removed.bytes_freed)
    ))?;
    if removed.rerun > 0 {
        stdout::println(&format!(
            "  {} task(s) {} again at the next run, to make what they produced anew",
            removed.rerun,
            if removed.dry_run {
                "would run"
            } else {
                "will run"
            }
        ))?;
    }
    Ok(())
}

pub fn gc(db: &Path, dry_run: bool) -> anyhow::Result<Outcome> {
    let (paths, _lock, writer) = store::open_for_write(db)?;
    let objects = Objects::new(paths.objects);
    let removed = writer.call_blocking(move |conn| store::gc::gc(conn, &objects, dry_run))?;
    report("gc", &removed)?;
    Ok(Outcome::Success)
}

pub fn delete(
    db: &Path,
    hash: Option<&str>,
    name: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    let hash = match hash {
        Some(prefix) => {
            let (_, conn) = store::open_read(db)?;
            Some(queries::resolve_hash(&conn, prefix)?)
        }
        None => None,
    };
    let name = name.map(str::to_string);
    let (paths, _lock, writer) = store::open_for_write(db)?;
    let objects = Objects::new(paths.objects);
    let removed = writer.call_blocking(move |conn| {
        store::gc::delete(conn, &objects, hash.as_deref(), name.as_deref(), dry_run)
    })?;
    report("delete", &removed)?;
    Ok(Outcome::Success)
}

pub fn prune(db: &Path, keep: u64, name: Option<&str>, dry_run: bool) -> anyhow::Result<Outcome> {
    let (paths, _lock, writer) = store::open_for_write(db)?;
    let objects = Objects::new(paths.objects);
    let name = name.map(str::to_string);
    let removed = writer.call_blocking(move |conn| {
        store::gc::prune(conn, &objects, keep, name.as_deref(), dry_run)
    })?;
    report("prune", &removed)?;
    Ok(Outcome::Success)
}
