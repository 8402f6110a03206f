//! `watch`: paths whose changes (inotify, through `notify`) are ingested into the pipeline's
//! store and queue a run — task-sync's file trigger, done with content hashes.
//!
//! The watcher only records which files changed and wakes the worker. The worker ingests them
//! between runs (never while a run uses the staging area) once no change came for [`DEBOUNCE`],
//! each file as `grit ingest` would (named after itself, replacing the live fact of that name),
//! and queues a run only when that changed what is live: a touch that leaves the bytes as they
//! were queues nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

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
    let name = pipeline.config().name.clone();
    let ingestion = pipeline
        .writer
        .call(|conn| Ingestion::begin(conn, false))
        .await?;
    let objects = Objects::new(pipeline.paths.objects.clone());
    let mut changed = false;
    let looked_at = files.len();
    for file in files {
        let Some(record) = stage(&pipeline.paths.tmp, &objects, &file, &name) else {
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
/// a regular file, or has a name a resource cannot have.
fn stage(tmp: &Path, objects: &Objects, file: &Path, pipeline: &str) -> Option<OutputRecord> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    let name = file.file_name()?.to_str()?.to_string();
    if let Some(reason) = invalid_name_reason(&name) {
        tracing::warn!(pipeline, "watch: {} not ingested: {reason}", file.display());
        return None;
    }
    let staged = tmp.join(format!("watch-{}", std::process::id()));
    let stored = std::fs::copy(file, &staged)
        .and_then(|_| hash_file(&staged))
        .and_then(|(hash, size)| objects.adopt(&staged, &hash).map(|_| (hash, size)));
    match stored {
        Ok((hash, size)) => Some(OutputRecord { name, hash, size }),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            tracing::warn!(pipeline, "watch: {} not ingested: {e}", file.display());
            None
        }
    }
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
}
