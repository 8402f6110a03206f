//! `grit backup`: a consistent copy of a store, safe to take while a run writes.
//!
//! The database is copied first with SQLite's online backup API in a single step, which reads
//! one snapshot; a run committing meanwhile is simply not in the copy. Then every object that
//! snapshot refers to is copied (or hard-linked, when asked and on the same filesystem). Objects
//! are immutable and only ever added before the commit that refers to them, so each one the
//! snapshot needs exists. Every object is verified on the way: a backup never carries bad bytes.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use super::access::Sharing;
use super::objects::{ObjectError, Objects, VerifiedReader, create_store_dirs};
use super::{StoreError, StorePaths};

/// What a backup copied.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Copied {
    pub objects: u64,
    pub linked: u64,
    pub bytes: u64,
    /// Objects the snapshot refers to that were missing or damaged in the source: not copied.
    pub damaged: Vec<String>,
}

/// Copy the database of `source` into `dest` (a new store directory) as one snapshot.
pub fn copy_database(source: &Connection, dest: &StorePaths) -> Result<(), StoreError> {
    create_store_dirs(&dest.objects).map_err(|e| StoreError::io(&dest.objects, e))?;
    // A backup is a private store: SQLite gives the -wal and -shm files the database's mode.
    super::access::create_file(&dest.database, Sharing::Private.file_mode())
        .map_err(|e| StoreError::io(&dest.database, e))?;
    let mut target = Connection::open(&dest.database)?;
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

/// Copy (or hard-link, with `link`) one verified object from `from` to `to`.
pub fn copy_object(
    from: &Objects,
    to: &Objects,
    hash: &str,
    size: Option<u64>,
    link: bool,
    copied: &mut Copied,
) -> Result<(), StoreError> {
    let target = to.path(hash);
    if let Some(parent) = target.parent() {
        create_store_dirs(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    let what = "an object of the backup";
    let result = if link {
        // Verify, then link: a link shares the file, so it is only as good as the source.
        VerifiedReader::open(from, hash, size, what)
            .and_then(VerifiedReader::verify)
            .and_then(|()| match fs::hard_link(from.path(hash), &target) {
                Ok(()) => {
                    copied.linked += 1;
                    Ok(())
                }
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    stream_copy(from, hash, size, &target)
                }
                Err(source) => Err(ObjectError::Io {
                    what: what.into(),
                    hash: hash.into(),
                    path: target.clone(),
                    source,
                }),
            })
    } else {
        stream_copy(from, hash, size, &target)
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

/// Copy through a verified reader into `<target>.partial`, then rename.
fn stream_copy(
    from: &Objects,
    hash: &str,
    size: Option<u64>,
    target: &Path,
) -> Result<(), ObjectError> {
    let mut reader = VerifiedReader::open(from, hash, size, "an object of the backup")?;
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    let written = File::create(&partial)
        .and_then(|mut file| {
            io::copy(&mut reader, &mut file)?;
            file.set_permissions(Permissions::from_mode(Sharing::Private.object_mode()))?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&partial, target));
    written.map_err(|e| {
        let _ = fs::remove_file(&partial);
        match e.downcast::<ObjectError>() {
            Ok(damage) => damage,
            Err(source) => ObjectError::Io {
                what: "an object of the backup".into(),
                hash: hash.into(),
                path: target.to_path_buf(),
                source,
            },
        }
    })
}
