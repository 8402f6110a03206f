//! The process limit for tasks of a grit that runs as root. `RLIMIT_NPROC` exempts the host's
//! root user, and a task of root runs as uid 0, so there the limit comes from a pids cgroup
//! instead: one child cgroup per task. With cgroup v2 the task's init is born into it
//! (`CLONE_INTO_CGROUP`); with the cgroup v1 pids hierarchy grit writes init's pid into
//! `cgroup.procs` (opened here) as soon as the zygote has answered, before the cgroup's window
//! closes and before init may create any process (it waits for grit's go); init also joins by
//! itself as its first step, which is then a no-op.
//!
//! A task's cgroup can only be removed once it is empty, after the task ended. Each new one
//! sweeps the empty leftovers of this grit process and of grit processes that are gone (a
//! previous run's last cgroup, or those of a grit killed with `kill -9`), and the end of a run
//! sweeps this process's own (one whose init is still exiting then is left to a later sweep).
//! Without the sweep of the departed, every run as root with a `processes` limit left one empty
//! cgroup behind for good.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

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

/// A cgroup's window between its creation and its init's arrival in it: the sweep waits until it
/// closes. Held by the spawn until the zygote has cloned init (v2) and grit has written init's
/// pid into the cgroup (v1).
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
    sweep(base, SystemTime::now());
    // The lock guards no data: a panic elsewhere cannot leave anything half-done behind it.
    let window = CREATING.read().unwrap_or_else(|e| e.into_inner());
    let dir = base
        .dir
        .join(format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&dir).map_err(|e| unsupported(format!("{}: {e}", dir.display())))?;
    CREATED.store(true, Ordering::Relaxed);
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

/// How old the empty cgroup of a grit process that is not running must be before another grit
/// removes it. A process of another pid namespace sharing this cgroup could look gone from here;
/// its cgroups are empty only in the milliseconds between their creation and their init's clone.
const DEPARTED_AFTER: Duration = Duration::from_secs(10);

/// Whose leftover a cgroup name is, if it is one of grit's (`grit-<pid>-<n>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("grit-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the empty task cgroups of this process and those, older than [`DEPARTED_AFTER`], of
/// grit processes that are not running, while no spawn of this process is between creating a
/// cgroup and cloning its init (else a later sweep does it).
fn sweep(base: &Base, now: SystemTime) {
    let Ok(_sweeping) = CREATING.try_write() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&base.dir) else {
        return;
    };
    let own = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = owner_pid(&e.file_name().to_string_lossy()) else {
            continue;
        };
        let departed = || {
            !Path::new("/proc").join(pid.to_string()).exists()
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= DEPARTED_AFTER))
        };
        // Either fails with EBUSY while a task's init is still in it.
        if pid == own || departed() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// The end of a run: removes this process's empty task cgroups, if it ever made one.
pub(crate) fn sweep_own() {
    if !CREATED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(base) = base() {
        sweep(base, SystemTime::now());
    }
}

/// Whether this process made a task cgroup (then the end of a run sweeps).
static CREATED: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn only_grit_task_cgroup_names_have_an_owner() {
        assert_eq!(owner_pid("grit-1234-0"), Some(1234));
        assert_eq!(owner_pid("grit-1234-17"), Some(1234));
        assert_eq!(owner_pid("grit-1234"), None);
        assert_eq!(owner_pid("grit-x-1"), None);
        assert_eq!(owner_pid("grit-12-x"), None);
        assert_eq!(owner_pid("user.slice"), None);
    }
}
