//! FUSE output capture (DESIGN §5): one `fuse.grit` mount per run, one directory per task, used
//! as the task's `OUTPUT_DIR`. Files stream into staging files under `<db>/tmp` while SHA-256 is
//! computed, so a finished task's outputs are ready to be renamed into `objects/`.
//!
//! Layout: `fs` is the filesystem served to the kernel (inodes, hashing, refusals); `access`
//! decides who may use a task's directory (the task's processes and grit, nobody else); `mounts`
//! is the mount's life (private runtime directory, `mount(2)` without `allow_other`, unmount,
//! stale-mount cleanup). This file is the seam the engine calls: [`FuseCapture`].
//!
//! Each mount is independent: several (two runs at once, `available()` during a run) coexist in
//! one process. The one process-wide value is `MOUNT_SEQ`, a counter that keeps their staging
//! file names apart; it holds no state of any mount.

mod access;
mod fs;
mod hasher;
mod mounts;
#[cfg(test)]
mod tests;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, INodeNo, Notifier, Session, SessionACL};

use crate::capture::{
    Capture, CaptureError, CapturedFile, HelperCheck, ServedInput, TaskIdentity,
    invalid_name_reason,
};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError {
    let path = path.to_path_buf();
    move |source| CaptureError::Io { path, source }
}

fn io_kind(path: PathBuf, kind: std::io::ErrorKind, msg: String) -> CaptureError {
    CaptureError::Io {
        path,
        source: std::io::Error::new(kind, msg),
    }
}

/// Numbers this process's mounts' staging files, so several mounts can coexist (tests,
/// `available()` during a run).
static MOUNT_SEQ: AtomicU64 = AtomicU64::new(0);

/// How long unmounting waits for the FUSE thread to stop before leaving it to process exit.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Is `path` a task input served by a capture mount (`<mount>/<key>.in/<name>`, or that
/// directory)? For messages: such a path is read-only by design, not for lack of a grant.
pub fn is_served_input(path: &Path) -> bool {
    let named = |p: Option<&Path>, test: &dyn Fn(&str) -> bool| {
        p.and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .is_some_and(test)
    };
    let in_mount = |dir: &Path| {
        named(Some(dir), &|n| n.ends_with(fs::INPUTS_SUFFIX))
            && named(dir.parent(), &|n| n.starts_with(mounts::MOUNT_PREFIX))
    };
    in_mount(path) || path.parent().is_some_and(in_mount)
}

/// One FUSE capture filesystem, mounted for the duration of a run.
pub struct FuseCapture {
    shared: Arc<fs::Shared>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    notifier: Notifier,
}

impl FuseCapture {
    /// Mount one FUSE filesystem for this run in a private runtime dir. `staging` is `<db>/tmp`.
    /// Stale mounts of grit processes that died are detached first.
    pub fn mount(staging: &Path) -> Result<FuseCapture, CaptureError> {
        if let Err(e) = cleanup_stale_mounts() {
            tracing::warn!("cleaning up stale capture mounts: {e}");
        }
        if !staging.is_dir() {
            return Err(io_kind(
                staging.to_path_buf(),
                std::io::ErrorKind::NotFound,
                "the staging directory does not exist".into(),
            ));
        }
        let seq = MOUNT_SEQ.fetch_add(1, Ordering::Relaxed);
        let runtime =
            mounts::runtime_dir().map_err(|e| CaptureError::Unavailable(e.to_string()))?;
        let name = mounts::mount_name().map_err(|e| CaptureError::Unavailable(e.to_string()))?;
        let mountpoint = runtime.join(name);
        std::fs::DirBuilder::new()
            .mode(fs::DIR_MODE.into())
            .create(&mountpoint)
            .map_err(io_err(&mountpoint))?;

        let prefix = format!("fuse-{}-{seq}-", std::process::id());
        let shared = Arc::new(fs::Shared::new(staging, prefix).map_err(io_err(staging))?);
        let fd = match mounts::mount_fuse(&mountpoint) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_dir(&mountpoint);
                return Err(CaptureError::Unavailable(e.to_string()));
            }
        };
        let mut config = Config::default();
        config.acl = SessionACL::All;
        // One thread: measured faster than two on 2 cores (rust-spike §2), and requests of one
        // file are serialised by the kernel anyway.
        config.n_threads = Some(1);
        let filesystem = fs::CaptureFs::new(shared.clone());
        let session = Session::from_fd(filesystem, fd, SessionACL::All, config)
            .and_then(|s| s.spawn())
            .map_err(|e| {
                let _ = mounts::unmount(&mountpoint);
                let _ = std::fs::remove_dir(&mountpoint);
                CaptureError::Unavailable(format!("starting the FUSE session: {e}"))
            })?;
        Ok(FuseCapture {
            shared,
            mountpoint,
            notifier: session.notifier(),
            session: Some(session),
        })
    }

    /// The mount point (for diagnostics).
    #[allow(dead_code)] // used by tests and for diagnostics
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Create the task's directory in the mount; returns the absolute path to use as OUTPUT_DIR
    /// (the sandbox bind-mounts it at the same path). `quota` = max_output bytes for the task.
    pub fn start_task(&self, task_key: &str, quota: Option<u64>) -> Result<PathBuf, CaptureError> {
        let dir = self.mountpoint.join(task_key);
        if invalid_name_reason(task_key).is_some() || task_key.len() > 200 {
            return Err(io_kind(
                dir,
                std::io::ErrorKind::InvalidInput,
                format!("invalid capture task key {task_key:?}"),
            ));
        }
        self.shared
            .start_task(task_key, quota)
            .map_err(|fs::StartError::Exists| {
                io_kind(
                    dir.clone(),
                    std::io::ErrorKind::AlreadyExists,
                    format!("capture task {task_key:?} is already started"),
                )
            })?;
        Ok(dir)
    }

    /// [`FuseCapture::start_task`] for a test, whose shell commands run in the test process's
    /// own process group: that group is admitted as the task.
    #[cfg(test)]
    pub(crate) fn start_test_task(
        &self,
        task_key: &str,
        quota: Option<u64>,
    ) -> Result<PathBuf, CaptureError> {
        let dir = self.start_task(task_key, quota)?;
        // SAFETY: getpgrp cannot fail.
        let group = unsafe { libc::getpgrp() };
        self.shared
            .admit(task_key, Some(TaskIdentity::ProcessGroup(group)));
        Ok(dir)
    }

    /// After every process of the task is dead: the files (hash complete, sorted by name), plus
    /// refusal messages (mkdir/symlink/bad names/quota...) for the task log. Errors such as ENOSPC
    /// in the staging area or an exceeded quota surface here as [`CaptureError::Rule`] (the task
    /// fails with that message, which also lists the refusals); the task's staged files are then
    /// already deleted. The directory disappears either way.
    pub fn finish_task(
        &self,
        task_key: &str,
    ) -> Result<(Vec<CapturedFile>, Vec<String>), CaptureError> {
        let taken = self.take_task(task_key).ok_or_else(|| {
            io_kind(
                self.mountpoint.join(task_key),
                std::io::ErrorKind::NotFound,
                format!("no capture task {task_key:?}"),
            )
        })?;
        let refusals = taken.refusals.clone();
        match taken.into_captured(task_key, &self.shared) {
            Ok(files) => Ok((files, refusals)),
            Err(errors) => {
                let mut msg = format!("capturing outputs failed: {}", errors.join("; "));
                let others: Vec<&String> =
                    refusals.iter().filter(|r| !errors.contains(r)).collect();
                for r in others {
                    msg.push_str("; ");
                    msg.push_str(r);
                }
                Err(CaptureError::Rule(msg))
            }
        }
    }

    /// A failed/killed task: delete its staged files and its directory. Late writes from a
    /// surviving process fail with EIO and cannot resurrect anything. Unknown keys are ignored.
    pub fn discard_task(&self, task_key: &str) {
        if let Some(taken) = self.take_task(task_key) {
            taken.delete(&self.shared);
        }
    }

    /// Take a task out of the filesystem and make the kernel forget its cached directory entry,
    /// so the same key can start again at once. Called without holding the state lock: the
    /// kernel takes the root directory's lock to invalidate, which a request blocked on us may
    /// hold.
    fn take_task(&self, task_key: &str) -> Option<fs::TakenTask> {
        let taken = self.shared.take_task(task_key)?;
        if self.session.is_some() {
            // ENOENT just means the kernel had nothing cached.
            let _ = self
                .notifier
                .inval_entry(INodeNo(fs::ROOT), task_key.as_ref());
            let inputs = format!("{task_key}{}", fs::INPUTS_SUFFIX);
            let _ = self
                .notifier
                .inval_entry(INodeNo(fs::ROOT), inputs.as_ref());
        }
        Some(taken)
    }

    #[allow(dead_code)] // `grit run` relies on Drop; explicit unmount reports errors (tests)
    /// Unmount (also done on Drop); leaves no mount and no staged file of unfinished tasks behind.
    pub fn unmount(mut self) -> Result<(), CaptureError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), CaptureError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let result = mounts::unmount(&self.mountpoint).map_err(io_err(&self.mountpoint));
        // The aborted connection ends the session loop; don't hang a run's exit on it if a
        // kernel refuses to abort (it then ends with the process).
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if session.guard.is_finished() {
            if let Err(e) = session.join() {
                tracing::debug!("capture FUSE session ended with: {e}");
            }
        } else {
            tracing::warn!(
                "the capture filesystem at {} did not stop; leaving it to process exit",
                self.mountpoint.display()
            );
        }
        let _ = std::fs::remove_dir(&self.mountpoint);
        for key in self.shared.task_keys() {
            self.discard_task(&key);
        }
        result
    }

    /// Is FUSE usable here? (/dev/fuse openable and a test mount works) — for `--capture auto`
    /// and `grit doctor`. The probe mounts, writes one file through the mount and checks its hash.
    #[allow(dead_code)] // for `grit doctor`; `grit run --capture auto` just tries to mount
    pub fn available() -> Result<(), String> {
        std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
        let runtime = mounts::runtime_dir().map_err(|e| e.to_string())?;
        let probe_dir = runtime.join(format!(
            "probe.{}.{}",
            std::process::id(),
            MOUNT_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(fs::DIR_MODE.into())
            .create(&probe_dir)
            .map_err(|e| format!("creating {}: {e}", probe_dir.display()))?;
        let result = probe(&probe_dir);
        let _ = std::fs::remove_dir_all(&probe_dir);
        result
    }
}

fn probe(staging: &Path) -> Result<(), String> {
    use sha2::{Digest, Sha256};
    let cap = FuseCapture::mount(staging).map_err(|e| e.to_string())?;
    let dir = cap.start_task("probe", None).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("probe"), b"grit")
        .map_err(|e| format!("writing through the FUSE mount: {e}"))?;
    let (files, _) = cap.finish_task("probe").map_err(|e| e.to_string())?;
    let want = hex::encode(Sha256::digest(b"grit"));
    let ok = files.len() == 1 && files[0].hash == want;
    for f in &files {
        let _ = std::fs::remove_file(&f.staged);
    }
    cap.unmount().map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err("the FUSE probe captured the wrong content".into())
    }
}

impl Drop for FuseCapture {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("{e}");
        }
    }
}

/// Detach `fuse.grit` mounts left behind by grit processes that died (`kill -9`), and remove
/// their mount point directories. [`FuseCapture::mount`] calls it; `grit run` may also call it
/// at start-up, before taking the store lock. Returns the mount points cleaned up.
pub fn cleanup_stale_mounts() -> Result<Vec<PathBuf>, CaptureError> {
    mounts::cleanup_stale().map_err(io_err(Path::new("/proc/self/mountinfo")))
}

impl Capture for FuseCapture {
    fn start_task(&self, key: &str, quota: Option<u64>) -> Result<PathBuf, CaptureError> {
        FuseCapture::start_task(self, key, quota)
    }

    fn finish_task(&self, key: &str) -> Result<(Vec<CapturedFile>, Vec<String>), CaptureError> {
        FuseCapture::finish_task(self, key)
    }

    fn discard_task(&self, key: &str) {
        FuseCapture::discard_task(self, key)
    }

    fn kind(&self) -> &'static str {
        "fuse"
    }

    fn serve_inputs(
        &self,
        key: &str,
        inputs: &[ServedInput],
    ) -> Result<Option<PathBuf>, CaptureError> {
        let listed: Vec<(String, PathBuf, u64)> = inputs
            .iter()
            .map(|i| (i.name.clone(), i.path.clone(), i.size))
            .collect();
        if !self.shared.serve_inputs(key, &listed) {
            return Err(io_kind(
                self.mountpoint.join(key),
                std::io::ErrorKind::NotFound,
                format!("capture task {key:?} is not started"),
            ));
        }
        Ok(Some(
            self.mountpoint.join(format!("{key}{}", fs::INPUTS_SUFFIX)),
        ))
    }

    fn expect(&self, key: &str) {
        self.shared.expect(key)
    }

    fn admit(&self, key: &str, who: Option<TaskIdentity>) {
        self.shared.admit(key, who)
    }

    fn refused_accesses(&self) -> Vec<String> {
        self.shared.refused_accesses()
    }

    fn trust(&self, helpers: HelperCheck) {
        self.shared.trust(helpers);
    }
}
