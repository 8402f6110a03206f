//! The code that runs between fork and exec: everything here executes in a child forked from a
//! possibly multithreaded grit, so it uses only raw, async-signal-safe system calls on data the
//! parent prepared (no allocation, no locks, no formatting through std).
//!
//! Process layout (see `mod.rs` for why):
//! ```text
//! grit ──fork── intermediate (host pid; what the executor holds)
//!                 [setns(pooled net namespace)]; unshare(user, mount, pid, ipc, uts); uid/gid maps
//!                 └─fork── init (pid 1): mounts, pivot_root, landlock, caps, rlimits
//!                            └─fork── script (pid 2, or 3 after the detach thread): exec of the shell
//! ```
//! The intermediate waits for init and exits with its status. Init reaps every orphan; once the
//! script has exited, or the intermediate has died, it kills and reaps every process left in the
//! namespace and exits with the script's status. Only then does it close its copy of the network
//! lease's busy pipe, so a pooled network namespace is never handed on while a process of the
//! task can still run in it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::plan::{MountOp, STAGING};

/// Exit status of the task when the sandbox could not be set up; stderr then says why.
pub const SETUP_FAILED_EXIT: i32 = 125;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_long = 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

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

/// Everything the child needs, built by the parent before the fork.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// grit's pid, to notice that grit died before PDEATHSIG was armed.
    pub grit_pid: libc::pid_t,
    pub unshare_flags: libc::c_int,
    pub uid_map: CString,
    pub gid_map: CString,
    pub ops: Vec<MountOp>,
    pub staging: CString,
    pub cwd: CString,
    /// The pooled network namespace to join (`network = false`).
    pub netns: Option<super::netpool::Lease>,
    /// The landlock ruleset with the host-path rules already added.
    pub ruleset: Option<OwnedFd>,
    /// Rules on paths that exist only inside the sandbox (its own /proc and /tmp).
    pub inner_rules: Vec<(CString, u64)>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    pub last_cap: u32,
    /// `cgroup.procs` of the task's pids cgroup (root only), joined before anything else.
    pub cgroup_procs: Option<CString>,
    /// Stack of the thread that detaches the host root (see [`detach_old_root`]); atomics
    /// because another thread writes it behind Rust's back.
    pub detach_stack: Box<[std::sync::atomic::AtomicU64]>,
    /// Where that thread stores its `umount2` result; starts as [`PENDING`].
    pub detach_slot: std::sync::atomic::AtomicI64,
}

/// Size of [`ChildSetup::detach_stack`] in 8-byte words (64 KiB); the thread makes one system
/// call.
pub(crate) const DETACH_STACK_WORDS: usize = 8 * 1024;

const STATX_MNT_ID_UNIQUE: libc::c_uint = 0x4000;
const STATMOUNT_SB_BASIC: u64 = 1;
#[cfg(target_arch = "x86_64")]
const SYS_STATMOUNT: libc::c_long = 457;
/// `umount2` result slot value while the detach thread has not returned yet.
pub(crate) const PENDING: i64 = i64::MIN;

#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
}

/// The 64-bit unique id of the mount at `path` (Linux 6.8+), if the kernel reports one.
fn unique_mount_id(path: &CStr) -> Option<u64> {
    // SAFETY: statx with a NUL-terminated path and a zeroed out-struct of the right type.
    unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            STATX_MNT_ID_UNIQUE,
            &mut stx,
        );
        (rc == 0 && stx.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(stx.stx_mnt_id)
    }
}

/// Whether mount `id` is still in this mount namespace; `None` if the kernel cannot tell.
#[cfg(target_arch = "x86_64")]
fn mount_present(id: u64) -> Option<bool> {
    let req = MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        spare: 0,
        mnt_id: id,
        param: STATMOUNT_SB_BASIC,
    };
    let mut buf = [0u64; 256];
    // SAFETY: statmount with a valid request and a buffer of the size passed.
    let rc = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            &req as *const MntIdReq,
            buf.as_mut_ptr(),
            std::mem::size_of_val(&buf),
            0,
        )
    };
    match rc {
        0 => Some(true),
        _ if errno() == libc::ENOENT => Some(false),
        _ => None,
    }
}

/// The detach thread: `umount2(".", MNT_DETACH)` as a raw system call (it shares init's TLS,
/// so it must not touch errno), storing 0 or -errno in the slot `arg` points to.
#[cfg(target_arch = "x86_64")]
extern "C" fn detach_thread(arg: *mut libc::c_void) -> libc::c_int {
    let ret: i64;
    // SAFETY: the umount2 system call on a static NUL-terminated path; the syscall instruction
    // clobbers only rcx and r11 besides rax, and does not use the user stack.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_umount2 => ret,
            in("rdi") c".".as_ptr(),
            in("rsi") libc::MNT_DETACH as i64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        (*arg.cast::<std::sync::atomic::AtomicI64>())
            .store(ret, std::sync::atomic::Ordering::Release);
    }
    0
}

/// Detaches the host root stacked on the new root by `pivot_root(".", ".")`.
///
/// `umount2` detaches at once but then sleeps through an expedited RCU grace period before it
/// returns (about 0.3-0.5 ms here, more under load). So a thread of init makes the call, and init
/// goes on as soon as `statmount` no longer finds the old root in the namespace: the detach of the
/// whole tree is done under the namespace lock statmount also takes, so from then on nothing of
/// the host tree is reachable. The grace period then overlaps with the rest of the setup. Where
/// that cannot be told (no statmount, or another architecture), init waits for the call itself.
///
/// `stack` and `slot` belong to the ChildSetup, which init never drops (it ends with `_exit`), so
/// they stay valid for the thread however long it outlives this call.
fn detach_old_root(
    old_root: Option<u64>,
    stack: &[std::sync::atomic::AtomicU64],
    slot: &std::sync::atomic::AtomicI64,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(old) = old_root
        && stack.len() >= 512
    {
        use std::sync::atomic::{AtomicI64, Ordering};
        // SAFETY: the stack was allocated by the parent and is used by this one thread only;
        // its top is 16-byte aligned as the ABI requires. The thread shares init's memory, files
        // and fs (root and cwd, so "." is the new root until init chdirs, after the detach).
        let tid = unsafe {
            let top = stack.as_ptr().add(stack.len()) as usize & !15;
            libc::clone(
                detach_thread,
                top as *mut libc::c_void,
                libc::CLONE_VM
                    | libc::CLONE_FS
                    | libc::CLONE_FILES
                    | libc::CLONE_SIGHAND
                    | libc::CLONE_THREAD
                    | libc::CLONE_SYSVSEM,
                slot as *const AtomicI64 as *mut libc::c_void,
            )
        };
        if tid > 0 {
            let mut ask = true;
            loop {
                let r = slot.load(Ordering::Acquire);
                if r != PENDING {
                    if r < 0 {
                        fail(b"detach the host root", b"", (-r) as i32);
                    }
                    break;
                }
                if ask {
                    match mount_present(old) {
                        Some(false) => break,
                        Some(true) => {}
                        None => ask = false,
                    }
                }
                // SAFETY: sched_yield cannot fail in a way that matters here.
                unsafe { libc::sched_yield() };
            }
            return;
        }
    }
    let _ = (old_root, stack, slot);
    // SAFETY: umount2 on a static NUL-terminated path.
    check(
        unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }.into(),
        b"detach the host root",
        b"",
    );
}

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

/// Closes every descriptor but those in `keep`; negative entries are ignored.
fn close_all_but<const N: usize>(mut keep: [libc::c_int; N]) {
    keep.sort_unstable();
    let mut next: libc::c_uint = 0;
    for k in keep {
        if k < 0 {
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
    // SAFETY: plain open/write/close on NUL-terminated paths and valid buffers.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(what, path.to_bytes(), errno());
        }
        let n = libc::write(fd, text.as_ptr().cast(), text.len());
        let e = errno();
        libc::close(fd);
        if n < 0 || n as usize != text.len() {
            fail(what, path.to_bytes(), e);
        }
    }
}

/// Signal handlers grit installed (tokio's SIGCHLD/SIGINT/SIGTERM) would run in the helper
/// processes, which never exec; put them back to the default.
fn reset_signal_handlers() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction with valid pointers; invalid signal numbers only return EINVAL.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

fn mount_setattr(path: &CStr, flags: libc::c_uint, set: u64) -> libc::c_long {
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
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

fn apply(op: &MountOp) {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: each call passes NUL-terminated strings prepared by the parent, or null where the
    // kernel allows it.
    unsafe {
        match op {
            MountOp::Mkdir(p) => {
                if libc::mkdir(p.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                    fail(b"create mountpoint", shown(p), errno());
                }
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
                    fail(b"create mountpoint", shown(p), errno());
                }
            }
            MountOp::Symlink { target, link } => {
                if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 && errno() != libc::EEXIST {
                    fail(b"create symlink", shown(link), errno());
                }
            }
            MountOp::BindRo { src, dst } => {
                let rc = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                );
                check(rc.into(), b"bind-mount", shown(dst));
                let rc = mount_setattr(
                    dst,
                    libc::AT_RECURSIVE as libc::c_uint,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                );
                check(rc, b"make read-only (mount_setattr)", shown(dst));
            }
            MountOp::BindRw { src, dst } => {
                let rc = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                );
                check(rc.into(), b"bind-mount", shown(dst));
            }
            MountOp::BindDev { src, dst } => {
                let rc = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                );
                check(rc.into(), b"bind-mount device", shown(dst));
            }
            MountOp::Tmpfs { dst, flags, data } => {
                let rc = libc::mount(
                    c"tmpfs".as_ptr(),
                    dst.as_ptr(),
                    c"tmpfs".as_ptr(),
                    *flags,
                    data.as_ptr().cast(),
                );
                check(rc.into(), b"mount tmpfs on", shown(dst));
            }
            MountOp::Proc { dst } => {
                let rc = libc::mount(
                    c"proc".as_ptr(),
                    dst.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                );
                check(rc.into(), b"mount a fresh /proc (pid namespace)", b"");
            }
            MountOp::SetReadOnly(p) => {
                check(
                    mount_setattr(p, 0, MOUNT_ATTR_RDONLY),
                    b"make read-only",
                    shown(p),
                );
            }
        }
    }
}

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
            for (path, access) in &setup.inner_rules {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    fail(b"open for a landlock rule", path.to_bytes(), errno());
                }
                let attr = PathBeneathAttr {
                    allowed_access: *access,
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

/// Waits for `pid`, retrying on EINTR, and returns its raw status.
fn wait_for(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && errno() != libc::EINTR {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(SETUP_FAILED_EXIT) }
        }
    }
}

impl ChildSetup {
    /// The `pre_exec` body. Returns only in the script process, which then execs; the helper
    /// processes end with `_exit`.
    pub(crate) fn run(&self) -> io::Result<()> {
        // SAFETY: raw system calls on this freshly forked process, on data prepared before fork.
        unsafe {
            // PDEATHSIG follows the forking thread; the executor spawns from the runtime's main
            // thread, which lives as long as grit.
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
            if libc::getppid() != self.grit_pid {
                libc::_exit(SETUP_FAILED_EXIT);
            }
            reset_signal_handlers();
            if let Some(procs) = &self.cgroup_procs {
                write_proc(procs, b"0", b"join the pids cgroup");
            }
            let mut busy = -1;
            if let Some(lease) = &self.netns {
                // Joined first, while this process still holds the capabilities setns needs in
                // the namespace's owner (the initial user namespace, or the pool's own).
                if let Some(user) = lease.user
                    && libc::setns(user, libc::CLONE_NEWUSER) != 0
                {
                    fail(b"join the network pool's user namespace", b"", errno());
                }
                if libc::setns(lease.net, libc::CLONE_NEWNET) != 0 {
                    fail(b"join a private network namespace", b"", errno());
                }
                busy = lease.busy.as_raw_fd();
            }
            if libc::unshare(self.unshare_flags) != 0 {
                fail(
                    b"create namespaces (user, mount, pid, ipc, uts)",
                    b"",
                    errno(),
                );
            }
            write_proc(c"/proc/self/setgroups", b"deny", b"write");
            write_proc(c"/proc/self/uid_map", self.uid_map.to_bytes(), b"write");
            write_proc(c"/proc/self/gid_map", self.gid_map.to_bytes(), b"write");

            // The pipe tells init whether the intermediate is still alive once its own
            // PDEATHSIG is armed: all write ends closed means it died in between.
            let mut alive = [0; 2];
            if libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                fail(b"create a pipe", b"", errno());
            }
            let init = libc::fork();
            if init < 0 {
                fail(b"fork the task's init (pid namespace)", b"", errno());
            }
            if init > 0 {
                // Intermediate: keep only the liveness pipe and the lease. Dropping std's
                // exec-error pipe lets spawn() return once the script has exec'd.
                close_all_but([alive[1], busy]);
                let status = wait_for(init);
                libc::_exit(exit_code(status));
            }

            // Init, pid 1 of the task's pid namespace.
            libc::close(alive[1]);
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
            let mut pfd = libc::pollfd {
                fd: alive[0],
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & libc::POLLHUP != 0 {
                libc::_exit(SETUP_FAILED_EXIT);
            }
            // alive[0] stays open: once the script runs, init notices the intermediate's death
            // through it instead of by PDEATHSIG (see the reaping loop below).

            let rc = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            check(rc.into(), b"make the mount tree private", b"");
            for op in &self.ops {
                apply(op);
            }
            check(
                libc::chdir(self.staging.as_ptr()).into(),
                b"enter the new root",
                b"",
            );
            // SIGCHLD is blocked before the detach thread exists, which inherits the mask: a thread
            // that left it unblocked could take the script's SIGCHLD away from the signalfd.
            let mut chld: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut chld);
            libc::sigaddset(&mut chld, libc::SIGCHLD);
            check(
                libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut old).into(),
                b"block SIGCHLD",
                b"",
            );
            let old_root = unique_mount_id(c"/");
            let rc = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
            check(rc, b"pivot_root into the new root", b"");
            detach_old_root(old_root, &self.detach_stack, &self.detach_slot);
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
            // The script must not ptrace init (its reaper); exec makes the script dumpable again.
            check(
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0).into(),
                b"make init non-dumpable",
                b"",
            );
            drop_privileges(self);
            // SIGCHLD goes through a signalfd, so the reaping loop can also watch the liveness
            // pipe (made before the rlimits, which may cap the number of open files).
            let sfd = libc::signalfd(-1, &chld, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            check(sfd.into(), b"create a signalfd", b"");
            // Last, so a low open-files limit cannot break the setup above.
            for (resource, limit) in &self.rlimits {
                check(
                    libc::setrlimit(*resource, limit).into(),
                    b"set a resource limit",
                    b"",
                );
            }

            // Killed by PDEATHSIG, init would leave the kernel to kill the rest of the namespace
            // only after init's own descriptors (the lease) are closed; the loop below kills and
            // reaps first when the liveness pipe reports the intermediate's death.
            check(
                libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0).into(),
                b"disarm the parent-death signal",
                b"",
            );

            let script = libc::fork();
            if script < 0 {
                fail(b"fork the script", b"", errno());
            }
            if script == 0 {
                libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                // Descriptors grit leaked without O_CLOEXEC must not reach the script.
                close_from(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC);
                return Ok(());
            }
            close_all_but([alive[0], sfd, busy]);
            let code = reap_until_script_exits(script, alive[0], sfd);
            // Nothing of the task may outlive init, and it must all be gone before init closes
            // the lease: kill(-1) reaches every process of the namespace but init, and every
            // one of them ends up a child of init, so ECHILD means none is left.
            libc::kill(-1, libc::SIGKILL);
            loop {
                let mut status = 0;
                if libc::waitpid(-1, &mut status, 0) < 0 && errno() != libc::EINTR {
                    break;
                }
            }
            libc::_exit(code);
        }
    }
}

/// Init's loop: reaps orphans until the script exits (its exit code) or the intermediate dies.
fn reap_until_script_exits(script: libc::pid_t, alive: libc::c_int, sfd: libc::c_int) -> i32 {
    // SAFETY: poll, read, and waitpid with valid pointers on descriptors this process owns.
    unsafe {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: alive,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return SETUP_FAILED_EXIT;
            }
            if fds[0].revents != 0 {
                // The intermediate died (killed by a timeout, a cancel, or grit's death).
                return 128 + libc::SIGKILL;
            }
            let mut info = [0u8; 128];
            while libc::read(sfd, info.as_mut_ptr().cast(), info.len()) > 0 {}
            loop {
                let mut status = 0;
                let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if r == script {
                    return exit_code(status);
                }
                if r <= 0 {
                    break;
                }
            }
        }
    }
}
