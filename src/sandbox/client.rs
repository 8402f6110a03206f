//! grit's side of the sandbox zygote (`zygote.rs`): starting it, sending it orders, and starting
//! a fresh one when the old one can no longer serve.
//!
//! A [`ZygoteSlot`] holds at most one zygote (and its twin); it belongs to a
//! [`super::Sandbox`], which belongs to an executor, so two executors in one process (two runs,
//! or a server's runs) each have their own zygote and never share one by accident.
//!
//! The zygote sees the host's mounts as they were when it started (its host view is a copy), so
//! grit watches its own mount table (`/proc/self/mountinfo` signals every change through poll)
//! and replaces the zygote at the next spawn after a change: a FUSE capture mounted after the
//! zygote started would otherwise be missing from its view. The old zygote exits when its
//! socket closes; the tasks it started are grit's children and are not affected.
//!
//! Every zygote is started from one thread that never exits, shared by the whole process: the
//! zygote and every init it clones (`CLONE_PARENT`) have that thread as their parent, and their
//! parent-death signal fires when the parent *thread* ends. That thread is the one piece of
//! process-wide state here, and a safe one: it holds nothing of any run (it only runs the
//! `Command::spawn` of a zygote handed to it, then waits for the next), and a thread that may end
//! would kill the tasks it parents.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use super::SandboxError;
use super::wire::{self, Order, Reply};
use super::zygote::{SOCKET_FD, ZYGOTE_ENV};

/// A running zygote and its twin.
struct Zygote {
    /// Orders for tasks with `network = true`.
    sock: UnixStream,
    /// Orders for tasks with `network = false`, served by the twin.
    twin_sock: UnixStream,
    twin: i32,
    process: Child,
    /// grit's `/proc/self/mountinfo`, opened before the zygote copied the mount table.
    mounts: File,
}

impl Zygote {
    /// Whether the host's mount table changed since the zygote copied it.
    fn outdated(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.mounts.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: poll on one valid descriptor without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n != 0 && p.revents & (libc::POLLPRI | libc::POLLERR) != 0
    }

    /// Ends the zygote and its twin: they exit at the end of their sockets; the kills cover a
    /// stuck one. Both are grit's children, so both are reaped here.
    fn retire(mut self, pids: &ZygotePids) {
        // Before they are reaped and their pids become free.
        pids.publish(0, 0);
        drop(self.sock);
        drop(self.twin_sock);
        let _ = self.process.kill();
        let _ = self.process.wait();
        reap(self.twin);
    }
}

/// Kills and reaps the child `pid` (a twin).
fn reap(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
    }
}

/// The pids of a slot's running zygote and its twin (0: none), readable without the slot's lock:
/// the FUSE capture asks while a spawn holds that lock and waits for the zygote, which is
/// looking up the task's directory in the capture.
#[derive(Debug, Default)]
pub struct ZygotePids([AtomicI32; 2]);

impl ZygotePids {
    /// Is `pid` the running zygote or its twin? Both are grit's unreaped children, so their pids
    /// cannot have passed to another process.
    pub fn contains(&self, pid: i32) -> bool {
        pid > 0 && self.0.iter().any(|p| p.load(Ordering::Acquire) == pid)
    }

    fn publish(&self, zygote: i32, twin: i32) {
        self.0[0].store(zygote, Ordering::Release);
        self.0[1].store(twin, Ordering::Release);
    }
}

/// A task's init as the zygote answered for it.
pub(crate) struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// Write end of the go pipe: init runs the script once a byte arrives there.
    pub go: OwnedFd,
    /// Read end of the done pipe: the script's exit code arrives there once nothing of the
    /// task is left but init (see `ChildSetup::done`).
    pub done: OwnedFd,
}

/// At most one running zygote (and its twin), started at the first spawn and replaced when it
/// can no longer serve.
#[derive(Default)]
pub(crate) struct ZygoteSlot {
    zygote: Mutex<Option<Zygote>>,
    pids: Arc<ZygotePids>,
}

impl ZygoteSlot {
    /// The live pids of this slot's zygote, shared with whoever must recognise it.
    pub(crate) fn pids(&self) -> Arc<ZygotePids> {
        self.pids.clone()
    }

    /// The pids of the running zygote and its twin, if any.
    #[cfg(test)]
    pub(crate) fn zygote_pids(&self) -> Vec<i32> {
        let slot = self.zygote.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .map(|z| vec![z.process.id() as i32, z.twin])
            .unwrap_or_default()
    }

    /// Asks the zygote to start a task (see [`Spawned`]). `fds` are the task's stdin, stdout
    /// and stderr, then its cgroup descriptor if `order.cgroup` names one.
    pub(crate) fn spawn(
        &self,
        order: &Order,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Spawned, SandboxError> {
        let pids = &*self.pids;
        let mut slot = self.zygote.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(Zygote::outdated)
            && let Some(old) = slot.take()
        {
            old.retire(pids);
        }
        // A zygote that died (or was killed) answers with an I/O error: one fresh start, then
        // give up. Nothing of the task ran then: its init waits for the go byte below.
        let mut failure = String::new();
        for _ in 0..2 {
            let zygote = match slot.as_mut() {
                Some(z) => z,
                None => slot.insert(start(pids)?),
            };
            let sock = if order.network {
                &zygote.sock
            } else {
                &zygote.twin_sock
            };
            let answer = wire::send(sock, order, fds).and_then(|()| wire::receive::<Reply>(sock));
            match answer {
                Ok(Some((Reply::Spawned { pid }, fds))) => {
                    let mut fds = fds.into_iter();
                    let (Some(pidfd), Some(go), Some(done)) = (fds.next(), fds.next(), fds.next())
                    else {
                        failure = "the zygote's answer lacked the task's descriptors".into();
                        break;
                    };
                    return Ok(Spawned {
                        pid,
                        pidfd,
                        go,
                        done,
                    });
                }
                Ok(Some((Reply::Refused { message }, _))) => {
                    return Err(SandboxError::Refused(message));
                }
                Ok(Some((Reply::Ready { .. }, _))) => {
                    failure = "the zygote answered out of turn".into();
                }
                Ok(None) => failure = "the zygote exited".into(),
                Err(e) => failure = e.to_string(),
            }
            if let Some(old) = slot.take() {
                old.retire(pids);
            }
        }
        if let Some(old) = slot.take() {
            old.retire(pids);
        }
        Err(SandboxError::Failed {
            step: "the sandbox zygote did not answer".into(),
            detail: failure,
        })
    }

    /// Ends the zygote, if one runs (the next spawn starts a new one). A run calls it before
    /// its FUSE capture unmounts, so that no copy of that mount outlives the run in the
    /// zygote's view.
    pub(crate) fn shutdown(&self) {
        let mut slot = self.zygote.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            old.retire(&self.pids);
        }
    }
}

fn unsupported(detail: String) -> SandboxError {
    SandboxError::Unsupported {
        feature: "the sandbox zygote (user and mount namespaces, open_tree, pidfds)",
        detail,
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the long-lived thread that parents every zygote.
fn on_parent_thread(job: Job) -> Result<(), SandboxError> {
    static PARENT: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = PARENT.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // If the thread cannot start, the sender's receiver is gone and every send fails.
        let _ = std::thread::Builder::new()
            .name("grit-sandbox".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
                // Keep the thread (and so every task's parent) alive until grit exits.
                loop {
                    std::thread::park();
                }
            });
        Mutex::new(tx)
    });
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| unsupported("cannot start grit's sandbox thread".into()))
}

/// Starts a zygote and waits until its template is built; publishes its pids in `pids`.
fn start(pids: &ZygotePids) -> Result<Zygote, SandboxError> {
    let mounts = File::open("/proc/self/mountinfo")
        .map_err(|e| unsupported(format!("/proc/self/mountinfo: {e}")))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| unsupported(format!("socketpair: {e}")))?;
    let (tx, rx) = mpsc::channel();
    on_parent_thread(Box::new(move || {
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("grit-sandbox-zygote")
            .env(ZYGOTE_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: dup2 and fcntl are async-signal-safe; they run in the forked child before exec
        // and put the zygote's socket where the zygote expects it, without close-on-exec.
        // (When the socket already is that descriptor, dup2 would leave close-on-exec set.)
        unsafe {
            cmd.pre_exec(move || {
                let rc = if their_fd == SOCKET_FD {
                    libc::fcntl(SOCKET_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(their_fd, SOCKET_FD)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(theirs);
        let _ = tx.send(spawned);
    }))?;
    let process = rx
        .recv()
        .map_err(|_| unsupported("grit's sandbox thread is gone".into()))?
        .map_err(|e| unsupported(format!("starting the zygote: {e}")))?;
    let mut process = process;
    let fail = |mut process: Child, twin: i32, detail: String| {
        let _ = process.kill();
        let _ = process.wait();
        reap(twin);
        Err(unsupported(detail))
    };
    // The zygote's start reads the host's system paths too: a hung mount there (a dead NFS
    // server behind /nix/store) must end in an error, not hang grit.
    if let Err(e) = ours.set_read_timeout(Some(ANSWER_TIMEOUT)) {
        return fail(process, 0, format!("socket timeout: {e}"));
    }
    match wire::receive::<Reply>(&ours) {
        Ok(Some((Reply::Ready { twin, unmasked }, fds))) => match fds.into_iter().next() {
            Some(twin_sock) => {
                if let Some(warning) = unmasked {
                    tracing::warn!("sandbox: {warning}");
                }
                let twin_sock = UnixStream::from(twin_sock);
                if let Err(e) = twin_sock.set_read_timeout(Some(ANSWER_TIMEOUT)) {
                    return fail(process, twin, format!("socket timeout: {e}"));
                }
                pids.publish(process.id() as i32, twin);
                Ok(Zygote {
                    sock: ours,
                    twin_sock,
                    twin,
                    process,
                    mounts,
                })
            }
            None => fail(
                process,
                twin,
                "the zygote sent no socket for its twin".into(),
            ),
        },
        Ok(Some((Reply::Refused { message }, _))) => fail(process, 0, message),
        Ok(Some((Reply::Spawned { .. }, _))) | Ok(None) => {
            let _ = process.try_wait();
            fail(process, 0, "the zygote exited while it started".into())
        }
        Err(e) => fail(process, 0, format!("the zygote did not start: {e}")),
    }
}

/// How long grit waits for the zygote's answer before it gives up on that zygote: it copies the
/// task's directories from the host, and a hung mount there must not hang grit's scheduler.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
