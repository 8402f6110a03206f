//! The per-task sandbox (DESIGN §4): turns a step's [`Policy`] and a task's paths into a
//! `pre_exec` hook that isolates the task before its shell is exec'd.
//!
//! # Layout
//! - [`policy`]: the policy data type (what a step may do).
//! - `plan`: the private mount tree and the landlock allow-list, planned in the parent.
//! - `child`: the raw-syscall code that runs between fork and exec.
//! - `netpool`: the private network namespaces, created ahead and leased one task at a time.
//! - [`probe`]: what this machine offers, for `grit doctor`.
//!
//! # What a sandboxed task gets
//! The executor spawns the intermediate process; unless `network = true` it joins a private
//! network namespace (loopback only) leased to this task alone from a pool (`netpool`), then it
//! unshares user (own uid/gid mapped to themselves), mount, pid, ipc and uts namespaces, and forks
//! pid 1 of the new pid namespace. Pid 1 builds a tmpfs root holding read-only binds of the
//! system directories, the manifest directory and the inputs, writable binds of `OUTPUT_DIR`
//! and the scratch directory (all at their host paths), a private `/tmp`, a minimal `/dev` and a
//! fresh `/proc`; it covers the store directory, pivots, starts a session,
//! drops every capability, sets `no_new_privs`, enforces landlock with the same allow-list and
//! applies the rlimits, then forks the script and reaps until it exits. Killing the intermediate
//! (timeout, cancel) or grit itself (PDEATHSIG) makes pid 1 kill and reap the whole namespace.
//!
//! A setup step the kernel refuses makes the task exit with [`SETUP_FAILED_EXIT`] after a
//! message on its stderr that names the step and the opt-outs; it never degrades silently.

mod cgroup;
mod child;
mod netpool;
mod plan;
pub mod policy;
pub mod probe;

#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use landlock::{
    Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, path_beneath_rules,
};

// Used by the executor's callers and by `grit doctor`, which the lead wires.
#[allow(unused_imports)]
pub use child::SETUP_FAILED_EXIT;
pub use policy::{Policy, SandboxMode};
#[allow(unused_imports)]
pub use probe::{Feature, Probe, probe};

use plan::{Grant, HostLayout, STAGING, TaskPaths};

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
}

/// Landlock filesystem access bits (linux/landlock.h).
mod access {
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

fn host_layout() -> &'static HostLayout {
    static LAYOUT: OnceLock<HostLayout> = OnceLock::new();
    // SAFETY: geteuid cannot fail.
    LAYOUT.get_or_init(|| HostLayout::read(unsafe { libc::geteuid() } == 0))
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
fn preflight() -> Result<u32, SandboxError> {
    let abi = landlock_abi().map_err(|e| SandboxError::Unsupported {
        feature: "landlock (Linux 5.13 or later, enabled in the `lsm=` boot parameter)",
        detail: std::io::Error::from_raw_os_error(e).to_string(),
    })?;
    if let Ok(n) = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        && n.trim() == "0"
    {
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

fn cstring(path: &Path) -> CString {
    // plan::check_path rejected NUL bytes already.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// Builds the landlock ruleset on the host paths; the child adds its own /proc and /tmp.
fn ruleset(grants: &[(PathBuf, Grant)]) -> Result<Option<OwnedFd>, SandboxError> {
    let abi = TARGET_ABI;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?;
    for (kind, rights) in [
        (Grant::Read, AccessFs::from_read(abi)),
        (Grant::Write, AccessFs::from_all(abi)),
        (Grant::Device, device),
    ] {
        let paths = grants.iter().filter(|(_, g)| *g == kind).map(|(p, _)| p);
        created = created.add_rules(path_beneath_rules(paths, rights))?;
    }
    Ok(created.into())
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
        // The intermediate and pid 1 count against the same per-namespace user count. (For
        // root, the kernel ignores this limit: see cgroup.rs.)
        v.push((libc::RLIMIT_NPROC, same(p.saturating_add(2))));
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

/// Prepares everything the child needs, in the parent.
fn prepare(req: &SandboxRequest<'_>) -> Result<child::ChildSetup, SandboxError> {
    let abi = preflight()?;
    let policy = req.policy;
    let task = TaskPaths {
        cwd: req.cwd,
        input_file: req.input_file,
        input_dir: req.input_dir,
        output_dir: req.output_dir,
        scratch_dir: req.scratch_dir,
        store_dir: req.store_dir,
        read_only: &policy.read_only,
        read_write: &policy.read_write,
        tmp_size: policy.memory,
    };
    let plan = plan::plan(host_layout(), &task)?;
    let ruleset = ruleset(&plan.grants)?;
    let inner_rules = vec![
        (
            CString::from(c"/proc"),
            access::READ_FILE | access::READ_DIR,
        ),
        (CString::from(c"/tmp"), access::handled(abi)),
        (CString::from(c"/"), access::READ_DIR),
    ];
    // SAFETY: these getters cannot fail.
    let (uid, gid, pid) = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid()) };
    let cgroup_procs = match policy.processes {
        Some(p) if uid == 0 => Some(cgroup::create(p.saturating_add(2))?),
        _ => None,
    };
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // A private network namespace from the pool instead of a new one per task (netpool.rs).
    let netns = if policy.network {
        None
    } else {
        Some(netpool::acquire()?)
    };
    Ok(child::ChildSetup {
        grit_pid: pid,
        unshare_flags: flags,
        uid_map: CString::new(format!("{uid} {uid} 1")).unwrap_or_default(),
        gid_map: CString::new(format!("{gid} {gid} 1")).unwrap_or_default(),
        ops: plan.ops,
        staging: CString::from(c"/proc"),
        cwd: cstring(req.cwd),
        netns,
        ruleset,
        inner_rules,
        rlimits: rlimits(policy),
        last_cap: last_cap(),
        cgroup_procs,
        detach_stack: (0..child::DETACH_STACK_WORDS)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        detach_slot: std::sync::atomic::AtomicI64::new(child::PENDING),
    })
}

/// Makes `cmd` spawn its program inside the sandbox described by `req`. A no-op when the policy
/// says `sandbox = "off"`. Spawn from a thread that outlives the task (the runtime's main
/// thread): the task is killed when that thread exits.
pub fn configure(
    cmd: &mut tokio::process::Command,
    req: &SandboxRequest<'_>,
) -> Result<(), SandboxError> {
    if req.policy.sandbox == SandboxMode::Off {
        return Ok(());
    }
    let setup = prepare(req)?;
    debug_assert_eq!(setup.staging.to_bytes(), STAGING.as_bytes());
    // SAFETY: ChildSetup::run makes only async-signal-safe raw system calls on data prepared
    // here (see child.rs).
    unsafe {
        cmd.pre_exec(move || setup.run());
    }
    Ok(())
}

/// [`configure`] for a `std` command (used by the doctor's end-to-end check).
pub(crate) fn configure_std(
    cmd: &mut std::process::Command,
    req: &SandboxRequest<'_>,
) -> Result<(), SandboxError> {
    use std::os::unix::process::CommandExt;
    if req.policy.sandbox == SandboxMode::Off {
        return Ok(());
    }
    let setup = prepare(req)?;
    // SAFETY: as in `configure`.
    unsafe {
        cmd.pre_exec(move || setup.run());
    }
    Ok(())
}
