//! The process limit for tasks of a grit that runs as root. `RLIMIT_NPROC` exempts the host's
//! root user, and a task of root runs as uid 0, so there the limit comes from a pids cgroup
//! instead: one child cgroup per task. With cgroup v2 the task's init is born into it
//! (`CLONE_INTO_CGROUP`); with the cgroup v1 pids hierarchy init joins it through `cgroup.procs`
//! (opened here, written by init) as its first step, before it creates any process.
//!
//! A task's cgroup can only be removed once it is empty, after the task ended; each new one
//! sweeps the empty leftovers of this grit process, and the last one stays until the next run.
//!
//! The names (`grit-<pid>-<n>`) and the sweep belong to the process, not to one sandbox, so two
//! runs at once in one process share them: a cgroup is also empty between its creation and its
//! init's clone, so the sweep runs only while no other spawn is in that window ([`Window`], a
//! process-wide lock that holds no data; a skipped sweep happens at a later spawn).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard};

use super::SandboxError;

const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

fn fs_type(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs with a valid path and an out-struct of the right type.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st) == 0).then_some(st.f_type as i64)
    }
}

/// The cgroup directory of this process that can hold per-task pids cgroups, if any: the
/// cgroup v1 `pids` hierarchy, or a cgroup v2 one whose subtree has the pids controller.
fn find_base() -> Option<Base> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut v1 = None;
    let mut v2 = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            v1 = Some(Path::new("/sys/fs/cgroup/pids").join(rel));
        } else if controllers.is_empty() {
            v2 = Some(Path::new("/sys/fs/cgroup").join(rel));
        }
    }
    if let Some(dir) = v1
        && fs_type(Path::new("/sys/fs/cgroup/pids")) == Some(CGROUP_SUPER_MAGIC)
    {
        return Some(Base { dir, v2: false });
    }
    let dir = v2?;
    #[allow(clippy::unnecessary_cast)] // the magic constant's type differs between targets
    let magic = libc::CGROUP2_SUPER_MAGIC as i64;
    if fs_type(Path::new("/sys/fs/cgroup")) != Some(magic) {
        return None;
    }
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    enabled
        .split_whitespace()
        .any(|c| c == "pids")
        .then_some(Base { dir, v2: true })
}

struct Base {
    dir: PathBuf,
    v2: bool,
}

/// How a task's init gets into its pids cgroup.
#[derive(Debug)]
pub(crate) enum Join {
    /// cgroup v2: the cgroup's directory, for `CLONE_INTO_CGROUP`.
    Clone(OwnedFd),
    /// cgroup v1: the cgroup's `cgroup.procs`, open for writing; init writes itself into it.
    Procs(OwnedFd),
}

fn base() -> Option<&'static Base> {
    static BASE: OnceLock<Option<Base>> = OnceLock::new();
    BASE.get_or_init(find_base).as_ref()
}

/// Spawns between creating their cgroup and cloning init into it (readers), and the sweep of
/// empty cgroups (the writer), which must not remove a cgroup that is empty because its init is
/// not born yet.
static CREATING: RwLock<()> = RwLock::new(());

/// A cgroup's window between its creation and its init's clone: the sweep waits until it closes.
/// Held by the spawn until the zygote has cloned init.
pub(crate) type Window = RwLockReadGuard<'static, ()>;

/// Creates a pids cgroup allowing `max` tasks and says how init joins it.
pub(crate) fn create(max: u64) -> Result<(Join, Window), SandboxError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unsupported = |detail: String| SandboxError::Unsupported {
        feature: "a pids cgroup for the `processes` limit of a grit running as root",
        detail,
    };
    let base = base().ok_or_else(|| {
        unsupported(
            "no cgroup v1 pids hierarchy and no cgroup v2 subtree with the pids controller; \
             run grit as a regular user, or delegate a cgroup (systemd `Delegate=pids`)"
                .into(),
        )
    })?;
    let prefix = format!("grit-{}-", std::process::id());
    // Only while no other spawn of this process has a cgroup whose init is not born yet.
    if let Ok(_sweeping) = CREATING.try_write()
        && let Ok(entries) = std::fs::read_dir(&base.dir)
    {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                // Fails with EBUSY while that task still runs; it is swept next time.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    // The lock guards no data: a panic elsewhere cannot leave anything half-done behind it.
    let window = CREATING.read().unwrap_or_else(|e| e.into_inner());
    let dir = base
        .dir
        .join(format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&dir).map_err(|e| unsupported(format!("{}: {e}", dir.display())))?;
    std::fs::write(dir.join("pids.max"), max.to_string())
        .map_err(|e| unsupported(format!("{}/pids.max: {e}", dir.display())))?;
    if !base.v2 {
        let procs = dir.join("cgroup.procs");
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| unsupported(format!("{}: {e}", procs.display())))?;
        return Ok((Join::Procs(OwnedFd::from(opened)), window));
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&dir)
        .map_err(|e| unsupported(format!("{}: {e}", dir.display())))?;
    Ok((Join::Clone(OwnedFd::from(opened)), window))
}
