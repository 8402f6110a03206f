//! The messages between grit and its sandbox zygote, and how they travel: a length-prefixed
//! postcard frame over a unix stream socket, with descriptors (the task's stdio, its cgroup, the
//! task's pidfd) passed alongside the frame's first bytes as `SCM_RIGHTS`.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// The most descriptors one message carries (stdio, a cgroup; a pidfd back).
const MAX_FDS: usize = 4;
/// A frame larger than this is refused (the environment and arguments of one task).
const MAX_FRAME: u32 = 64 << 20;

/// How a task's init joins its pids cgroup; the descriptor travels after the three stdio ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CgroupJoin {
    None,
    /// cgroup v2: a directory descriptor for `CLONE_INTO_CGROUP`.
    Clone,
    /// cgroup v1: `cgroup.procs` opened for writing; init writes its own pid.
    Procs,
}

/// One task to start, as grit hands it to the zygote. Paths and strings are raw bytes of the
/// host (not necessarily UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Order {
    pub cwd: OsString,
    pub input_file: Option<OsString>,
    pub input_dir: Option<OsString>,
    pub output_dir: OsString,
    pub scratch_dir: OsString,
    pub store_dir: OsString,
    pub read_only: Vec<OsString>,
    pub read_write: Vec<OsString>,
    pub tmp_size: Option<u64>,
    pub network: bool,
    /// `(resource, soft, hard)`.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cgroup: CgroupJoin,
    /// The root filesystem of the step's image, if it has one.
    pub image: Option<OsString>,
}

/// The zygote's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The template is built; orders are welcome. The socket of the twin that serves
    /// `network = false` tasks travels with this reply; `twin` is its pid (a child of grit).
    /// `unmasked` says which root-only files stay readable to tasks, if some do.
    Ready { twin: i32, unmasked: Option<String> },
    /// The task's init runs as a child of grit; its pidfd travels with this reply.
    Spawned { pid: i32 },
    /// Nothing was started; the message says why and what to do.
    Refused { message: String },
}

/// Sends `msg` with `fds` attached.
pub(crate) fn send<T: Serialize>(
    sock: &UnixStream,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let body = postcard::to_stdvec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("message too large for the sandbox zygote"))?;
    let header = len.to_le_bytes();
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&header)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut out = sock;
    out.write_all(&header[sent..])?;
    out.write_all(&body)
}

/// Receives one message and the descriptors sent with it; `Ok(None)` at a clean end of stream.
pub(crate) fn receive<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut header)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        // SAFETY: the kernel installed these descriptors for us alone.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, fds);
            }
        }
    };
    if got == 0 {
        return Ok(None);
    }
    let mut input = sock;
    input.read_exact(&mut header[got..])?;
    let len = u32::from_le_bytes(header);
    if len > MAX_FRAME {
        return Err(std::io::Error::other(
            "oversized frame from the sandbox zygote",
        ));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body)?;
    let msg = postcard::from_bytes(&body).map_err(std::io::Error::other)?;
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn an_order_and_its_descriptors_arrive_intact() {
        let (a, b) = UnixStream::pair().unwrap();
        let order = Order {
            cwd: OsString::from("/work/p"),
            input_file: Some(std::os::unix::ffi::OsStringExt::from_vec(vec![0xff, b'/'])),
            input_dir: None,
            output_dir: "/o".into(),
            scratch_dir: "/s".into(),
            store_dir: "/db".into(),
            read_only: vec!["/r".into()],
            read_write: vec![],
            tmp_size: Some(7),
            network: true,
            rlimits: vec![(7, 8, 9)],
            program: "sh".into(),
            args: vec!["sh".into(), "-c".into(), "x".repeat(200_000).into()],
            env: vec![("A".into(), "b".into())],
            cgroup: CgroupJoin::Procs,
            image: Some("/db/images/ab/rootfs".into()),
        };
        let file = tempfile::tempfile().unwrap();
        let writer = std::thread::spawn(move || {
            send(&a, &order, &[file.as_fd()]).unwrap();
            order
        });
        let (got, fds): (Order, _) = receive(&b).unwrap().unwrap();
        let sent = writer.join().unwrap();
        assert_eq!(got.input_file, sent.input_file);
        assert_eq!(got.args, sent.args);
        assert_eq!(got.rlimits, vec![(7, 8, 9)]);
        assert_eq!(got.cgroup, CgroupJoin::Procs);
        assert_eq!(fds.len(), 1);
        // The descriptor is the same open file.
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        f.write_all(b"hi").unwrap();
    }

    #[test]
    fn end_of_stream_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(receive::<Reply>(&b).unwrap().is_none());
    }
}
