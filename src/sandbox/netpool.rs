//! Private network namespaces for `network = false` tasks of a grit running as root, created
//! ahead of time and recycled.
//!
//! Creating a network namespace for every task cost about a millisecond of the task's start on
//! this machine kind, and its asynchronous teardown competes with the tasks for the CPUs. So grit
//! keeps a pool: every namespace has only loopback up and is leased to one task at a time, so
//! tasks that run at the same time never share one and cannot reach each other over loopback.
//! The spawning thread joins the leased namespace just for the `clone3` of the task's init (a
//! network namespace is per thread), so the task is born in it.
//!
//! A lease ends when grit has reaped the task's init. The kernel lets init be reaped only once
//! every other process of its pid namespace is gone, so no process of an earlier task is left in
//! a namespace when it is handed out again. What a task could leave behind is limited to state
//! that needs no capability: sockets die with their processes, and the sysctls are out of reach
//! (the namespaces belong to the initial user namespace, where a task holds no capability).
//! `tcp_max_tw_buckets = 0` keeps a task's closed TCP connections from holding ports in TIME_WAIT
//! against the next task, as a fresh namespace would.
//!
//! A grit that is not root cannot join a namespace of the initial user namespace from its
//! (multithreaded) process, so its tasks get a fresh network namespace each, created by the
//! clone inside the task's own user namespace (see `child.rs`, which brings loopback up).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use super::SandboxError;

/// Namespaces created per helper fork.
const BATCH: usize = 2;

/// One pooled network namespace.
#[derive(Debug)]
struct Entry {
    net: OwnedFd,
    leased: bool,
}

/// Entries are never removed, so the descriptor numbers a lease hands out stay valid.
static POOL: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// One task's use of a pooled namespace; returned to the pool when dropped, which the owner
/// does only after reaping the task's init.
#[derive(Debug)]
pub(crate) struct Lease {
    index: usize,
    /// The pool's own descriptor of the namespace: the spawning thread only passes it to `setns`.
    pub net: RawFd,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = pool.get_mut(self.index) {
            entry.leased = false;
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn unsupported(detail: String) -> SandboxError {
    SandboxError::Unsupported {
        feature: "network namespaces (for `network = false`)",
        detail,
    }
}

/// Leases an idle namespace, creating more when every one is busy. Root only.
pub(crate) fn acquire() -> Result<Lease, SandboxError> {
    // A poisoned lock only means another spawn panicked; the list itself stays consistent.
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let index = match pool.iter().position(|e| !e.leased) {
        Some(i) => i,
        None => {
            let fresh = create(BATCH)?;
            pool.extend(fresh.into_iter().map(|net| Entry { net, leased: false }));
            pool.len() - BATCH
        }
    };
    let entry = &mut pool[index];
    entry.leased = true;
    Ok(Lease {
        index,
        net: entry.net.as_raw_fd(),
    })
}

/// What failed in the helper, sent back instead of descriptors.
const STAGES: &[&str] = &[
    "",
    "unshare(CLONE_NEWNET)",
    "bring up loopback",
    "open /proc/self/ns/net",
];

/// Forks a single-threaded helper that creates `n` namespaces and sends their descriptors back.
fn create(n: usize) -> Result<Vec<OwnedFd>, SandboxError> {
    let mut sv = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return Err(unsupported(format!(
            "socketpair: {}",
            std::io::Error::from_raw_os_error(errno())
        )));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    // SAFETY: the child runs only raw system calls on data prepared above, then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(unsupported(format!(
            "fork: {}",
            std::io::Error::from_raw_os_error(errno())
        )));
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked helper.
        unsafe { helper(theirs.as_raw_fd(), n) }
    }
    drop(theirs);
    let received = receive(ours.as_raw_fd(), n);
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
    received
}

/// Room for the control message carrying up to 8 descriptors.
const CMSG_BUF: usize = 128;

/// Receives the helper's one message: `[stage, errno]` and, on success, `want` descriptors.
fn receive(sock: RawFd, want: usize) -> Result<Vec<OwnedFd>, SandboxError> {
    let mut data = [0i32; 2];
    let mut cbuf = [0u64; CMSG_BUF / 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: std::mem::size_of_val(&data),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BUF as _;
    let n = loop {
        // SAFETY: recvmsg into the buffers described by msg.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    let mut fds = Vec::new();
    // SAFETY: CMSG_* walk the control buffer the kernel filled in, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c).cast::<RawFd>();
                for k in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(p.add(k).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n < 0 {
        return Err(unsupported(format!(
            "receiving namespaces from the helper: {}",
            std::io::Error::from_raw_os_error(errno())
        )));
    }
    if n as usize != std::mem::size_of_val(&data) || data[0] != 0 || fds.len() != want {
        let stage = STAGES
            .get(data[0] as usize)
            .copied()
            .unwrap_or("the helper ended early");
        return Err(unsupported(format!(
            "{stage}: {}",
            std::io::Error::from_raw_os_error(data[1])
        )));
    }
    Ok(fds)
}

/// Writes `text` to a /proc file; returns the errno on failure. Raw system calls only (init
/// calls it too).
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

/// Brings `lo` of the current network namespace up; raw system calls only (init calls it too).
pub(crate) unsafe fn loopback_up() -> Result<(), i32> {
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

/// The helper: raw system calls only (forked from a multithreaded grit), ends with `_exit`.
unsafe fn helper(sock: RawFd, n: usize) -> ! {
    const MAX: usize = 8;
    let mut fds = [-1 as RawFd; MAX];
    let mut k = 0;
    let mut stage: i32;
    let mut err = 0i32;
    // SAFETY: raw system calls in the single-threaded helper on data prepared before the fork.
    unsafe {
        'work: {
            for _ in 0..n.min(MAX) {
                stage = 1;
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    err = errno();
                    break 'work;
                }
                stage = 2;
                if let Err(e) = loopback_up() {
                    err = e;
                    break 'work;
                }
                // Best effort: only a convenience (ports free again at once), never isolation.
                let _ = write_file(c"/proc/sys/net/ipv4/tcp_max_tw_buckets", b"0");
                stage = 3;
                fds[k] = libc::open(c"/proc/self/ns/net".as_ptr(), libc::O_RDONLY);
                if fds[k] < 0 {
                    err = errno();
                    break 'work;
                }
                k += 1;
            }
            stage = 0;
        }
        let mut data = [stage, err];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: std::mem::size_of_val(&data),
        };
        let mut cbuf = [0u64; CMSG_BUF / 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if stage == 0 && k > 0 {
            let bytes = k * std::mem::size_of::<RawFd>();
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), k);
        }
        libc::sendmsg(sock, &msg, 0);
        libc::_exit(0)
    }
}
