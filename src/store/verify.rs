//! Checking a whole store (`grit verify`) and the cheap check a run and `grit status` make.
//!
//! [`check`] looks at the database (SQLite's `integrity_check` and `foreign_key_check`), at every
//! object a row refers to (present, recorded size and SHA-256, no write bits, nothing for others),
//! at the store's directories (nothing for others), and at files under `objects/` that no row
//! refers to. Those are reported as *unreferenced*, not as damage: a crash between an object's
//! rename and its commit leaves one, and `grit gc` removes them.
//!
//! [`missing_live`] only stats the objects of live resources: cheap enough for every run's end and
//! for `grit status`, and it catches deleted files, the most common damage.

use super::access::Sharing;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rusqlite::Connection;

use super::objects::{ObjectError, Objects, VerifiedReader};
use super::{StoreError, StorePaths};

/// An object a live resource needs, found missing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MissingObject {
    pub name: String,
    pub hash: String,
    pub path: PathBuf,
}

/// Live resources whose object file is gone (one `stat` each, no hashing).
pub fn missing_live(
    conn: &Connection,
    objects: &Objects,
) -> Result<Vec<MissingObject>, StoreError> {
    let gone = absent_live_objects(conn, objects)?;
    name_missing(conn, objects, &gone)
}

/// The hashes of live resources (as `conn` sees them) whose object file is gone.
///
/// Every run checks this, so a no-op run over a large store is mostly this: the distinct hashes
/// are read without sorting in SQLite, and the checks are split over the CPUs (each check is a
/// path lookup in the kernel). A run starts it at its beginning, beside its own work, on a
/// connection of its own (see [`name_missing`] for its end).
pub fn absent_live_objects(
    conn: &Connection,
    objects: &Objects,
) -> Result<Vec<String>, StoreError> {
    Ok(absent(objects, live_hashes(conn)?, &AtomicBool::new(false)))
}

/// [`absent_live_objects`] as of one snapshot of the database, with the `dataflow_generation`
/// of that snapshot: at a run's end, the same generation means the same live set. `None` when
/// `stop` was set meanwhile (the run published a task, so its end checks everything anyway).
pub fn absent_live_objects_at(
    conn: &Connection,
    objects: &Objects,
    stop: &AtomicBool,
) -> Result<Option<(i64, Vec<String>)>, StoreError> {
    let began = std::time::Instant::now();
    let snapshot = conn.unchecked_transaction()?;
    let generation = super::read_cache::dataflow_generation(&snapshot)?;
    let hashes = live_hashes(&snapshot)?;
    drop(snapshot);
    let read = began.elapsed();
    let gone = absent(objects, hashes, stop);
    if stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    tracing::trace!(
        target: "grit::timing",
        read_us = read.as_micros() as u64,
        check_us = (began.elapsed() - read).as_micros() as u64,
        "live objects checked"
    );
    Ok(Some((generation, gone)))
}

/// What a run's end reports missing, given what its start found (`early`, from
/// [`absent_live_objects_at`] on a connection of its own): only those again when the live set is
/// the one it saw, and every live resource checked anew when the run changed it.
pub fn missing_live_after(
    conn: &Connection,
    objects: &Objects,
    early: Option<(i64, Vec<String>)>,
) -> Result<Vec<MissingObject>, StoreError> {
    match early {
        Some((generation, gone)) if super::read_cache::dataflow_generation(conn)? == generation => {
            name_missing(conn, objects, &gone)
        }
        _ => missing_live(conn, objects),
    }
}

fn live_hashes(conn: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT hash FROM resources WHERE live = 1")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?)
}

/// The hashes among `hashes` whose object file is gone, checked on up to 4 threads; the checks
/// end early (the answer is then incomplete) once `stop` is set.
fn absent(objects: &Objects, mut hashes: Vec<String>, stop: &AtomicBool) -> Vec<String> {
    // Sorted, the checks walk the fan-out directories in order and each thread keeps to its own.
    hashes.sort_unstable();
    hashes.dedup();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    // Below this many objects a thread costs more than it saves.
    const PER_THREAD_MIN: usize = 4096;
    let chunk = hashes.len().div_ceil(threads).max(PER_THREAD_MIN);
    std::thread::scope(|scope| {
        fn absent(objects: &Objects, part: &[String], stop: &AtomicBool) -> Vec<String> {
            let mut presence = objects.presence();
            part.iter()
                .take_while(|_| !stop.load(Ordering::Relaxed))
                .filter(|hash| !presence.exists(hash))
                .cloned()
                .collect()
        }
        let check = |part| absent(objects, part, stop);
        let workers: Vec<_> = hashes
            .chunks(chunk)
            .map(|part| (part, scope.spawn(move || check(part))))
            .collect();
        workers
            .into_iter()
            // A checker only stats; should one die all the same, its part is checked again
            // here rather than reported whole.
            .flat_map(|(part, worker)| worker.join().unwrap_or_else(|_| check(part)))
            .collect()
    })
}

/// The live resources (now) of the hashes in `gone` whose object is still missing: what
/// [`absent_live_objects`] found, checked again at the end of a run (the run may have made the
/// object again, or the resource may be live no more).
pub fn name_missing(
    conn: &Connection,
    objects: &Objects,
    gone: &[String],
) -> Result<Vec<MissingObject>, StoreError> {
    let mut presence = objects.presence();
    let mut names = conn
        .prepare_cached("SELECT name FROM resources WHERE live = 1 AND hash = ?1 ORDER BY name")?;
    let mut missing = Vec::new();
    for hash in gone.iter().filter(|hash| !presence.exists(hash)) {
        for name in names.query_map([hash], |r| r.get::<_, String>(0))? {
            missing.push(MissingObject {
                name: name?,
                hash: hash.clone(),
                path: objects.path(hash),
            });
        }
    }
    missing.sort_by(|a, b| (&a.name, &a.hash).cmp(&(&b.name, &b.hash)));
    Ok(missing)
}

/// One object a row refers to: its hash, recorded size (none for task logs), and the names it
/// goes by, for messages.
#[derive(Debug, Clone)]
struct Referenced {
    hash: String,
    size: Option<u64>,
    what: String,
}

/// An object that is missing or whose bytes are not the recorded ones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadObject {
    pub hash: String,
    pub path: PathBuf,
    /// What uses it: `resource NAME` or `the log of task N`.
    pub what: String,
    pub problem: String,
}

/// A file or directory whose permissions are wrong.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadMode {
    pub path: PathBuf,
    /// The permission bits, in octal.
    pub mode: String,
    pub problem: String,
    /// The mode `grit verify --repair` sets: what grit gives such a path in this store.
    #[serde(skip)]
    pub want: u32,
}

/// A file under `objects/` no row refers to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreferenced {
    pub path: PathBuf,
    pub size: u64,
}

/// Everything [`check`] found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub objects_checked: u64,
    pub bytes_checked: u64,
    /// `PRAGMA integrity_check` lines other than `ok`, or why the database could not be read.
    pub database: Vec<String>,
    /// `PRAGMA foreign_key_check` rows, as text.
    pub foreign_keys: Vec<String>,
    pub missing: Vec<BadObject>,
    pub corrupt: Vec<BadObject>,
    pub modes: Vec<BadMode>,
    /// Not damage: what a crash between rename and commit leaves, or a task's superseded log;
    /// `grit gc` removes them.
    pub unreferenced: Vec<Unreferenced>,
}

impl Report {
    /// True when nothing is wrong (unreferenced objects are not a problem).
    pub fn clean(&self) -> bool {
        self.problems() == 0
    }

    pub fn problems(&self) -> usize {
        self.database.len()
            + self.foreign_keys.len()
            + self.missing.len()
            + self.corrupt.len()
            + self.modes.len()
    }
}

/// Permission problems of an object file: it must be read-only, and readable by no one the store
/// is not shared with (its owner alone, or also its group with `--group`).
pub fn object_mode_problem(mode: u32, sharing: Sharing) -> Option<String> {
    let mut problems = Vec::new();
    if mode & 0o222 != 0 {
        problems.push("writable");
    }
    problems.extend(openness(mode, sharing));
    (!problems.is_empty()).then(|| problems.join(", "))
}

/// Permission problems of a store directory or of the database and its companions: closed to
/// everyone the store is not shared with.
pub fn private_mode_problem(mode: u32, sharing: Sharing) -> Option<String> {
    openness(mode, sharing).map(str::to_string)
}

fn openness(mode: u32, sharing: Sharing) -> Option<&'static str> {
    if mode & 0o007 != 0 {
        Some("open to others")
    } else if sharing == Sharing::Private && mode & 0o070 != 0 {
        Some("open to its group (the store is private)")
    } else {
        None
    }
}

/// Check the database, every referenced object and the store's directories. `progress` is told
/// the bytes hashed as they go (from several threads); `total` is called once with the bytes to
/// hash before hashing starts.
pub fn check(
    paths: &StorePaths,
    conn: &Connection,
    total: &dyn Fn(u64),
    progress: &(dyn Fn(u64) + Sync),
) -> Report {
    let mut report = Report::default();
    database_checks(conn, &mut report);
    let referenced = match referenced_objects(conn) {
        Ok(referenced) => referenced,
        Err(e) => {
            report
                .database
                .push(format!("cannot list the store's objects: {e}"));
            Vec::new()
        }
    };
    let objects = Objects::new(paths.objects.clone());
    total(referenced.iter().filter_map(|r| r.size).sum());
    let sharing = Sharing::of(&paths.root).unwrap_or(Sharing::Private);
    check_objects(&objects, &referenced, sharing, &mut report, progress);
    check_private_paths(paths, sharing, &mut report);
    let known: HashSet<&str> = referenced.iter().map(|r| r.hash.as_str()).collect();
    find_unreferenced(&paths.objects, &known, &mut report);
    report
}

fn database_checks(conn: &Connection, report: &mut Report) {
    let integrity = conn.prepare("PRAGMA integrity_check").and_then(|mut stmt| {
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
    });
    match integrity {
        Ok(lines) => report
            .database
            .extend(lines.into_iter().filter(|l| l != "ok")),
        Err(e) => report.database.push(format!("integrity_check failed: {e}")),
    }
    let foreign = conn
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                Ok(format!(
                    "{} row {} refers to a missing row of {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "?".into()),
                    r.get::<_, String>(2)?
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
        });
    match foreign {
        Ok(rows) => report.foreign_keys.extend(rows),
        Err(e) => report
            .foreign_keys
            .push(format!("foreign_key_check failed: {e}")),
    }
}

/// Every object some row refers to: resources (with their size) and task logs.
fn referenced_objects(conn: &Connection) -> Result<Vec<Referenced>, StoreError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stmt = conn.prepare(
        "SELECT hash, MAX(size), GROUP_CONCAT(DISTINCT name) FROM resources GROUP BY hash",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Referenced {
            hash: r.get(0)?,
            size: Some(r.get::<_, i64>(1)? as u64),
            what: format!("resource {}", r.get::<_, String>(2)?),
        })
    })?;
    for row in rows {
        let row = row?;
        seen.insert(row.hash.clone());
        out.push(row);
    }
    let mut stmt = conn.prepare(
        "SELECT log_hash, MIN(id) FROM tasks WHERE log_hash IS NOT NULL GROUP BY log_hash",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (hash, task) = row?;
        if seen.insert(hash.clone()) {
            out.push(Referenced {
                hash,
                size: None,
                what: format!("the log of task {task}"),
            });
        }
    }
    // Disk order (by hash, i.e. by directory) reads each fan-out directory once.
    out.sort_by(|a, b| a.hash.cmp(&b.hash));
    Ok(out)
}

/// Hash every referenced object, on as many threads as there are CPUs.
fn check_objects(
    objects: &Objects,
    referenced: &[Referenced],
    sharing: Sharing,
    report: &mut Report,
    progress: &(dyn Fn(u64) + Sync),
) {
    let next = AtomicUsize::new(0);
    let found = Mutex::new((Vec::new(), Vec::new(), Vec::new(), 0u64));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(referenced.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(object) = referenced.get(index) else {
                        break;
                    };
                    let outcome = check_object(objects, object, sharing);
                    progress(object.size.unwrap_or(0));
                    if let Ok(mut found) = found.lock() {
                        let (missing, corrupt, modes, bytes) = &mut *found;
                        match outcome {
                            ObjectCheck::Missing(bad) => missing.push(bad),
                            ObjectCheck::Present {
                                corrupt: bad,
                                mode,
                                size,
                            } => {
                                *bytes += size;
                                corrupt.extend(bad);
                                modes.extend(mode);
                            }
                        }
                    }
                }
            });
        }
    });
    let (mut missing, mut corrupt, mut modes, bytes) = found
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for list in [&mut missing, &mut corrupt] {
        list.sort_by(|a: &BadObject, b| a.hash.cmp(&b.hash));
    }
    modes.sort_by(|a: &BadMode, b| a.path.cmp(&b.path));
    report.objects_checked = referenced.len() as u64;
    report.bytes_checked = bytes;
    report.missing = missing;
    report.corrupt = corrupt;
    report.modes.extend(modes);
}

enum ObjectCheck {
    Missing(BadObject),
    Present {
        corrupt: Option<BadObject>,
        mode: Option<BadMode>,
        size: u64,
    },
}

fn check_object(objects: &Objects, object: &Referenced, sharing: Sharing) -> ObjectCheck {
    let path = objects.path(&object.hash);
    let bad = |problem: String| BadObject {
        hash: object.hash.clone(),
        path: path.clone(),
        what: object.what.clone(),
        problem,
    };
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(_) => return ObjectCheck::Missing(bad("missing".into())),
    };
    if !meta.is_file() {
        return ObjectCheck::Present {
            corrupt: Some(bad("not a regular file".into())),
            mode: None,
            size: 0,
        };
    }
    let mode_bits = meta.permissions().mode() & 0o7777;
    let mode = object_mode_problem(mode_bits, sharing).map(|problem| BadMode {
        path: path.clone(),
        mode: format!("{mode_bits:04o}"),
        problem,
        want: sharing.object_mode(),
    });
    let verified = VerifiedReader::open(objects, &object.hash, object.size, &object.what)
        .and_then(VerifiedReader::verify);
    let corrupt = match verified {
        Ok(()) => None,
        Err(ObjectError::Missing { .. }) => return ObjectCheck::Missing(bad("missing".into())),
        Err(ObjectError::Corrupt { problem, .. }) => Some(bad(problem)),
        Err(ObjectError::Io { source, .. }) => Some(bad(format!("unreadable: {source}"))),
    };
    ObjectCheck::Present {
        corrupt,
        mode,
        size: meta.len(),
    }
}

/// The store's own directories (the root, `tmp/`, `objects/` and its fan-out directories, the
/// quarantine) and the database with its companions must be closed to everyone the store is not
/// shared with.
fn check_private_paths(paths: &StorePaths, sharing: Sharing, report: &mut Report) {
    let mut dirs = vec![
        paths.root.clone(),
        paths.objects.clone(),
        paths.tmp.clone(),
        paths.quarantine(),
    ];
    if let Ok(level1) = fs::read_dir(&paths.objects) {
        for a in level1.flatten() {
            dirs.push(a.path());
            if let Ok(level2) = fs::read_dir(a.path()) {
                dirs.extend(level2.flatten().map(|b| b.path()));
            }
        }
    }
    let mut files = vec![paths.database.clone(), paths.lock.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut name = paths.database.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    let candidates = dirs
        .into_iter()
        .map(|d| (d, true))
        .chain(files.into_iter().map(|f| (f, false)));
    for (path, is_dir) in candidates {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() != is_dir {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if let Some(problem) = private_mode_problem(mode, sharing) {
            report.modes.push(BadMode {
                path,
                mode: format!("{mode:04o}"),
                problem,
                want: if is_dir {
                    sharing.dir_mode()
                } else {
                    sharing.file_mode()
                },
            });
        }
    }
}

/// Files under `objects/` whose name is no referenced hash.
fn find_unreferenced(objects_dir: &Path, known: &HashSet<&str>, report: &mut Report) {
    let Ok(level1) = fs::read_dir(objects_dir) else {
        return;
    };
    for a in level1.flatten() {
        let Ok(level2) = fs::read_dir(a.path()) else {
            report.unreferenced.push(unreferenced(a.path()));
            continue;
        };
        for b in level2.flatten() {
            let Ok(level3) = fs::read_dir(b.path()) else {
                report.unreferenced.push(unreferenced(b.path()));
                continue;
            };
            for c in level3.flatten() {
                let hash = format!(
                    "{}{}{}",
                    a.file_name().to_string_lossy(),
                    b.file_name().to_string_lossy(),
                    c.file_name().to_string_lossy()
                );
                if !known.contains(hash.as_str()) {
                    report.unreferenced.push(unreferenced(c.path()));
                }
            }
        }
    }
    report.unreferenced.sort_by(|a, b| a.path.cmp(&b.path));
}

fn unreferenced(path: PathBuf) -> Unreferenced {
    let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
    Unreferenced { path, size }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_closed_to_others_and_read_only() {
        let (private, group) = (Sharing::Private, Sharing::Group);
        assert_eq!(object_mode_problem(0o400, private), None);
        assert_eq!(object_mode_problem(0o440, group), None);
        assert_eq!(
            object_mode_problem(0o440, private).as_deref(),
            Some("open to its group (the store is private)")
        );
        assert_eq!(
            object_mode_problem(0o444, group).as_deref(),
            Some("open to others")
        );
        assert_eq!(
            object_mode_problem(0o646, group).as_deref(),
            Some("writable, open to others")
        );
        assert_eq!(
            object_mode_problem(0o600, private).as_deref(),
            Some("writable")
        );
        assert_eq!(private_mode_problem(0o2750, group), None);
        assert_eq!(private_mode_problem(0o700, private), None);
        assert!(private_mode_problem(0o750, private).is_some());
        assert_eq!(
            private_mode_problem(0o755, group).as_deref(),
            Some("open to others")
        );
    }

    /// A store with one live resource whose object is missing, read through a connection of
    /// its own like a run's early check.
    fn store_missing_one() -> (tempfile::TempDir, Connection, Objects, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("db");
        let (paths, _lock, writer) = crate::store::open_for_write(&root).unwrap();
        drop(writer);
        let conn = Connection::open(&paths.database).unwrap();
        let hash = "ab".repeat(32);
        conn.execute(
            "INSERT INTO resources (name, hash, size, created_at, live) VALUES ('gone', ?1, 1, '', 1)",
            [&hash],
        )
        .unwrap();
        (dir, conn, Objects::new(paths.objects), hash)
    }

    #[test]
    fn a_runs_end_trusts_its_start_only_while_the_live_set_is_unchanged() {
        let (_dir, conn, objects, hash) = store_missing_one();
        let stop = AtomicBool::new(false);
        let early = absent_live_objects_at(&conn, &objects, &stop)
            .unwrap()
            .unwrap();
        assert_eq!(early.1, vec![hash.clone()]);
        // Stopped (the run published a task), the start's answer is none at all.
        assert!(
            absent_live_objects_at(&conn, &objects, &AtomicBool::new(true))
                .unwrap()
                .is_none()
        );

        // Unchanged: the start's finding is what the end reports.
        let same = missing_live_after(&conn, &objects, Some(early.clone())).unwrap();
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].name, "gone");

        // A resource made live after the start, also without its object: the generation moved,
        // so the end checks everything and finds both, not only what the start saw.
        let other = "cd".repeat(32);
        conn.execute(
            "INSERT INTO resources (name, hash, size, created_at, live) VALUES ('later', ?1, 1, '', 1)",
            [&other],
        )
        .unwrap();
        let after = missing_live_after(&conn, &objects, Some(early.clone())).unwrap();
        let names: Vec<_> = after.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gone", "later"]);

        // No early finding (it could not be made): the end checks everything.
        assert_eq!(missing_live_after(&conn, &objects, None).unwrap().len(), 2);
    }
}
