//! The per-task sandbox (DESIGN §4): spawns a task's program isolated by a step's [`Policy`].
//!
//! # Layout
//! - [`policy`]: the policy data type (what a step may do).
//! - `client`: grit's side of the zygote: starting it, sending it orders, replacing it.
//!   Each [`Sandbox`] owns its zygote; nothing of it is global.
//! - `wire`: the orders and replies between grit and the zygote, and how they travel.
//! - `zygote`: the small process that holds the template mount tree and clones every task.
//! - `plan`: the template's static tree, each task's own mounts on top of it, and the landlock
//!   allow-list.
//! - `rootfs`: the plan of a task in an image (`image = "…"`), whose root replaces the host's.
//! - `child`: the raw-syscall code of the task's init, which finishes the sandbox and runs the
//!   script.
//! - `seccomp`: the filter against set-user-ID files, kernel keyrings and io_uring.
//! - `netpool`: the private network namespaces, lent one task at a time.
//! - `cgroup`: the per-task pids cgroup that enforces `processes` for root.
//! - [`probe`]: what this machine offers, for `grit doctor`.
//!
//! # What a sandboxed task gets
//! [`Sandbox::spawn`] hands the task to the zygote, which clones the task's init (a child of grit) into
//! new user (own uid/gid mapped to themselves), mount, pid, ipc and uts namespaces; unless
//! `network = true` it is also born in a private network namespace (loopback only), lent to this
//! task alone from a pool (`netpool`). The mount namespace starts as a copy of the zygote's
//! template: a read-only tmpfs root with read-only binds of the system directories, a minimal
//! `/dev` and masks over root-only files. Init adds a fresh `/proc`, a private `/tmp`, read-only
//! binds of the manifest directory and the inputs, writable binds of `OUTPUT_DIR` and the
//! scratch directory (all at their host paths, copied by the zygote from the host's view), covers
//! the store directory, starts a session, drops every capability, sets `no_new_privs`, enforces
//! landlock with the same allow-list and applies the rlimits, then vforks the script and reaps
//! until it exits. Killing init (timeout, cancel) or grit itself (PDEATHSIG) kills the whole
//! namespace.
//!
//! # Why this process layout
//! It is the cheapest one measured (BENCHMARKS.md, docs/sandbox-bench.md). Building ~30 mounts,
//! pivoting and detaching the host's tree for every task, then tearing it down, was most of the
//! sandbox's price; a copy of a prepared template costs a fraction of it. The zygote is a small
//! single-threaded process (only such a process may switch mount namespaces), so cloning from it
//! copies few page tables; `CLONE_PARENT` makes init grit's direct child, and the script is
//! vforked from init. grit itself never looks up a path under `OUTPUT_DIR`: that may be grit's
//! own FUSE mount, and a grit thread waiting on its own filesystem cannot be killed; the zygote
//! (a separate process) and init do.
//!
//! A setup step the kernel refuses makes the task exit with [`SETUP_FAILED_EXIT`] after a
//! message on its stderr that names the step and the opt-outs; it never degrades silently.
//!
//! # Process-wide state, and why each piece is safe
//! A [`Sandbox`] owns its zygote; two sandboxes in one process are independent. What remains
//! process-wide holds no run's state:
//! - facts about the kernel, read once (`preflight`: the landlock ABI and whether user
//!   namespaces are on; `last_cap`), and a flag that warns once per process about a partial
//!   landlock; the kernel's answers do not change while grit runs;
//! - the thread that parents every zygote (`client`), which must outlive every task it parents;
//! - the pids cgroups' names and their sweep (`cgroup`), which are per process by nature;
//! - the `.init_array` entry that turns a process started with `GRIT_SANDBOX_ZYGOTE` into the
//!   zygote before `main` (`zygote`): it does nothing in grit itself (the variable is set only
//!   on the zygote's command), and the signal dispositions it resets are the zygote's own.

mod cgroup;
mod child;
mod client;
pub mod hints;
mod netpool;
mod plan;
pub mod policy;
pub mod probe;
mod rootfs;
mod seccomp;
mod wire;
mod zygote;

#[cfg(test)]
mod tests;

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use landlock::{Access, AccessFs, Ruleset, RulesetAttr, Scope};

// Used by the executor's callers and by `grit doctor`, which the lead wires.
#[allow(unused_imports)]
pub use child::SETUP_FAILED_EXIT;
pub use client::ZygotePids;
pub use policy::{Policy, SandboxMode};
#[allow(unused_imports)]
pub use probe::{Feature, Probe, probe};

use plan::Grant;

/// The newest landlock ABI grit was written and tested against.
const TARGET_ABI: landlock::ABI = landlock::ABI::V6;

/// The host paths of one task, handed over by the executor.
#[derive(Debug, Clone, Copy)]
pub struct SandboxRequest<'a> {
    /// The manifest directory: the working directory, visible read-only.
    pub cwd: &'a Path,
    /// An object file inside the store: visible read-only at the same path.
    pub input_file: Option<&'a Path>,
    /// A gather step's input directory: visible read-only at the same path.
    pub input_dir: Option<&'a Path>,
    /// Writable at the same path (a plain directory or a FUSE capture directory).
    pub output_dir: &'a Path,
    /// Writable at the same path; `TMPDIR` and `HOME` point here.
    pub scratch_dir: &'a Path,
    /// The store (`<db>`): hidden except for the paths above.
    pub store_dir: &'a Path,
    pub policy: &'a Policy,
    /// The root filesystem of the step's image: it replaces the host's system directories.
    pub image: Option<&'a Path>,
}

/// Why a sandboxed spawn could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the sandbox needs {feature}, which this machine does not offer ({detail}); run the step \
         without the sandbox: set `sandbox = \"off\"` on the step, or use `grit run --no-sandbox`"
    )]
    Unsupported {
        feature: &'static str,
        detail: String,
    },
    #[error("sandbox {what} {}: {reason}", path.display())]
    BadPath {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot build the landlock ruleset: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error(
        "the sandbox could not start the task ({step}: {detail}); if this persists, run the step \
         without the sandbox: set `sandbox = \"off\"` on the step, or use `grit run --no-sandbox`"
    )]
    Failed { step: String, detail: String },
    /// The zygote refused the task; the message is one of the errors above, rendered there.
    #[error("{0}")]
    Refused(String),
}

/// Landlock filesystem access bits (linux/landlock.h).
mod access {
    pub const EXECUTE: u64 = 1;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;

    /// The filesystem rights a ruleset handles on a kernel with landlock `abi`, capped at the
    /// ABI grit targets (V6 adds no filesystem right over V5).
    pub fn handled(abi: u32) -> u64 {
        let mut mask = (1 << 13) - 1;
        if abi >= 2 {
            mask |= REFER;
        }
        if abi >= 3 {
            mask |= TRUNCATE;
        }
        if abi >= 5 {
            mask |= IOCTL_DEV;
        }
        mask
    }
}

/// The kernel's landlock ABI version, or the errno explaining why there is none.
pub(crate) fn landlock_abi() -> Result<u32, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute pointer and creates no descriptor.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(v as u32)
    }
}

fn last_cap() -> u32 {
    static LAST: OnceLock<u32> = OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63)
    })
}

/// Fails closed when a required kernel feature is missing; warns once about partial landlock.
/// Checked once per process (the kernel's answer does not change; should user namespaces be
/// switched off later, the clone fails with its own message).
fn preflight() -> Result<u32, SandboxError> {
    static CHECKED: OnceLock<(Result<u32, i32>, bool)> = OnceLock::new();
    let (abi, userns_off) = CHECKED.get_or_init(|| {
        let off = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .is_ok_and(|n| n.trim() == "0");
        (landlock_abi(), off)
    });
    let abi = (*abi).map_err(|e| SandboxError::Unsupported {
        feature: "landlock (Linux 5.13 or later, enabled in the `lsm=` boot parameter)",
        detail: std::io::Error::from_raw_os_error(e).to_string(),
    })?;
    if *userns_off {
        return Err(SandboxError::Unsupported {
            feature: "user namespaces",
            detail: "user.max_user_namespaces is 0".into(),
        });
    }
    static WARNED: AtomicBool = AtomicBool::new(false);
    if abi < TARGET_ABI as u32 && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            landlock_abi = abi,
            "landlock is only partly enforced on this kernel (ABI {abi} < {}): {}; namespaces \
             still isolate the task",
            TARGET_ABI as u32,
            missing_landlock_features(abi).join(", ")
        );
    }
    Ok(abi)
}

/// Landlock features grit asks for that a kernel with `abi` lacks.
pub(crate) fn missing_landlock_features(abi: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    if abi < 2 {
        v.push("rename/link across directories (ABI 2)");
    }
    if abi < 3 {
        v.push("truncate (ABI 3)");
    }
    if abi < 5 {
        v.push("device ioctl (ABI 5)");
    }
    if abi < 6 {
        v.push("abstract unix socket and signal scoping (ABI 6)");
    }
    v
}

fn cstring(bytes: &[u8]) -> CString {
    // Paths were checked for NUL bytes by plan::check_path; arguments and environment come from
    // TOML strings and the process environment, which cannot hold one either.
    CString::new(bytes).unwrap_or_default()
}

/// Creates the landlock ruleset (rules are added by init, inside the new root).
fn ruleset() -> Result<Option<OwnedFd>, SandboxError> {
    let created = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?;
    Ok(created.into())
}

/// The landlock rights of `grant` on a kernel with landlock `abi`.
fn rights(grant: Grant, abi: u32) -> u64 {
    let handled = access::handled(abi);
    handled
        & match grant {
            Grant::Read => access::EXECUTE | access::READ_FILE | access::READ_DIR,
            Grant::Write => handled,
            Grant::Device => {
                access::READ_FILE | access::WRITE_FILE | access::TRUNCATE | access::IOCTL_DEV
            }
        }
}

fn rlimits(policy: &Policy) -> Vec<(libc::__rlimit_resource_t, libc::rlimit)> {
    let same = |n: u64| libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    let mut v = Vec::new();
    if let Some(m) = policy.memory {
        v.push((libc::RLIMIT_AS, same(m)));
    }
    if let Some(p) = policy.processes {
        // Init counts against the same user count. (For root, the kernel ignores this limit:
        // see cgroup.rs.)
        v.push((libc::RLIMIT_NPROC, same(p.saturating_add(1))));
    }
    if let Some(n) = policy.open_files {
        v.push((libc::RLIMIT_NOFILE, same(n)));
    }
    if let Some(c) = policy.cpu {
        let secs = c.as_secs() + u64::from(c.subsec_nanos() > 0);
        let secs = secs.max(1);
        v.push((
            libc::RLIMIT_CPU,
            libc::rlimit {
                rlim_cur: secs,
                rlim_max: secs + 1,
            },
        ));
    }
    v
}

/// Test hook: with `GRIT_TEST_ADMIT_DELAY_MS=<n>` in the environment, grit waits `n` ms between
/// the zygote's answer and the admission of the task's init, as a loaded machine may, so that
/// `tests/sandbox_escape.rs` can check that the admission never depends on winning a race with
/// init's setup. Only that test sets it.
fn admission_test_delay() {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("GRIT_TEST_ADMIT_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
    });
    if let Some(ms) = delay {
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}

/// The program a sandboxed task runs.
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    /// The executable: a path, or a name looked up in the `PATH` of `env` inside the sandbox,
    /// as `execvp` would (a host directory the sandbox does not show is skipped).
    pub name: &'a OsStr,
    /// The arguments, `argv[0]` included.
    pub args: &'a [OsString],
    /// The complete environment.
    pub env: &'a [(OsString, OsString)],
    /// stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
}

/// The paths `execve` tries for the program `name`, in order (`execvp`'s search in the `PATH`
/// of `env`).
fn candidates(name: &OsStr, env: &[(OsString, OsString)]) -> Vec<CString> {
    let name = name.as_bytes();
    if name.contains(&b'/') {
        return vec![cstring(name)];
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_bytes())
        .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    path.split(|b| *b == b':')
        .map(|dir| {
            // An empty entry means the working directory, as in execvp.
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(name);
            cstring(&full)
        })
        .collect()
}

/// `struct clone_args` (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const P_PIDFD: libc::idtype_t = 3;

/// The sandbox of one executor: it owns the zygote (`zygote.rs`) that clones every task's init,
/// started at the first spawn and ended by [`Sandbox::shutdown`] or when the sandbox is dropped.
/// Two sandboxes in one process (two runs, one after the other or at once) have a zygote each.
#[derive(Default)]
pub struct Sandbox {
    zygote: client::ZygoteSlot,
}

impl Sandbox {
    /// A sandbox with no zygote yet (the first spawn starts it).
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    /// Spawns `program` inside the sandbox described by `req`. The caller must not use
    /// `sandbox = "off"` here (that is a plain spawn). The task's init is a child of grit.
    pub fn spawn(
        &self,
        req: &SandboxRequest<'_>,
        program: &Program<'_>,
    ) -> Result<Sandboxed, SandboxError> {
        self.spawn_admitting(req, program, &mut |_| {})
    }

    /// [`Sandbox::spawn`], calling `admit` with the pid of the task's init after its namespaces
    /// exist and before its script runs (the output capture learns there which processes are
    /// the task's).
    pub fn spawn_admitting(
        &self,
        req: &SandboxRequest<'_>,
        program: &Program<'_>,
        admit: &mut dyn FnMut(i32),
    ) -> Result<Sandboxed, SandboxError> {
        let mut task = self.prepare(req, program, admit)?;
        task.start();
        Ok(task)
    }

    /// [`Sandbox::spawn_admitting`] up to the script: the task's sandbox is set up, and its
    /// script runs at [`Sandboxed::start`] (never, if the task is dropped before).
    pub fn prepare(
        &self,
        req: &SandboxRequest<'_>,
        program: &Program<'_>,
        admit: &mut dyn FnMut(i32),
    ) -> Result<Sandboxed, SandboxError> {
        preflight()?;
        let policy = req.policy;
        let os = |p: &Path| p.as_os_str().to_os_string();
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // The limit counts init too.
        // The window stays open until init is cloned into the cgroup (see cgroup.rs).
        let (cgroup, _window) = match policy.processes {
            Some(p) if root => {
                let (join, window) = cgroup::create(p.saturating_add(1))?;
                (Some(join), Some(window))
            }
            _ => (None, None),
        };
        let order = wire::Order {
            cwd: os(req.cwd),
            input_file: req.input_file.map(os),
            input_dir: req.input_dir.map(os),
            output_dir: os(req.output_dir),
            scratch_dir: os(req.scratch_dir),
            store_dir: os(req.store_dir),
            read_only: policy.read_only.iter().map(|p| os(p)).collect(),
            read_write: policy.read_write.iter().map(|p| os(p)).collect(),
            tmp_size: policy.memory,
            network: policy.network,
            rlimits: rlimits(policy)
                .into_iter()
                .map(|(resource, l)| (resource, l.rlim_cur, l.rlim_max))
                .collect(),
            program: program.name.to_os_string(),
            args: program.args.to_vec(),
            env: program.env.to_vec(),
            cgroup: match &cgroup {
                None => wire::CgroupJoin::None,
                Some(cgroup::Join::Clone(_)) => wire::CgroupJoin::Clone,
                Some(cgroup::Join::Procs(_)) => wire::CgroupJoin::Procs,
            },
            image: req.image.map(os),
        };
        let mut fds: Vec<BorrowedFd<'_>> = program.stdio.to_vec();
        if let Some(cgroup::Join::Clone(fd) | cgroup::Join::Procs(fd)) = &cgroup {
            fds.push(fd.as_fd());
        }
        let spawned = self.zygote.spawn(&order, &fds)?;
        // cgroup v1: init joins by a write of its own, which may come after this spawn's window
        // closes and a sweep removed the still-empty cgroup. Put init in it now, inside the
        // window (init creates no process before the go byte).
        if let Some(cgroup::Join::Procs(procs)) = &cgroup
            && let Err(e) = nix::unistd::write(procs, spawned.pid.to_string().as_bytes())
        {
            drop(Sandboxed {
                pid: spawned.pid,
                pidfd: Some(spawned.pidfd),
                go: None,
                done: None,
                status: None,
            });
            return Err(SandboxError::Failed {
                step: "put the task's init in its pids cgroup".into(),
                detail: e.to_string(),
            });
        }
        admission_test_delay();
        admit(spawned.pid);
        // Non-blocking, for `Sandboxed::wait`'s readiness loop.
        let done = nix::fcntl::fcntl(
            &spawned.done,
            nix::fcntl::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .is_ok()
        .then_some(spawned.done);
        Ok(Sandboxed {
            pid: spawned.pid,
            pidfd: Some(spawned.pidfd),
            go: Some(spawned.go),
            done,
            status: None,
        })
    }

    /// Ends the zygote now (a later spawn starts a new one); running tasks are not affected. A
    /// run calls it before its output capture unmounts: the zygote's copy of the host's mounts
    /// would otherwise keep a FUSE capture referenced.
    pub fn shutdown(&self) {
        self.zygote.shutdown();
        cgroup::sweep_own();
    }

    /// The pids of this sandbox's zygote and its twin while they run, for the output capture:
    /// the zygote looks up a task's `OUTPUT_DIR` to copy it into the task's mount namespace.
    pub fn zygote_pids(&self) -> std::sync::Arc<ZygotePids> {
        self.zygote.pids()
    }

    /// The pids of the running zygote and its twin, if any.
    #[cfg(test)]
    pub(crate) fn running_zygote(&self) -> Vec<i32> {
        self.zygote.zygote_pids()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.zygote.shutdown();
    }
}

/// A running sandboxed task: its init, a direct child of grit, held through a pidfd (so it is
/// never confused with a later process of the same pid).
///
/// Its end is known at the first of two signs: init's report on the done pipe, written once the
/// script has exited and nothing else of the task is left (init then exits, and the reaper
/// thread collects it), or, if init ended any other way (killed, or a failed setup), its exit.
#[derive(Debug)]
pub struct Sandboxed {
    pid: i32,
    /// `None` once handed to the reaper thread.
    pidfd: Option<OwnedFd>,
    /// The go pipe's write end, until [`Sandboxed::start`].
    go: Option<OwnedFd>,
    /// The done pipe's read end (non-blocking), until a wait takes it.
    done: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

/// What one read of the done pipe found.
enum Report {
    /// The script's exit code: nothing of the task is left but init.
    Code(i32),
    /// Nothing yet.
    Pending,
    /// End of file or an error: init ended without reporting; its exit status tells.
    None,
}

fn read_report(done: &OwnedFd) -> Report {
    let mut bytes = [0u8; 4];
    match nix::unistd::read(done, &mut bytes) {
        // A 4-byte write to a pipe is atomic: it arrives whole or not at all.
        Ok(4) => Report::Code(i32::from_le_bytes(bytes)),
        Err(nix::errno::Errno::EAGAIN) => Report::Pending,
        Err(nix::errno::Errno::EINTR) => Report::Pending,
        Ok(_) | Err(_) => Report::None,
    }
}

impl Sandboxed {
    /// Host pid of the task's init; also the id of its process group and session.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the script run. grit holds the pidfd and the task is admitted by now. (Init may
    /// already be gone; then the write fails and the exit status tells what happened.)
    pub fn start(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = nix::unistd::write(&go, b"1");
        }
    }

    /// Waits for the task to end without blocking the runtime.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        // Taken: a wait dropped half-way (a timeout) leaves the next one to the pidfd.
        if let Some(done) = self.done.take() {
            // SAFETY: `done` is owned here and outlives `registered`, which is dropped first.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    done.as_raw_fd(),
                    tokio::io::Interest::READABLE,
                )?
            };
            let code = loop {
                let mut ready = registered.readable().await?;
                match read_report(&done) {
                    Report::Code(code) => break Some(code),
                    Report::Pending => ready.clear_ready(),
                    Report::None => break None,
                }
            };
            drop(registered);
            if let Some(code) = code {
                return Ok(self.reported(code));
            }
        }
        let Some(pidfd) = &self.pidfd else {
            return Err(std::io::Error::other(
                "the task's init was already handed on",
            ));
        };
        // SAFETY: the pidfd is owned by `self` and outlives `ready`, which is dropped below.
        let ready = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                pidfd.as_raw_fd(),
                tokio::io::Interest::READABLE,
            )?
        };
        // A pidfd turns readable once the process has exited.
        drop(ready.readable().await?);
        drop(ready);
        self.reap()
    }

    /// Waits for the task to end, blocking this thread.
    pub fn wait_blocking(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if let Some(done) = self.done.take() {
            loop {
                let mut p = libc::pollfd {
                    fd: done.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one valid descriptor.
                unsafe { libc::poll(&mut p, 1, -1) };
                match read_report(&done) {
                    Report::Code(code) => return Ok(self.reported(code)),
                    Report::Pending => continue,
                    Report::None => break,
                }
            }
        }
        self.reap()
    }

    /// Records init's report and hands init to the reaper thread, which collects it once the
    /// kernel has torn its namespaces down.
    fn reported(&mut self, code: i32) -> ExitStatus {
        let status = ExitStatus::from_raw((code & 0xff) << 8);
        self.status = Some(status);
        if let Some(pidfd) = self.pidfd.take() {
            reap_later(pidfd);
        }
        status
    }

    /// SIGKILLs init, which ends every process of the task.
    pub fn kill(&self) {
        if let (None, Some(pidfd)) = (self.status, &self.pidfd) {
            // SAFETY: pidfd_send_signal on our own pidfd; an exited process only returns ESRCH.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }

    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        let Some(pidfd) = &self.pidfd else {
            return Err(std::io::Error::other(
                "the task's init was already handed on",
            ));
        };
        let info = wait_exited(pidfd)?;
        // SAFETY: waitid filled in a SIGCHLD siginfo, whose status field is valid.
        let (code, value) = unsafe { (info.si_code, info.si_status()) };
        let raw = match code {
            libc::CLD_EXITED => (value & 0xff) << 8,
            libc::CLD_DUMPED => value | 0x80,
            _ => value,
        };
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(status)
    }
}

/// Blocks until the child behind `pidfd` has exited, and collects it.
fn wait_exited(pidfd: &OwnedFd) -> std::io::Result<libc::siginfo_t> {
    // SAFETY: waitid on our own child's pidfd with a zeroed siginfo to fill in.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            if libc::waitid(
                P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            ) == 0
            {
                return Ok(info);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Collects inits that reported their task's end, on one thread for the whole process: their
/// exits (the namespaces' teardown) take a few hundred microseconds that no task needs to wait
/// for. Inits report in about the order they exit, so one blocking wait after another keeps up.
fn reap_later(pidfd: OwnedFd) {
    static REAPER: OnceLock<Option<std::sync::mpsc::Sender<OwnedFd>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (send, receive) = std::sync::mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("grit-reaper".into())
            .spawn(move || {
                for pidfd in receive {
                    let _ = wait_exited(&pidfd);
                }
            })
            .ok()
            .map(|_| send)
    });
    // Without the thread (it could not start), collect it here.
    let unsent = match reaper {
        Some(send) => send.send(pidfd).err().map(|e| e.0),
        None => Some(pidfd),
    };
    if let Some(pidfd) = unsent {
        let _ = wait_exited(&pidfd);
    }
}

impl Drop for Sandboxed {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.reap();
        }
    }
}
