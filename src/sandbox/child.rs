//! The code of the task's init, which runs in a child cloned from the zygote: it uses only raw,
//! async-signal-safe system calls on data the zygote prepared (no allocation, no locks, no
//! formatting through std). The zygote also replays its template's mount steps with [`apply`].
//!
//! Process layout (see `mod.rs` for why):
//! ```text
//! zygote ──clone3(user, mount, pid, ipc, uts; parent = grit; pidfd)── init (pid 1 of the task)
//!            maps, the task's mounts on a copy of the template, landlock, caps, rlimits
//!            └─vfork── script: exec of the shell
//! ```
//! grit holds init directly (through a pidfd). Init reaps every orphan; once the script has
//! exited it kills and reaps every process left in the namespace and exits with the script's
//! status. If init dies first (timeout, cancel, or grit's death through PDEATHSIG), the kernel
//! kills the rest of the namespace before init can be reaped, so once grit has reaped init no
//! process of the task is left.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::plan::{MountOp, STAGING};

/// Exit status of the task when the sandbox could not be set up; stderr then says why.
pub const SETUP_FAILED_EXIT: i32 = 125;

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_long = 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Landlock rights that apply to files (the rest only to directories): execute, write, read,
/// truncate, device ioctl.
const FILE_RIGHTS: u64 = 1 | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15);

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Everything init needs, built by the parent before the clone.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// grit's pid, as the template's `/proc` (the host's) shows it: init's parent while grit
    /// lives (`CLONE_PARENT`), so init can tell whether grit died before it could be tied to it.
    /// `None` if the zygote could not read it (then init goes on unchecked).
    pub grit: Option<libc::pid_t>,
    /// Test hook (`GRIT_TEST_INIT_START_DELAY_MS`): how long init waits before tying itself to
    /// grit, which lets a test kill grit in that window. Zero outside tests.
    pub start_delay_ms: u32,
    /// `cgroup.procs` of the task's cgroup v1 pids cgroup (root only), opened for writing by
    /// grit; init joins it before anything else.
    pub cgroup_procs: Option<RawFd>,
    pub uid_map: CString,
    pub gid_map: CString,
    /// The task's mounts on top of the template; `Attach` descriptors are inherited.
    pub ops: Vec<MountOp>,
    /// The zygote's descriptors init needs (sorted): every other one is closed first.
    pub keep_fds: Vec<RawFd>,
    /// Read end of a pipe whose write end grit receives with the task's pidfd and writes one
    /// byte to: a task whose zygote died before answering (so grit starts it again), or whose
    /// grit died, gets end-of-file instead and never runs its script.
    pub go: RawFd,
    /// Write end of a pipe grit holds the read end of: once the script has exited and nothing
    /// of the task is left, init writes the exit code here (4 bytes) before it exits, so grit
    /// can go on while the kernel tears the namespaces down (about 0.3 ms, an RCU grace period
    /// among it). Close-on-exec: the script never holds it.
    pub done: RawFd,
    pub cwd: CString,
    /// The landlock ruleset, without rules yet.
    pub ruleset: Option<OwnedFd>,
    /// Landlock rules, opened by path inside the new root; directory-only rights are dropped
    /// for paths that turn out to be files.
    pub rules: Vec<(CString, u64)>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    pub last_cap: u32,
    /// The script's stdin, stdout and stderr (grit's descriptors, passed to the zygote and
    /// inherited by the clone).
    pub stdio: [RawFd; 3],
    /// The program as named by the step (for messages).
    pub program: CString,
    /// The paths to try `execve` on, in order.
    pub candidates: Vec<CString>,
    /// NULL-terminated pointer arrays into `args` and `env`, which they keep alive.
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
    pub _args: Vec<CString>,
    pub _env: Vec<CString>,
    /// Stack of the vfork'd script until it execs.
    pub script_stack: &'static [AtomicU64],
    /// The script's `execve` errno, or 0.
    pub exec_errno: AtomicI32,
}

/// Size of [`ChildSetup::script_stack`] in 8-byte words (32 KiB): `execve` and a failure path.
const SCRIPT_STACK_WORDS: usize = 4 * 1024;

/// The vfork'd script's stack. One for every task: each init is a copy of the zygote, so each
/// writes its own copy of these pages, and the zygote, which never touches them, neither
/// allocates nor clears a stack per task.
pub(crate) static SCRIPT_STACK: [AtomicU64; SCRIPT_STACK_WORDS] =
    [const { AtomicU64::new(0) }; SCRIPT_STACK_WORDS];

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot; reading it is always valid.
    unsafe { *libc::__errno_location() }
}

fn put(bytes: &[u8]) {
    // SAFETY: write(2) on fd 2 with a valid buffer; a short or failed write only loses a message.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
    }
}

/// Writes `n` in decimal without allocating.
fn put_num(mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&buf[i..]);
}

fn errno_name(e: i32) -> &'static [u8] {
    match e {
        libc::EPERM => b"EPERM (operation not permitted)",
        libc::EACCES => b"EACCES (permission denied)",
        libc::ENOENT => b"ENOENT (no such file or directory)",
        libc::EINVAL => b"EINVAL (invalid argument)",
        libc::ENOSYS => b"ENOSYS (system call not implemented)",
        libc::EOPNOTSUPP => b"EOPNOTSUPP (not supported)",
        libc::ENOSPC => b"ENOSPC (limit reached)",
        libc::EUSERS => b"EUSERS (too many user namespaces)",
        libc::EROFS => b"EROFS (read-only file system)",
        libc::EBUSY => b"EBUSY (busy)",
        libc::ENOTDIR => b"ENOTDIR (not a directory)",
        libc::EAGAIN => b"EAGAIN (resource limit)",
        libc::ENOMEM => b"ENOMEM (out of memory)",
        _ => b"errno",
    }
}

/// Strips the staging prefix so messages show the path as the task sees it.
fn shown(path: &CStr) -> &[u8] {
    let b = path.to_bytes();
    b.strip_prefix(STAGING.as_bytes())
        .filter(|rest| !rest.is_empty())
        .unwrap_or(b)
}

/// Reports a failed setup step on the task's stderr and ends this process.
fn fail(what: &[u8], detail: &[u8], err: i32) -> ! {
    put(b"grit sandbox: cannot ");
    put(what);
    if !detail.is_empty() {
        put(b" ");
        put(detail);
    }
    put(b": ");
    put(errno_name(err));
    put(b" ");
    put_num(err.unsigned_abs() as u64);
    put(
        b"\ngrit sandbox: the task did not run. If this kernel or host lacks the feature, run the \
          step without the sandbox: set `sandbox = \"off\"` on the step, or use \
          `grit run --no-sandbox`.\n",
    );
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(SETUP_FAILED_EXIT) }
}

fn check(rc: libc::c_long, what: &[u8], detail: &[u8]) {
    if rc < 0 {
        fail(what, detail, errno());
    }
}

fn exit_code(status: libc::c_int) -> libc::c_int {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SETUP_FAILED_EXIT
    }
}

fn close_from(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) {
    // SAFETY: close_range only closes descriptors of this process.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, flags);
    }
}

/// Closes every descriptor but those in `keep`, which must be sorted; negative entries are
/// ignored.
fn close_all_but(keep: &[libc::c_int]) {
    let mut next: libc::c_uint = 0;
    for &k in keep {
        if k < 0 || (k as libc::c_uint) < next {
            continue;
        }
        let k = k as libc::c_uint;
        if k > next {
            close_from(next, k - 1, 0);
        }
        next = k + 1;
    }
    close_from(next, libc::c_uint::MAX, 0);
}

/// Writes `text` to a /proc file, failing the setup with `what` on error.
fn write_proc(path: &CStr, text: &[u8], what: &[u8]) {
    // SAFETY: raw open/write/close on a NUL-terminated path and a valid buffer.
    if let Err(e) = unsafe { super::netpool::write_file(path, text) } {
        fail(what, path.to_bytes(), e);
    }
}

/// `mount_setattr` on `path` relative to `dir` (`AT_FDCWD`, or a detached tree with an empty
/// path and `AT_EMPTY_PATH`).
pub(crate) fn mount_setattr_at(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_uint,
    set: u64,
) -> libc::c_long {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr with a valid path and an attribute struct of the declared size.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

fn mount_setattr(path: &CStr, flags: libc::c_uint, set: u64) -> libc::c_long {
    mount_setattr_at(libc::AT_FDCWD, path, flags, set)
}

/// A mount step that failed: what was attempted, on which path, and the errno.
#[derive(Debug)]
pub(crate) struct StepFailed<'a> {
    pub what: &'static [u8],
    pub path: &'a [u8],
    pub errno: i32,
}

/// Runs one mount step with raw system calls (init's and the zygote's template build).
pub(crate) fn apply(op: &MountOp) -> Result<(), StepFailed<'_>> {
    let null = std::ptr::null::<libc::c_char>();
    fn step<'a>(
        rc: libc::c_long,
        what: &'static [u8],
        path: &'a CStr,
    ) -> Result<(), StepFailed<'a>> {
        if rc < 0 {
            Err(StepFailed {
                what,
                path: shown(path),
                errno: errno(),
            })
        } else {
            Ok(())
        }
    }
    // SAFETY: each call passes NUL-terminated strings prepared by the parent, or null where the
    // kernel allows it.
    unsafe {
        match op {
            MountOp::Mkdir(p) => {
                if libc::mkdir(p.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                    return step(-1, b"create mountpoint", p);
                }
                Ok(())
            }
            MountOp::Touch(p) => {
                let fd = libc::open(
                    p.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY | libc::O_CLOEXEC,
                    0o444,
                );
                if fd >= 0 {
                    libc::close(fd);
                } else if errno() != libc::EEXIST {
                    return step(-1, b"create mountpoint", p);
                }
                Ok(())
            }
            MountOp::Symlink { target, link } => {
                if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 && errno() != libc::EEXIST {
                    return step(-1, b"create symlink", link);
                }
                Ok(())
            }
            // Template binds (a task's binds arrive as `Attach` copies made by the zygote).
            MountOp::BindRo { src, dst } | MountOp::BindRw { src, dst } => {
                let rc = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                );
                step(rc.into(), b"bind-mount", dst)?;
                if matches!(op, MountOp::BindRw { .. }) {
                    return Ok(());
                }
                let rc = mount_setattr(
                    dst,
                    libc::AT_RECURSIVE as libc::c_uint,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                );
                step(rc, b"make read-only (mount_setattr)", dst)
            }
            MountOp::BindDev { src, dst } => {
                let rc = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                );
                step(rc.into(), b"bind-mount device", dst)?;
                // Read-only: the node's own mode and times are the host's, and a task running
                // as the node's owner (root) could otherwise chmod or touch it, host-wide. Reads
                // and writes of a device node do not count as writes to its filesystem.
                step(
                    mount_setattr(dst, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID),
                    b"make a device read-only",
                    dst,
                )
            }
            MountOp::Attach { fd, dst } => {
                let rc = libc::syscall(
                    libc::SYS_move_mount,
                    *fd,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    dst.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                );
                libc::close(*fd);
                step(rc, b"bind-mount (move_mount)", dst)
            }
            MountOp::Tmpfs { dst, flags, data } => {
                let rc = libc::mount(
                    c"tmpfs".as_ptr(),
                    dst.as_ptr(),
                    c"tmpfs".as_ptr(),
                    *flags,
                    data.as_ptr().cast(),
                );
                step(rc.into(), b"mount tmpfs on", dst)
            }
            MountOp::Proc { dst } => {
                let rc = libc::mount(
                    c"proc".as_ptr(),
                    dst.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                );
                step(rc.into(), b"mount a fresh /proc (pid namespace) on", dst)
            }
            MountOp::SetReadOnly(p) => {
                step(mount_setattr(p, 0, MOUNT_ATTR_RDONLY), b"make read-only", p)
            }
            MountOp::Overlay {
                lower,
                upper,
                work,
                dst,
            } => {
                // Built on the stack: init may not allocate.
                let mut data = [0u8; 256];
                let mut len = 0;
                for part in [
                    b"lowerdir=".as_slice(),
                    lower.to_bytes(),
                    b",upperdir=",
                    upper.to_bytes(),
                    b",workdir=",
                    work.to_bytes(),
                ] {
                    if len + part.len() >= data.len() {
                        return step(-1, b"build the overlay options for", dst);
                    }
                    data[len..len + part.len()].copy_from_slice(part);
                    len += part.len();
                }
                let rc = libc::mount(
                    c"overlay".as_ptr(),
                    dst.as_ptr(),
                    c"overlay".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                );
                step(
                    rc.into(),
                    b"mount the image (overlayfs in a user namespace, Linux 5.11 or later) on",
                    dst,
                )
            }
            MountOp::PivotRoot(dst) => {
                if libc::chdir(dst.as_ptr()) != 0 {
                    return step(-1, b"enter the image root", dst);
                }
                let rc = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
                step(rc, b"pivot into the image root", dst)?;
                let rc = libc::umount2(c".".as_ptr(), libc::MNT_DETACH);
                step(rc.into(), b"detach the template from", dst)?;
                step(libc::chdir(c"/".as_ptr()).into(), b"enter", c"/")
            }
        }
    }
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn drop_privileges(setup: &ChildSetup) {
    // SAFETY: prctl/capset/landlock syscalls on this process only, with valid arguments.
    unsafe {
        for cap in 0..=setup.last_cap {
            // Needs CAP_SETPCAP, which this process holds in its own user namespace.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                && errno() != libc::EINVAL
            {
                fail(b"drop the capability bounding set", b"", errno());
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(b"clear ambient capabilities", b"", errno());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(b"set no_new_privs", b"", errno());
        }
        if let Some(ruleset) = &setup.ruleset {
            let rfd = ruleset.as_raw_fd();
            for (path, access) in &setup.rules {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    fail(b"open for a landlock rule", path.to_bytes(), errno());
                }
                let mut st: libc::stat = std::mem::zeroed();
                if libc::fstat(fd, &mut st) != 0 {
                    fail(b"stat for a landlock rule", path.to_bytes(), errno());
                }
                let allowed = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    *access
                } else {
                    *access & FILE_RIGHTS
                };
                let attr = PathBeneathAttr {
                    allowed_access: allowed,
                    parent_fd: fd,
                };
                let rc = libc::syscall(
                    libc::SYS_landlock_add_rule,
                    rfd,
                    LANDLOCK_RULE_PATH_BENEATH,
                    &attr as *const PathBeneathAttr,
                    0,
                );
                let e = errno();
                libc::close(fd);
                if rc != 0 {
                    fail(b"add a landlock rule for", path.to_bytes(), e);
                }
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, rfd, 0) != 0 {
                fail(b"enforce landlock", b"", errno());
            }
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0 {
            fail(b"drop capabilities", b"", errno());
        }
    }
}

impl ChildSetup {
    /// Init's body, in the child of `clone3`: sets up the sandbox, runs the script and reaps.
    /// Never returns.
    pub(crate) fn init_main(&self) -> ! {
        // SAFETY: raw system calls in this freshly cloned process, on data prepared before.
        unsafe {
            // The script's stdio first, so that every failure below reaches the task's log.
            let mut high = [-1; 3];
            for (i, fd) in self.stdio.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    libc::_exit(SETUP_FAILED_EXIT);
                }
            }
            for (i, fd) in high.iter().enumerate() {
                if libc::dup2(*fd, i as libc::c_int) < 0 {
                    libc::_exit(SETUP_FAILED_EXIT);
                }
            }
            if self.start_delay_ms > 0 {
                let pause = libc::timespec {
                    tv_sec: (self.start_delay_ms / 1000) as libc::time_t,
                    tv_nsec: (self.start_delay_ms % 1000) as libc::c_long * 1_000_000,
                };
                libc::nanosleep(&pause, std::ptr::null_mut());
            }
            // PDEATHSIG follows the parent thread: with CLONE_PARENT, grit's sandbox thread
            // (client.rs), which lives as long as grit.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                fail(b"set the parent-death signal", b"", errno());
            }
            // Should grit have died before the line above took effect, no signal will come, and
            // its go byte may already wait in the pipe (grit writes it once it holds the pidfd,
            // which can be before this process first runs): a script started now would outlive
            // grit. grit is still this process's parent exactly when it has not died yet; once
            // it has, the kernel has given this process another parent. (`getppid` cannot tell:
            // in the task's pid namespace it is 0 either way.)
            if self.grit.is_some() && parent_pid() != self.grit {
                put(b"grit sandbox: grit ended before the task started; not run\n");
                libc::_exit(SETUP_FAILED_EXIT);
            }
            // The zygote installs no signal handler, so init runs with default dispositions: as
            // pid 1 of its namespace it ignores every signal but SIGKILL from outside, and the
            // script starts with the zygote's (empty) mask.
            //
            // Nothing of the zygote's stays open past this point but what init needs: above all
            // not the pidfds of other tasks or the pool's namespaces.
            close_all_but(&self.keep_fds);

            if let Some(procs) = self.cgroup_procs {
                let n = libc::write(procs, b"0".as_ptr().cast(), 1);
                if n != 1 {
                    fail(b"join the pids cgroup", b"", errno());
                }
                libc::close(procs);
            }
            write_proc(c"/proc/self/setgroups", b"deny", b"write");
            write_proc(c"/proc/self/uid_map", self.uid_map.to_bytes(), b"write");
            write_proc(c"/proc/self/gid_map", self.gid_map.to_bytes(), b"write");

            // The task starts in a copy of the template's mount tree. Nothing mounted here can
            // propagate out: every shared mount became a slave when the zygote made its user
            // namespace (a mount namespace made with a user namespace is less privileged).
            for op in &self.ops {
                if let Err(e) = apply(op) {
                    fail(e.what, e.path, e.errno);
                }
            }
            check(
                libc::chdir(self.cwd.as_ptr()).into(),
                b"enter the working directory",
                self.cwd.to_bytes(),
            );
            // No nested user namespaces: they would hand the script a fresh set of capabilities
            // (still under landlock and no_new_privs, but there is no need to allow it).
            write_proc(c"/proc/sys/user/max_user_namespaces", b"0", b"write");
            let host = b"grit";
            check(
                libc::sethostname(host.as_ptr().cast(), host.len()).into(),
                b"set the hostname (uts namespace)",
                b"",
            );
            check(libc::setsid().into(), b"start a new session", b"");
            let mut byte = 0u8;
            if libc::read(self.go, (&mut byte as *mut u8).cast(), 1) != 1 {
                put(b"grit sandbox: grit or its zygote ended before the task was confirmed; not run\n");
                libc::_exit(SETUP_FAILED_EXIT);
            }
            // The script must not ptrace init (its reaper); exec makes the script dumpable again.
            // Only after the go: grit reads init's pid namespace from /proc (to admit the task's
            // processes to OUTPUT_DIR) before it sends the go, and a non-dumpable process hides
            // that from a grit without CAP_SYS_PTRACE, so done earlier it raced with grit.
            check(
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0).into(),
                b"make init non-dumpable",
                b"",
            );
            drop_privileges(self);
            // Nothing but stdio reaches the script (the ruleset and any attach leftovers); init
            // keeps `done`, which is close-on-exec.
            close_all_but(&[0, 1, 2, self.done]);
            // Last, so a low open-files limit cannot break the setup above.
            for (resource, limit) in &self.rlimits {
                check(
                    libc::setrlimit(*resource, limit).into(),
                    b"set a resource limit",
                    b"",
                );
            }

            // vfork: the script shares init's memory until it execs, so no page table is copied.
            let top = self.script_stack.as_ptr().add(self.script_stack.len()) as usize & !15;
            let script = libc::clone(
                script_main,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                self as *const ChildSetup as *mut libc::c_void,
            );
            if script < 0 {
                fail(b"start the script", b"", errno());
            }
            let exec_errno = self.exec_errno.load(Ordering::Acquire);
            if exec_errno != 0 {
                put(b"grit sandbox: cannot run ");
                put(self.program.to_bytes());
                put(b": ");
                put(errno_name(exec_errno));
                put(b" ");
                put_num(exec_errno.unsigned_abs() as u64);
                put(b"\n");
            }
            let code = reap_until_script_exits(script);
            // Nothing of the task may outlive init: kill(-1) reaches every process of the
            // namespace but init, and every one of them ends up a child of init, so ECHILD
            // means none is left.
            libc::kill(-1, libc::SIGKILL);
            loop {
                let mut status = 0;
                if libc::waitpid(-1, &mut status, 0) < 0 && errno() != libc::EINTR {
                    break;
                }
            }
            // Nothing of the task is left but init: report now, not at the end of the exit.
            let report = code.to_le_bytes();
            libc::write(self.done, report.as_ptr().cast(), report.len());
            libc::_exit(code);
        }
    }
}

/// The script process (sharing init's memory until `execve`): execs, or records the errno and
/// exits 127 like a shell would. Its signal mask and dispositions are the zygote's defaults.
extern "C" fn script_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is init's ChildSetup, alive and unchanged while init is suspended in vfork.
    unsafe {
        let setup = &*arg.cast::<ChildSetup>();
        // execvp's search: go on past a directory without the program (or one the sandbox does
        // not show), remember a permission error, stop at any other error.
        let mut reported = libc::ENOENT;
        for path in &setup.candidates {
            libc::execve(path.as_ptr(), setup.argv.as_ptr(), setup.envp.as_ptr());
            match errno() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => reported = libc::EACCES,
                other => {
                    reported = other;
                    break;
                }
            }
        }
        setup.exec_errno.store(reported, Ordering::Release);
        libc::_exit(127)
    }
}

/// This process's parent, from `/proc/self/stat` (the 4th field, after the name in
/// parentheses, which may itself hold parentheses), read without allocating.
pub(crate) fn parent_pid() -> Option<libc::pid_t> {
    let mut buf = [0u8; 512];
    // SAFETY: open/read/close of a NUL-terminated path into a buffer of the given length.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let stat = buf.get(..usize::try_from(n).ok()?)?;
    parse_parent(stat)
}

/// The parent pid in the text of `/proc/<pid>/stat`: `pid (name) state ppid …`.
fn parse_parent(stat: &[u8]) -> Option<libc::pid_t> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // ") S 1234 …": skip the parenthesis, the state and the spaces around it.
    let mut fields = stat
        .get(close + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let _state = fields.next()?;
    let ppid = fields.next()?;
    let mut value: libc::pid_t = 0;
    for &digit in ppid {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(libc::pid_t::from(digit - b'0'))?;
    }
    Some(value)
}

/// Init's loop: reaps orphans until the script exits, and returns its exit code.
fn reap_until_script_exits(script: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == script {
            return exit_code(status);
        }
        if r < 0 && errno() != libc::EINTR {
            return SETUP_FAILED_EXIT;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_name_with_parentheses_and_spaces() {
        assert_eq!(parse_parent(b"42 (grit) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_parent(b"42 (a) b (c) ) R 1234 1 1"), Some(1234));
        assert_eq!(parse_parent(b"42 (x) S"), None);
        assert_eq!(parse_parent(b"42 (x) S 12a 1"), None);
        assert_eq!(parse_parent(b"no parenthesis"), None);
        // This process's own parent, as the kernel shows it.
        // SAFETY: getppid cannot fail.
        assert_eq!(parent_pid(), Some(unsafe { libc::getppid() }));
    }
}
