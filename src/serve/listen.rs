//! The socket the API listens on: `HOST:PORT`, a unix socket, or the one systemd passes
//! (socket activation: `LISTEN_PID` names this process and `LISTEN_FDS` ≥ 1, the socket is fd 3).

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::Context;
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};

use super::config::Listen;

/// The mode of a unix socket the server creates: its owner and group may connect, no one else.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

/// The first descriptor systemd passes.
const SD_LISTEN_FDS_START: i32 = 3;

/// A bound listener of either kind.
pub enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Bound {
    /// Where clients reach it, for the start-up line (`http://127.0.0.1:9009`, `unix:/path`).
    pub fn describe(&self) -> String {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_else(|_| "a TCP socket".into()),
            Bound::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "a unix socket".into()),
        }
    }
}

/// Bind `listen`, unless systemd passed a socket.
pub async fn bind(listen: &Listen) -> anyhow::Result<Bound> {
    if let Some(fd) = systemd_socket() {
        return adopt(fd).context("using the socket systemd passed (LISTEN_FDS)");
    }
    match listen {
        Listen::Tcp(addr) => Ok(Bound::Tcp(
            tokio::net::TcpListener::bind(addr.as_str())
                .await
                .with_context(|| format!("listening on {addr}"))?,
        )),
        Listen::Unix(path) => {
            // A socket file left by an earlier server that stopped abruptly.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing the stale socket {}", path.display()))?;
                }
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("listening on unix:{}", path.display()))?;
            // Connecting needs write access to the socket file: its owner and group only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
                .with_context(|| format!("setting the mode of unix:{}", path.display()))?;
            Ok(Bound::Unix(listener))
        }
    }
}

/// The descriptor systemd passed to this process, if it did.
fn systemd_socket() -> Option<OwnedFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: systemd hands this process fd 3 for it to own (sd_listen_fds(3)); nothing else in
    // grit opens or closes it, and the variables are checked to be meant for this process.
    Some(unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) })
}

fn adopt(fd: OwnedFd) -> anyhow::Result<Bound> {
    use std::os::fd::AsRawFd;
    let address: SockaddrStorage = getsockname(fd.as_raw_fd()).context("getsockname")?;
    if address.family() == Some(AddressFamily::Unix) {
        let listener = std::os::unix::net::UnixListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(Bound::Unix(tokio::net::UnixListener::from_std(listener)?))
    } else {
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(Bound::Tcp(tokio::net::TcpListener::from_std(listener)?))
    }
}
