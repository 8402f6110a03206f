//! Private network namespaces for `network = false` tasks, created by the zygote as they are
//! needed and recycled.
//!
//! Creating a network namespace for every task cost about a millisecond of the task's start on
//! this machine kind, and its asynchronous teardown competes with the tasks for the CPUs. So the
//! zygote keeps a pool: every namespace has only loopback up and is lent to one task at a time,
//! so tasks that run at the same time never share one and cannot reach each other over loopback.
//! The zygote's twin that serves `network = false` tasks (see `zygote.rs`) joins the lent
//! namespace before the `clone3` of the task's init, so the task is born in it. The namespaces
//! belong to the zygote's user namespace, so this works for root and for unprivileged users
//! alike; the same is why the twin never returns to the host's namespace (it holds no
//! capability there) and a second process serves the tasks that keep the host's network.
//!
//! A namespace is lent again once the task's init has exited (its pidfd turns readable). The
//! kernel lets init exit only after every other process of its pid namespace is gone, so no
//! process of an earlier task is left in a namespace when it is handed out again. What a task
//! could leave behind is limited to state that needs no capability: sockets die with their
//! processes, and the sysctls are out of reach (the namespaces belong to the zygote's user
//! namespace, where a task holds no capability). `tcp_max_tw_buckets = 0` keeps a task's closed
//! TCP connections from holding ports in TIME_WAIT against the next task, as a fresh namespace
//! would.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_error(what: &str) -> String {
    format!(
        "the sandbox needs network namespaces for `network = false` ({what}: {}); allow the \
         network (`network = true` on the step) or run without the sandbox (`sandbox = \"off\"` \
         or `grit run --no-sandbox`)",
        std::io::Error::last_os_error()
    )
}

/// One pooled namespace and the task (init's pidfd) it is lent to.
#[derive(Debug)]
struct Slot {
    net: OwnedFd,
    task: Option<OwnedFd>,
}

/// The twin's pool; the twin is single-threaded, so no lock.
#[derive(Debug, Default)]
pub(crate) struct NetPool {
    slots: Vec<Slot>,
}

/// Whether the process behind `pidfd` has exited.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid descriptor without waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

impl NetPool {
    /// A namespace no running task uses, created when every one is lent.
    pub(crate) fn acquire(&mut self) -> Result<usize, String> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.task.as_ref().is_none_or(exited) {
                slot.task = None;
                return Ok(i);
            }
        }
        // SAFETY: unshare and raw system calls on this single-threaded process; the new
        // descriptor is owned from here on.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(os_error("unshare(CLONE_NEWNET)"));
            }
            // The new namespace stays joined: the next clone uses it.
            let made = (|| {
                if let Err(e) = loopback_up() {
                    return Err(format!(
                        "bring up loopback: {}",
                        std::io::Error::from_raw_os_error(e)
                    ));
                }
                // Best effort: only a convenience (ports free again at once), never isolation.
                let _ = write_file(c"/proc/sys/net/ipv4/tcp_max_tw_buckets", b"0");
                let fd = libc::open(
                    c"/proc/thread-self/ns/net".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    return Err(os_error("open the new network namespace"));
                }
                Ok(OwnedFd::from_raw_fd(fd))
            })();
            self.slots.push(Slot {
                net: made?,
                task: None,
            });
        }
        Ok(self.slots.len() - 1)
    }

    /// Joins namespace `index` (for the clone that follows).
    pub(crate) fn enter(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|slot| {
            // SAFETY: setns on a namespace descriptor the pool owns.
            unsafe { libc::setns(slot.net.as_raw_fd(), libc::CLONE_NEWNET) == 0 }
        })
    }

    /// Marks namespace `index` as lent to the task whose init `pidfd` refers to. Should the
    /// pidfd not be copyable (no descriptor left), the namespace leaves the pool instead: it
    /// then lives only as long as that task.
    pub(crate) fn lend(&mut self, index: usize, pidfd: &OwnedFd) {
        match pidfd.try_clone() {
            Ok(copy) => {
                if let Some(slot) = self.slots.get_mut(index) {
                    slot.task = Some(copy);
                }
            }
            Err(_) => {
                if index < self.slots.len() {
                    self.slots.remove(index);
                }
            }
        }
    }
}

/// Writes `text` to a /proc file; returns the errno on failure. Raw system calls only (init
/// calls it too, for its uid/gid maps).
pub(crate) unsafe fn write_file(path: &std::ffi::CStr, text: &[u8]) -> Result<(), i32> {
    // SAFETY: open/write/close on a NUL-terminated path and a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let n = libc::write(fd, text.as_ptr().cast(), text.len());
        let e = errno();
        libc::close(fd);
        if n < 0 || n as usize != text.len() {
            return Err(e);
        }
    }
    Ok(())
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings `lo` of the current network namespace up.
unsafe fn loopback_up() -> Result<(), i32> {
    // SAFETY: a datagram socket and two interface ioctls on a zeroed, correctly sized ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(errno());
        }
        let mut ifr = IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        ifr.name[..2].copy_from_slice(b"lo");
        let mut rc = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr as *mut IfReq);
        if rc == 0 {
            ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr as *const IfReq);
        }
        let e = errno();
        libc::close(s);
        if rc != 0 {
            return Err(e);
        }
    }
    Ok(())
}
