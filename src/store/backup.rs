//! `grit backup`: a consistent copy of a store, safe to take while a run writes.
//!
//! The database is copied first with SQLite's online backup API in a single step, which reads
//! one snapshot; a run committing meanwhile is simply not in the copy. Then every object that
//! snapshot refers to is copied (or hard-linked, when asked and on the same filesystem). Objects
//! are immutable and only ever added before the commit that refers to them, so each one the
//! snapshot needs exists. Every object is verified on the way: a backup never carries bad bytes.
//!
//! The destination may sit in a directory other users can write to. SQLite opens files by path,
//! so the database is copied into a private temporary directory first and then, like every
//! object, written into the destination through a [`DestDir`], never through a planted link.

use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use super::StoreError;
use super::access::Sharing;
use super::dest_dir::DestDir;
use super::objects::{ObjectError, Objects, VerifiedReader};

/// What a backup copied.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Copied {
    pub objects: u64,
    pub linked: u64,
    pub bytes: u64,
    /// Objects the snapshot refers to that were missing or damaged in the source: not copied.
    pub damaged: Vec<String>,
}

/// Copy the database of `source` into the new file `database` as one snapshot. `database` is
/// opened by path, as SQLite does: it belongs in a private directory (a backup writes it into
/// one of its own, then [installs](install_database) it into the destination).
pub fn copy_database(source: &Connection, database: &Path) -> Result<(), StoreError> {
    // A backup is a private store: SQLite gives the -wal and -shm files the database's mode.
    super::access::create_file(database, Sharing::Private.file_mode())
        .map_err(|e| StoreError::io(database, e))?;
    let mut target = Connection::open(database)?;
    {
        let backup = Backup::new(source, &mut target)?;
        // All pages in one step: one read transaction, one consistent snapshot.
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                // Busy or locked by a writer: try again shortly.
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    // The copy keeps WAL mode from the source's header; leave it as one self-contained file.
    super::writer::checkpoint(&target);
    Ok(())
}

/// Copy the finished database file `copy` (no connection open on it) into the destination
/// directory `dest` as `name`, readable by its owner only. It is written under a temporary name
/// and renamed into place, through `dest`'s descriptor: never through a planted link.
pub fn install_database(copy: &Path, dest: &DestDir, name: &OsStr) -> Result<(), StoreError> {
    let mode = Sharing::Private.file_mode();
    let mut new = dest.new_file(name, mode)?;
    let path = new.path();
    let written = File::open(copy)
        .and_then(|mut from| io::copy(&mut from, new.file()))
        .and_then(|_| new.file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| new.file().sync_all());
    written.map_err(|e| StoreError::io(&path, e))?;
    new.commit()?;
    Ok(())
}

/// `PRAGMA quick_check` of a copied database: an error naming the first problems unless it is
/// intact.
pub fn check_database(copy: &Connection, path: &Path) -> Result<(), StoreError> {
    let damaged = |problem: String| StoreError::DatabaseDamaged {
        path: path.to_path_buf(),
        problem,
    };
    let lines: Vec<String> = match copy.prepare("PRAGMA quick_check").and_then(|mut stmt| {
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
    }) {
        Ok(lines) => lines,
        Err(e) => return Err(damaged(e.to_string())),
    };
    if lines.iter().all(|l| l == "ok") {
        return Ok(());
    }
    Err(damaged(
        lines.into_iter().take(3).collect::<Vec<_>>().join("; "),
    ))
}

/// Every object the (copied) database refers to, with its size when recorded, in hash order.
pub fn referenced(conn: &Connection) -> Result<Vec<(String, Option<u64>)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT hash, MAX(size) FROM resources GROUP BY hash
         UNION SELECT log_hash, NULL FROM tasks
           WHERE log_hash IS NOT NULL AND log_hash NOT IN (SELECT hash FROM resources)
         ORDER BY 1",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hash, size) = row?;
        out.push((hash, size.map(|s| s as u64)));
    }
    Ok(out)
}

/// Copy (or hard-link, with `link`) one verified object from `from` into the backup's objects
/// directory `to`.
pub fn copy_object(
    from: &Objects,
    to: &DestDir,
    hash: &str,
    size: Option<u64>,
    link: bool,
    copied: &mut Copied,
) -> Result<(), StoreError> {
    let relative = Objects::relative(hash);
    let (dir, name) = to.parent_of(&relative, Some(Sharing::Private.dir_mode()))?;
    let result = if link {
        // Verify, then link: a link shares the file, so it is only as good as the source.
        VerifiedReader::open(from, hash, size, WHAT)
            .and_then(VerifiedReader::verify)
            .and_then(|()| match dir.link(&from.path(hash), name) {
                Ok(()) => {
                    copied.linked += 1;
                    Ok(())
                }
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    stream_copy(from, hash, size, &dir, name)
                }
                Err(source) => Err(ObjectError::Io {
                    what: WHAT.into(),
                    hash: hash.into(),
                    path: dir.path().join(name),
                    source,
                }),
            })
    } else {
        stream_copy(from, hash, size, &dir, name)
    };
    match result {
        Ok(()) => {
            copied.objects += 1;
            copied.bytes += size.unwrap_or(0);
            Ok(())
        }
        Err(e) if e.is_damage() => {
            copied.damaged.push(hash.to_string());
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// What the errors of [`copy_object`] call the object.
const WHAT: &str = "an object of the backup";

/// Copy through a verified reader into a temporary file in `dir`, then rename it to `name`.
fn stream_copy(
    from: &Objects,
    hash: &str,
    size: Option<u64>,
    dir: &DestDir,
    name: &OsStr,
) -> Result<(), ObjectError> {
    let mut reader = VerifiedReader::open(from, hash, size, WHAT)?;
    let io_error = |source| ObjectError::Io {
        what: WHAT.into(),
        hash: hash.into(),
        path: dir.path().join(name),
        source,
    };
    let mut new = dir
        .new_file(name, Sharing::Private.file_mode())
        .map_err(|e| io_error(e.into_source()))?;
    let written = io::copy(&mut reader, new.file())
        .and_then(|_| {
            new.file()
                .set_permissions(Permissions::from_mode(Sharing::Private.object_mode()))
        })
        .and_then(|()| new.file().sync_all());
    written.map_err(|e| match e.downcast::<ObjectError>() {
        Ok(damage) => damage,
        Err(source) => io_error(source),
    })?;
    new.commit().map_err(|e| io_error(e.into_source()))
}
