//! `watch`: paths whose changes (inotify, through `notify`) are ingested into the pipeline's
//! store and queue a run — task-sync's file trigger, done with content hashes.
//!
//! The watcher only records which files changed and wakes the worker. The worker ingests them
//! between runs (never while a run uses the staging area) once no change came for [`DEBOUNCE`],
//! each file as `grit ingest` would (named after itself, replacing the live fact of that name),
//! and queues a run only when that changed what is live: a touch that leaves the bytes as they
//! were queues nothing.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use notify::{EventKind, RecursiveMode, Watcher};

use super::queue;
use super::worker::Pipeline;
use crate::capture::invalid_name_reason;
use crate::report::escape::printable;
use crate::store::objects::hash_file;
use crate::store::publish::{self, Ingestion, OutputRecord};
use crate::store::{Objects, StoreError};

/// Quiet time after the last change before the changed files are ingested.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Files changed and not ingested yet, and when the last change came.
#[derive(Debug, Default)]
pub struct Changes {
    pub files: BTreeSet<PathBuf>,
    pub last_ms: i64,
}

/// What is watched: directories (recursively), and single files through their parent
/// directories. A file is watched by name, not by inode: `mv new file` (and editors, `sed -i`)
/// replaces the inode, and a watch on the old one would see nothing more.
#[derive(Debug, Default)]
struct Watched {
    dirs: Vec<PathBuf>,
    /// Each file as `parent.join(name)` with the parent as it is watched: the paths events name.
    files: BTreeSet<PathBuf>,
    /// The files' parents not inside a watched directory (that watch covers them already).
    parents: BTreeSet<PathBuf>,
}

impl Watched {
    fn new(paths: &[PathBuf]) -> Watched {
        let mut watched = Watched::default();
        let (dirs, files): (Vec<&PathBuf>, Vec<&PathBuf>) = paths.iter().partition(|p| p.is_dir());
        watched.dirs = dirs.into_iter().cloned().collect();
        for file in files {
            let Some(name) = file.file_name() else {
                continue;
            };
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            watched.files.insert(parent.join(name));
            if !watched.dirs.iter().any(|d| parent.starts_with(d)) {
                watched.parents.insert(parent);
            }
        }
        watched
    }

    /// Whether a change of `path` concerns a watched path (a parent's other files do not).
    fn covers(&self, path: &Path) -> bool {
        self.files.contains(path) || self.dirs.iter().any(|d| path.starts_with(d))
    }
}

/// Start watching `pipeline`'s `watch` paths (directories recursively, files through their
/// directories). The watcher stops when the returned value is dropped.
pub fn start(pipeline: &Arc<Pipeline>) -> notify::Result<Option<notify::RecommendedWatcher>> {
    let config = pipeline.config();
    if config.watch.is_empty() {
        return Ok(None);
    }
    let watched = Arc::new(Watched::new(&config.watch));
    let filter = watched.clone();
    let target = Arc::downgrade(pipeline);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(mut event) = event else { return };
        event.paths.retain(|p| filter.covers(p));
        let relevant = matches!(
            event.kind,
            EventKind::Create(_)
                | EventKind::Modify(_)
                | EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
        );
        let Some(pipeline) = target.upgrade() else {
            return;
        };
        if relevant && !event.paths.is_empty() {
            let mut changes = pipeline
                .changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            changes.files.extend(event.paths);
            changes.last_ms = queue::unix_ms();
            drop(changes);
            pipeline.wake.notify_one();
        }
    })?;
    for dir in &watched.dirs {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    for parent in &watched.parents {
        watcher.watch(parent, RecursiveMode::NonRecursive)?;
    }
    for path in &config.watch {
        tracing::info!(pipeline = %config.name, "watching {}", path.display());
    }
    Ok(Some(watcher))
}

/// What the worker should do about changed files now.
pub enum Due {
    Nothing,
    /// Wait this long for the changes to settle.
    Wait(Duration),
    /// Ingest these.
    Ingest(Vec<PathBuf>),
}

pub fn due(pipeline: &Pipeline) -> Due {
    let mut changes = pipeline
        .changes
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if changes.files.is_empty() {
        return Due::Nothing;
    }
    let quiet = queue::unix_ms() - changes.last_ms;
    let debounce = DEBOUNCE.as_millis() as i64;
    if quiet < debounce {
        return Due::Wait(Duration::from_millis((debounce - quiet) as u64));
    }
    Due::Ingest(std::mem::take(&mut changes.files).into_iter().collect())
}

/// Ingest the changed `files` that are regular files with usable names; true when that changed
/// what is live (a new content, or one that replaced another).
pub async fn ingest(pipeline: &Pipeline, files: Vec<PathBuf>) -> Result<bool, StoreError> {
    let (name, watch) = {
        let config = pipeline.config();
        (config.name.clone(), config.watch.clone())
    };
    let ingestion = pipeline
        .writer
        .call(|conn| Ingestion::begin(conn, false))
        .await?;
    let objects = Objects::new(pipeline.paths.objects.clone());
    let mut changed = false;
    let looked_at = files.len();
    for file in files {
        let Some(record) = stage(&pipeline.paths.tmp, &objects, &watch, &file, &name) else {
            continue;
        };
        let what = format!(
            "{} ({})",
            printable(&record.name),
            crate::store::short_hash(&record.hash)
        );
        let ingested = pipeline
            .writer
            .call(move |conn| publish::ingest(conn, &record, ingestion))
            .await?;
        if ingested.new || ingested.superseded > 0 {
            tracing::info!(
                pipeline = %name,
                "watch: ingested {what} from {}",
                printable(&file.display().to_string())
            );
            changed = true;
        }
    }
    if !changed {
        tracing::info!(
            pipeline = %name,
            "watch: {looked_at} changed path(s), the same content as before: no run queued"
        );
    }
    Ok(changed)
}

/// Copy `file` into staging, hash it and store the object; `None` (logged) when it is gone, not
/// a regular file, reached through a symbolic link, or has a name a resource cannot have.
fn stage(
    tmp: &Path,
    objects: &Objects,
    watch: &[PathBuf],
    file: &Path,
    pipeline: &str,
) -> Option<OutputRecord> {
    let shown = || printable(&file.display().to_string()).into_owned();
    let name = file.file_name()?.to_str()?.to_string();
    let mut source = match open_watched(watch, file) {
        Ok(source) => source,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        // A socket cannot be opened at all.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            tracing::warn!(
                pipeline,
                "watch: {} not ingested: not a regular file",
                shown()
            );
            return None;
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            tracing::warn!(
                pipeline,
                "watch: {} not ingested: a symbolic link is on its way (watch the file it \
                 points to instead)",
                shown()
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(pipeline, "watch: {} not ingested: {e}", shown());
            return None;
        }
    };
    // Checked on the opened file, not on the path, which may have changed since. A new
    // directory is part of what is watched, not a file to ingest: nothing to say about it.
    let kind = source.metadata().map(|m| m.file_type());
    if kind.as_ref().is_ok_and(|k| k.is_dir()) {
        return None;
    }
    if !kind.is_ok_and(|k| k.is_file()) {
        tracing::warn!(
            pipeline,
            "watch: {} not ingested: not a regular file",
            shown()
        );
        return None;
    }
    if let Some(reason) = invalid_name_reason(&name) {
        tracing::warn!(pipeline, "watch: {} not ingested: {reason}", shown());
        return None;
    }
    let staged = tmp.join(format!("watch-{}", std::process::id()));
    let stored = copy_to_new(&mut source, &staged)
        .and_then(|()| hash_file(&staged))
        .and_then(|(hash, size)| objects.adopt(&staged, &hash).map(|_| (hash, size)));
    match stored {
        Ok((hash, size)) => Some(OutputRecord { name, hash, size }),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            tracing::warn!(pipeline, "watch: {} not ingested: {e}", shown());
            None
        }
    }
}

/// Opens a changed `file` for reading. Whoever may write into a watched directory must not make
/// the server read what they cannot: no symbolic link is followed below the watched path the
/// file belongs to (the watched path itself is the configuration's, and may be reached through
/// links). The open does not block, so a FIFO put there cannot hang the pipeline's worker.
fn open_watched(watch: &[PathBuf], file: &Path) -> io::Result<File> {
    let Some((root, inside)) = watched_root(watch, file) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not under a watched path",
        ));
    };
    let root = File::open(root)?;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
    match nix::fcntl::openat2(&root, inside.as_path(), how) {
        Ok(fd) => Ok(File::from(fd)),
        // No openat2 (before Linux 5.6), or a seccomp filter that refuses it (older container
        // profiles, some `SystemCallFilter=`).
        Err(Errno::ENOSYS | Errno::EPERM) => open_step_by_step(root, &inside, flags),
        Err(e) => Err(e.into()),
    }
}

/// [`open_watched`] before Linux 5.6 (no `openat2`): one component at a time, none of them a
/// link, none of them `..`.
fn open_step_by_step(root: File, inside: &Path, flags: OFlag) -> io::Result<File> {
    let mut dir = root;
    let parts: Vec<_> = inside.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(part) = part else {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        };
        let flags = if i + 1 == parts.len() {
            flags
        } else {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW
        };
        let fd = nix::fcntl::openat(&dir, *part, flags | OFlag::O_CLOEXEC, Mode::empty())?;
        dir = File::from(fd);
    }
    Ok(dir)
}

/// The directory `file` is opened from and its path inside it: a watched file's parent and name,
/// or the watched directory it lies in and the rest of its path.
fn watched_root(watch: &[PathBuf], file: &Path) -> Option<(PathBuf, PathBuf)> {
    if watch.iter().any(|w| w == file) {
        let parent = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return Some((parent, PathBuf::from(file.file_name()?)));
    }
    watch.iter().find_map(|w| {
        let inside = file.strip_prefix(w).ok()?;
        (!inside.as_os_str().is_empty()).then(|| (w.clone(), inside.to_path_buf()))
    })
}

/// Copies what is left of `source` into a new private file at `staged`.
fn copy_to_new(source: &mut File, staged: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(staged);
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staged)?;
    io::copy(source, &mut target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_watched_through_its_directory_and_filtered_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (file, sub) = (dir.path().join("wfile"), dir.path().join("wdir"));
        std::fs::write(&file, "v1").unwrap();
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("inner"), "x").unwrap();
        let watched = Watched::new(&[file.clone(), sub.clone(), sub.join("inner")]);
        assert_eq!(watched.dirs, std::slice::from_ref(&sub));
        // The file inside the watched directory needs no watch of its own.
        assert_eq!(
            watched.parents.iter().collect::<Vec<_>>(),
            [&dir.path().to_path_buf()]
        );
        assert!(watched.covers(&file));
        assert!(watched.covers(&sub.join("new/deeper")));
        assert!(!watched.covers(&dir.path().join("wfile.tmp")));
        assert!(!watched.covers(&dir.path().join("other")));
    }

    #[test]
    fn a_watched_file_is_opened_without_following_links_or_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let (watched, outside) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::create_dir_all(watched.join("sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(watched.join("sub/ok"), "ok").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), watched.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, watched.join("dirlink")).unwrap();
        nix::unistd::mkfifo(&watched.join("fifo"), Mode::S_IRWXU).unwrap();
        let watch = [watched.clone()];
        let loops =
            |r: io::Result<File>| r.err().and_then(|e| e.raw_os_error()) == Some(libc::ELOOP);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        for via_steps in [false, true] {
            let open = |path: &Path| {
                if via_steps {
                    let (root, inside) = watched_root(&watch, path).unwrap();
                    open_step_by_step(File::open(root).unwrap(), &inside, flags)
                } else {
                    open_watched(&watch, path)
                }
            };
            let mut ok = String::new();
            io::Read::read_to_string(&mut open(&watched.join("sub/ok")).unwrap(), &mut ok).unwrap();
            assert_eq!(ok, "ok");
            assert!(loops(open(&watched.join("link"))), "steps: {via_steps}");
            assert!(
                open(&watched.join("dirlink/secret")).is_err(),
                "steps: {via_steps}"
            );
            // Opened at once, and then seen not to be a regular file.
            let fifo = open(&watched.join("fifo")).unwrap();
            assert!(!fifo.metadata().unwrap().is_file());
        }
        // A watched single file is opened from its parent, and a link there is refused too.
        let single = [watched.join("link")];
        assert!(loops(open_watched(&single, &watched.join("link"))));
        assert!(open_watched(&watch, &outside.join("secret")).is_err());
    }
}
