//! The sandbox zygote: a small single-threaded process, grit's own binary started again with
//! [`ZYGOTE_ENV`] set, that clones the init of every sandboxed task.
//!
//! Why a separate process: the expensive part of a sandbox was its mount tree (about 30 mounts,
//! `pivot_root`, detaching the host's tree, and tearing it all down again at exit). The zygote
//! builds the static part once, as a *template* mount namespace, and each task starts in a copy
//! of it, adding only its own few mounts. Switching between mount namespaces (`setns`) is only
//! allowed to a single-threaded process, and grit is not one; cloning from a small process is
//! also cheaper than from grit, whose page tables the kernel would copy for every task.
//!
//! At start the zygote makes:
//! - a user namespace Q (its own uid and gid mapped to themselves), which owns everything below;
//! - H, a mount namespace with the host's view (a copy made at start: grit restarts the zygote
//!   when its own mount table changes, see `client.rs`);
//! - P, the template (`plan::template`): a tmpfs root with read-only system directories, the
//!   device nodes, masks over root-only files, and a copy of the host's procfs at `/proc` (the
//!   kernel grants a fresh proc only where a proc is already fully visible).
//!
//! Per task: in H it makes `open_tree` copies of the task's directories (the manifest directory,
//! inputs, `OUTPUT_DIR`, scratch, extra paths), read-only where they must be; back in P it clones
//! init with `CLONE_PARENT` (so init is grit's child, and grit waits for it through the pidfd the
//! zygote sends back) into new user (a child of Q), mount, pid, ipc and uts namespaces, and a
//! private network namespace lent from the pool (`netpool`) unless `network = true`. Init
//! attaches the copies and goes on as `child.rs` describes.
//!
//! The zygote holds no capability outside Q, never looks at what tasks write, and dies with grit
//! (parent-death signal, and the end of its socket).

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use super::child::{self, ChildSetup};
use super::netpool::{NetPool, write_file};
use super::plan::{self, HostLayout, MountOp, TaskPaths, Template};
use super::wire::{self, CgroupJoin, Order, Reply};
use super::{CloneArgs, access, cstring, rights};

/// Set (to grit's pid) in the environment of the process that becomes the zygote.
pub(crate) const ZYGOTE_ENV: &str = "GRIT_SANDBOX_ZYGOTE";
const ZYGOTE_ENV_C: &CStr = c"GRIT_SANDBOX_ZYGOTE";
/// The zygote's end of its socket to grit.
pub(crate) const SOCKET_FD: RawFd = 3;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

// The zygote starts before `main`: grit's binary and its test binary both hold this entry, so
// either can serve as the zygote, and the process never reaches grit's runtime or threads.
#[used]
#[unsafe(link_section = ".init_array")]
static ZYGOTE_ENTRY: extern "C" fn() = entry;

extern "C" fn entry() {
    // SAFETY: getenv with a NUL-terminated name, before main, while the process has one thread.
    let value = unsafe { libc::getenv(ZYGOTE_ENV_C.as_ptr()) };
    if value.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives as long as the environment.
    let grit = unsafe { CStr::from_ptr(value) }
        .to_str()
        .ok()
        .and_then(|s| s.parse::<i32>().ok());
    let code = grit.map_or(2, serve);
    // SAFETY: ends this process without running grit's main.
    unsafe { libc::_exit(code) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A step of starting a task failed with the current errno: the full message for grit.
fn failed(step: &str) -> String {
    failed_with(step, std::io::Error::last_os_error())
}

/// A mask over a root-only path could not be mounted: the full message for grit.
fn cover_failed(e: child::StepFailed<'_>) -> String {
    failed_with(
        &format!("cover the root-only {}", String::from_utf8_lossy(e.path)),
        std::io::Error::from_raw_os_error(e.errno),
    )
}

/// A step of starting a task failed for `detail`: the full message for grit.
fn failed_with(step: &str, detail: impl std::fmt::Display) -> String {
    super::SandboxError::Failed {
        step: step.into(),
        detail: detail.to_string(),
    }
    .to_string()
}

/// Dies with grit (the parent-death signal, and a check that grit did not die first) and takes
/// `name` for `top` and the kernel (else "exe"; `ps` shows argv[0]). False when grit is gone.
fn tie_to_grit(grit: i32, name: &CStr) -> bool {
    // SAFETY: prctl and getppid on this process only, with a NUL-terminated name.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
        libc::getppid() == grit
    }
}

/// The zygote's life: build the template, answer orders until grit closes the socket.
fn serve(grit: i32) -> i32 {
    if !tie_to_grit(grit, c"grit-zygote") {
        return 1;
    }
    // SAFETY: signal, sigprocmask and close_range on this process only.
    unsafe {
        // Every init starts with the zygote's dispositions and an ignored signal survives exec:
        // start from the defaults whatever grit's parent left ignored (SIGCHLD ignored would
        // even stop init from reaping the script).
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Nothing of grit's but the socket (stdio is /dev/null).
        libc::syscall(
            libc::SYS_close_range,
            SOCKET_FD as libc::c_uint + 1,
            libc::c_uint::MAX,
            0,
        );
    }
    // SAFETY: grit passed this descriptor as the zygote's socket and nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(SOCKET_FD) };
    let mut zygote = match Zygote::build() {
        Ok(z) => z,
        Err(message) => {
            let _ = wire::send(&sock, &Reply::Refused { message }, &[]);
            return 1;
        }
    };
    // Once for every task: each init inherits the filter from the zygote (or its twin), and
    // compiling it per task cost about 0.1 ms. Nothing the zygote does is refused by it.
    if let Err(e) = super::seccomp::install() {
        let message = format!("sandbox zygote: cannot install the seccomp filter: {e}");
        let _ = wire::send(&sock, &Reply::Refused { message }, &[]);
        return 1;
    }
    // The twin serves `network = false` tasks from the pool's namespaces (see netpool.rs).
    let twin = UnixStream::pair()
        .map_err(|e| e.to_string())
        .and_then(|(ours, twins)| {
            let pid = clone_parent().map_err(|e| format!("start the zygote's twin: {e}"))?;
            Ok((pid, ours, twins))
        });
    let (twin_pid, ours, twins) = match twin {
        Ok(t) => t,
        Err(message) => {
            let _ = wire::send(&sock, &Reply::Refused { message }, &[]);
            return 1;
        }
    };
    if twin_pid == 0 {
        drop(sock);
        drop(ours);
        if !tie_to_grit(grit, c"grit-zygote-net") {
            return 1;
        }
        zygote.pool = Some(NetPool::default());
        return zygote.serve(&twins);
    }
    drop(twins);
    let ready = Reply::Ready {
        twin: twin_pid,
        unmasked: zygote.unmasked_warning.take(),
    };
    if wire::send(&sock, &ready, &[ours.as_fd()]).is_err() {
        return 1;
    }
    drop(ours);
    zygote.serve(&sock)
}

/// Clones this process with `CLONE_PARENT` (its parent is grit, like every init's): like
/// `fork`, returns 0 in the child and the child's pid in the parent.
fn clone_parent() -> std::io::Result<i32> {
    let args = CloneArgs {
        flags: libc::CLONE_PARENT as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without a new stack behaves like fork; this process is single-threaded.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// What the zygote keeps between tasks.
struct Zygote {
    /// grit's pid as the template's `/proc` shows it (see `ChildSetup::grit`).
    grit: Option<i32>,
    /// Test hook: see `ChildSetup::start_delay_ms`.
    init_start_delay_ms: u32,
    template: Template,
    /// The template's masks over root-only files, as the task sees them (see `remask`).
    masks: Vec<MountOp>,
    /// Root-only paths (root's zygote only) that did not exist when the template was built:
    /// masked as soon as one appears (see `remask`).
    unmasked: Vec<PathBuf>,
    /// Which root-only files the template leaves readable, if some: for grit to warn about.
    unmasked_warning: Option<String>,
    /// H: the host's view, where task directories are copied from.
    host_mnt: OwnedFd,
    /// P: the template every task's tree is a copy of.
    template_mnt: OwnedFd,
    /// The uid and gid maps (own ids to themselves), the same for the zygote and every init.
    uid_map: CString,
    gid_map: CString,
    abi: u32,
    last_cap: u32,
    /// The twin's pool of network namespaces; `None` in the zygote proper, whose tasks keep
    /// the host's network.
    pool: Option<NetPool>,
    /// The zygote could not get back into its template: it stops after answering.
    broken: bool,
}

fn open_ns(path: &CStr) -> Result<OwnedFd, String> {
    // SAFETY: open of a NUL-terminated path; the descriptor is owned from here on.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_error(&format!("open {}", path.to_string_lossy())));
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open_tree(OPEN_TREE_CLONE)`: a detached copy of the mount tree at `path`.
fn copy_tree(path: &CStr) -> Result<OwnedFd, i32> {
    // SAFETY: open_tree with a NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether `path` is the root of a mount; `None` if it is gone or the kernel cannot tell.
fn mount_root(path: &CStr) -> Option<bool> {
    const STATX_ATTR_MOUNT_ROOT: u64 = 0x2000;
    // SAFETY: statx with a NUL-terminated path and a zeroed out-struct of the right type.
    unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            0,
            &mut stx,
        );
        (rc == 0 && stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT != 0)
            .then_some(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT != 0)
    }
}

fn enter(ns: &OwnedFd, kind: libc::c_int) -> bool {
    // SAFETY: setns on a namespace descriptor this process owns.
    unsafe { libc::setns(ns.as_raw_fd(), kind) == 0 }
}

/// What a spawn has done with, freed only after the reply is sent: each page the zygote writes
/// while a fresh init still shares it is copied, and grit waits for the reply.
struct Leftovers {
    _setup: ChildSetup,
    _trees: Vec<OwnedFd>,
    _stdio: Vec<OwnedFd>,
}

impl Zygote {
    /// Answers orders on `sock` until grit closes it.
    fn serve(&mut self, sock: &UnixStream) -> i32 {
        loop {
            let (order, fds) = match wire::receive::<Order>(sock) {
                Ok(Some(received)) => received,
                Ok(None) => return 0,
                Err(_) => return 1,
            };
            // grit gets the go pipe's write end along with the pidfd and lets the script run
            // once it holds both (see `ChildSetup::go`), and the read end of the done pipe
            // (`ChildSetup::done`); the zygote keeps no copy.
            let sent = match self.spawn(&order, fds) {
                Ok((pid, pidfd, go, done, leftovers)) => {
                    let sent = wire::send(
                        sock,
                        &Reply::Spawned { pid },
                        &[pidfd.as_fd(), go.as_fd(), done.as_fd()],
                    );
                    drop(leftovers);
                    sent
                }
                Err(message) => wire::send(sock, &Reply::Refused { message }, &[]),
            };
            if sent.is_err() || self.broken {
                return 1;
            }
        }
    }

    fn build() -> Result<Zygote, String> {
        // SAFETY: these getters cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let layout = HostLayout::read(uid == 0);
        let uid_map = cstring(format!("{uid} {uid} 1").as_bytes());
        let gid_map = cstring(format!("{gid} {gid} 1").as_bytes());
        let last_cap = super::last_cap();
        let abi = super::landlock_abi()
            .map_err(|e| format!("landlock: {}", std::io::Error::from_raw_os_error(e)))?;
        // SAFETY: unshare and raw /proc writes on this single-threaded process.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(os_error(
                    "unshare a user and a mount namespace (unprivileged user namespaces \
                     allowed?)",
                ));
            }
            let map = |path: &CStr, text: &CStr| {
                write_file(path, text.to_bytes()).map_err(|e| {
                    format!(
                        "write {}: {}",
                        path.to_string_lossy(),
                        std::io::Error::from_raw_os_error(e)
                    )
                })
            };
            map(c"/proc/self/setgroups", c"deny")?;
            map(c"/proc/self/uid_map", &uid_map)?;
            map(c"/proc/self/gid_map", &gid_map)?;
        }
        let host_mnt = open_ns(c"/proc/self/ns/mnt")?;
        // SAFETY: unshare on this single-threaded process.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(os_error("unshare the template's mount namespace"));
        }
        let template_mnt = open_ns(c"/proc/self/ns/mnt")?;
        // Taken before the template's root covers /proc, where it is assembled.
        let host_proc = copy_tree(c"/proc").map_err(|e| {
            format!(
                "copy the host's /proc: {}",
                std::io::Error::from_raw_os_error(e)
            )
        })?;
        let mut ops = plan::template(&layout);
        ops.push(MountOp::Attach {
            fd: host_proc.as_raw_fd(),
            dst: CString::from(c"/proc/proc"),
        });
        // `apply` closes an attached descriptor itself.
        std::mem::forget(host_proc);
        for op in &ops {
            child::apply(op).map_err(|e| {
                format!(
                    "build the sandbox template: cannot {} {}: {}",
                    String::from_utf8_lossy(e.what),
                    String::from_utf8_lossy(e.path),
                    std::io::Error::from_raw_os_error(e.errno)
                )
            })?;
        }
        // SAFETY: chdir/pivot_root/umount2 on static paths in the template namespace.
        unsafe {
            if libc::chdir(super::plan::STAGING_C.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
                || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                return Err(os_error("pivot into the sandbox template"));
            }
        }
        let masks = plan::masks(&layout);
        let unmasked_warning = layout.unmasked.clone();
        let unmasked = if uid == 0 {
            plan::ROOT_SECRETS
                .iter()
                .map(PathBuf::from)
                .filter(|p| {
                    !layout
                        .masks
                        .iter()
                        .any(|(masked, is_dir)| masked == p || (*is_dir && p.starts_with(masked)))
                })
                .collect()
        } else {
            Vec::new()
        };
        let init_start_delay_ms = std::env::var("GRIT_TEST_INIT_START_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        let zygote = Zygote {
            // The zygote's parent is every init's (`CLONE_PARENT`); read through the template's
            // `/proc`, as init will, in case that procfs numbers processes differently.
            grit: child::parent_pid(),
            init_start_delay_ms,
            template: Template::new(layout),
            masks,
            unmasked,
            unmasked_warning,
            host_mnt,
            template_mnt,
            uid_map,
            gid_map,
            abi,
            last_cap,
            pool: None,
            broken: false,
        };
        zygote.mask_all()?;
        Ok(zygote)
    }

    /// Mounts every mask in the template, whatever is at its path now (a host mount on a
    /// root-only path, `/etc/ssh` as a container's volume, is a mount root already and must be
    /// covered too), except over a path that is gone since the search found it: that one is
    /// passed over, and `remask` mounts it before a later task should it come back.
    fn mask_all(&self) -> Result<(), String> {
        for op in &self.masks {
            match child::apply(op) {
                Ok(()) => {}
                Err(e) if e.errno == libc::ENOENT => {}
                Err(e) => return Err(cover_failed(e)),
            }
        }
        Ok(())
    }

    /// Starts one task; returns init's pid and pidfd and the write end of its go pipe, or why
    /// nothing was started.
    fn spawn(
        &mut self,
        order: &Order,
        fds: Vec<OwnedFd>,
    ) -> Result<(i32, OwnedFd, OwnedFd, OwnedFd, Leftovers), String> {
        let expected = if order.cgroup == CgroupJoin::None {
            3
        } else {
            4
        };
        if fds.len() != expected {
            return Err(format!(
                "sandbox zygote: expected {expected} descriptors, got {}",
                fds.len()
            ));
        }
        let path = |p: &std::ffi::OsString| Path::new(p.as_os_str()).to_path_buf();
        let read_only: Vec<_> = order.read_only.iter().map(path).collect();
        let read_write: Vec<_> = order.read_write.iter().map(path).collect();
        let (input_file, input_dir) = (
            order.input_file.as_ref().map(path),
            order.input_dir.as_ref().map(path),
        );
        let image = order.image.as_ref().map(path);
        let task = TaskPaths {
            cwd: Path::new(&order.cwd),
            input_file: input_file.as_deref(),
            input_dir: input_dir.as_deref(),
            output_dir: Path::new(&order.output_dir),
            scratch_dir: Path::new(&order.scratch_dir),
            store_dir: Path::new(&order.store_dir),
            read_only: &read_only,
            read_write: &read_write,
            tmp_size: order.tmp_size,
            image: image.as_deref(),
        };
        // The task's paths are checked and its host directories copied in the host's view.
        if !enter(&self.host_mnt, libc::CLONE_NEWNS) {
            return Err(failed("sandbox zygote: enter the host's view"));
        }
        let mut trees: Vec<OwnedFd> = Vec::new();
        let planned = plan::plan(&self.template, &task)
            .map_err(|e| e.to_string())
            .and_then(|plan| Ok((self.copy_trees(plan.ops, &mut trees)?, plan.grants)));
        if !enter(&self.template_mnt, libc::CLONE_NEWNS) {
            self.broken = true;
            return Err(failed("sandbox zygote: return to the template"));
        }
        let (ops, grants) = planned?;
        self.remask()?;

        let mut fds = fds.into_iter();
        let stdio: Vec<OwnedFd> = fds.by_ref().take(3).collect();
        let cgroup = fds.next();
        let (cgroup_dir, cgroup_procs) = match order.cgroup {
            CgroupJoin::Clone => (cgroup, None),
            CgroupJoin::Procs => (None, cgroup),
            CgroupJoin::None => (None, None),
        };
        let ruleset = super::ruleset().map_err(|e| failed_with("landlock ruleset", e))?;
        let mut rules: Vec<(CString, u64)> = grants
            .iter()
            .map(|(p, grant)| (cstring(p.as_os_str().as_bytes()), rights(*grant, self.abi)))
            .collect();
        rules.extend([
            (
                CString::from(c"/proc"),
                access::READ_FILE | access::READ_DIR,
            ),
            (CString::from(c"/tmp"), access::handled(self.abi)),
            (CString::from(c"/"), access::READ_DIR),
        ]);
        let args: Vec<CString> = order.args.iter().map(|a| cstring(a.as_bytes())).collect();
        let env: Vec<CString> = order
            .env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(&kv)
            })
            .collect();
        let pointers = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let (argv, envp) = (pointers(&args), pointers(&env));
        let (go_read, go_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|_| failed("pipe"))?;
        // Only init keeps the write end (dropped here when this function returns), so grit
        // reads end-of-file instead of a report if init dies any other way.
        let (done_read, done_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|_| failed("pipe"))?;
        let mut keep_fds: Vec<RawFd> = vec![0, 1, 2, go_read.as_raw_fd(), done_write.as_raw_fd()];
        keep_fds.extend(ruleset.as_ref().map(|r| r.as_raw_fd()));
        keep_fds.extend(cgroup_procs.as_ref().map(|c| c.as_raw_fd()));
        keep_fds.extend(trees.iter().map(|t| t.as_raw_fd()));
        keep_fds.sort_unstable();
        let setup = ChildSetup {
            grit: self.grit,
            start_delay_ms: self.init_start_delay_ms,
            cgroup_procs: cgroup_procs.as_ref().map(|c| c.as_raw_fd()),
            uid_map: self.uid_map.clone(),
            gid_map: self.gid_map.clone(),
            ops,
            keep_fds,
            go: go_read.as_raw_fd(),
            done: done_write.as_raw_fd(),
            cwd: cstring(order.cwd.as_bytes()),
            ruleset,
            rules,
            rlimits: order
                .rlimits
                .iter()
                .map(|&(resource, cur, max)| {
                    (
                        resource,
                        libc::rlimit {
                            rlim_cur: cur,
                            rlim_max: max,
                        },
                    )
                })
                .collect(),
            last_cap: self.last_cap,
            stdio: [
                stdio[0].as_raw_fd(),
                stdio[1].as_raw_fd(),
                stdio[2].as_raw_fd(),
            ],
            program: cstring(order.program.as_bytes()),
            candidates: super::candidates(&order.program, &order.env),
            argv,
            envp,
            _args: args,
            _env: env,
            script_stack: &child::SCRIPT_STACK,
            exec_errno: AtomicI32::new(0),
        };

        let lent = match (&mut self.pool, order.network) {
            (None, false) | (Some(_), true) => {
                return Err("sandbox zygote: order sent to the wrong twin".into());
            }
            (None, true) => None,
            (Some(pool), false) => Some(pool.acquire()?),
        };
        let mut pidfd: libc::c_int = -1;
        // No exit signal of its own: with CLONE_PARENT init takes the zygote's (SIGCHLD), sent to
        // grit.
        let mut args = CloneArgs {
            flags: (libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_PIDFD
                | libc::CLONE_PARENT) as u64,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            ..CloneArgs::default()
        };
        if let Some(dir) = &cgroup_dir {
            args.flags |= super::CLONE_INTO_CGROUP;
            args.cgroup = dir.as_raw_fd() as u64;
        }
        if let (Some(index), Some(pool)) = (lent, &self.pool)
            && !pool.enter(index)
        {
            return Err(failed("sandbox zygote: join a pooled network namespace"));
        }
        // SAFETY: clone3 with a valid argument struct; the child only runs init_main, which
        // never returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            setup.init_main();
        }
        let clone_error = std::io::Error::last_os_error();
        if pid < 0 {
            return Err(super::SandboxError::Unsupported {
                feature: "clone3 into new user, mount, pid, ipc and uts namespaces (Linux 5.7 \
                          or later, unprivileged user namespaces allowed)",
                detail: clone_error.to_string(),
            }
            .to_string());
        }
        // SAFETY: CLONE_PIDFD stored a fresh descriptor that only we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        if let (Some(index), Some(pool)) = (lent, &mut self.pool) {
            pool.lend(index, &pidfd);
        }
        drop(done_write);
        let leftovers = Leftovers {
            _setup: setup,
            _trees: trees,
            _stdio: stdio,
        };
        Ok((pid as i32, pidfd, go_write, done_read, leftovers))
    }

    /// Puts back a mask the host removed. Tools such as `passwd` or `visudo` replace a file by
    /// renaming a new one over it, and the kernel then drops every mount on the old file, in
    /// every namespace: the template's mask too. So before each clone the zygote checks that
    /// each mask is still a mount root and mounts it again if not (in P, which it owns).
    ///
    /// A root-only path that appeared since the template was built (`/etc/credstore` made by a
    /// service, a package's `/etc/sudoers.d`) is masked here too, from the next task on: the
    /// template's `/etc` is the host's, live.
    fn remask(&mut self) -> Result<(), String> {
        let mut appeared = Vec::new();
        self.unmasked.retain(|path| match std::fs::metadata(path) {
            Ok(meta) => {
                appeared.push((path.clone(), meta.is_dir()));
                false
            }
            Err(_) => true,
        });
        for (path, is_dir) in appeared {
            let ops = plan::mask(&path, is_dir);
            for op in &ops {
                child::apply(op).map_err(cover_failed)?;
            }
            self.masks.extend(ops);
        }
        for op in &self.masks {
            let (MountOp::BindDev { dst, .. } | MountOp::Tmpfs { dst, .. }) = op else {
                continue;
            };
            // A lookup racing with the host's rename can miss the file for a moment: look again.
            let mut attempts = 0;
            while mount_root(dst) == Some(false) {
                match child::apply(op) {
                    Ok(()) => break,
                    Err(e) if e.errno == libc::ENOENT && attempts < 3 => attempts += 1,
                    Err(e) => return Err(cover_failed(e)),
                }
            }
        }
        Ok(())
    }

    /// Replaces every bind of a host path in `ops` by an attach of a copy made here (in the
    /// host's view); the copies are kept in `trees` until init has inherited them.
    fn copy_trees(
        &self,
        ops: Vec<MountOp>,
        trees: &mut Vec<OwnedFd>,
    ) -> Result<Vec<MountOp>, String> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let (src, dst, read_only) = match op {
                MountOp::BindRo { src, dst } => (src, dst, true),
                MountOp::BindRw { src, dst } => (src, dst, false),
                other => {
                    out.push(other);
                    continue;
                }
            };
            let refused = |what: &str, e: i32| {
                super::SandboxError::Unsupported {
                    feature: "bind mounts of the task's directories (open_tree and \
                              mount_setattr, Linux 5.12 or later)",
                    detail: format!(
                        "{what} {}: {}",
                        OsStr::from_bytes(src.to_bytes()).to_string_lossy(),
                        std::io::Error::from_raw_os_error(e)
                    ),
                }
                .to_string()
            };
            let tree = copy_tree(&src).map_err(|e| refused("copy", e))?;
            if read_only {
                let rc = child::mount_setattr_at(
                    tree.as_raw_fd(),
                    c"",
                    (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                    child::MOUNT_ATTR_RDONLY | child::MOUNT_ATTR_NOSUID | child::MOUNT_ATTR_NODEV,
                );
                if rc != 0 {
                    return Err(refused("make read-only", errno()));
                }
            }
            out.push(MountOp::Attach {
                fd: tree.as_raw_fd(),
                dst,
            });
            trees.push(tree);
        }
        Ok(out)
    }
}
