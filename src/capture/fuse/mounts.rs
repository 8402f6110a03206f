//! The capture mount's life outside the filesystem code: where it is mounted (a private runtime
//! directory), the raw `mount(2)` of a `fuse.grit` filesystem, unmounting even while a stray
//! process still holds a file open, and finding and detaching mounts left by a grit that died.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Filesystem type as shown by `mount` (`fuse.<subtype>`); how grit recognises its own mounts.
pub(super) const FS_TYPE: &str = "fuse.grit";
/// Mount source as shown by `mount`.
const FS_SOURCE: &str = "grit";
/// Mount point names are `capture.<pid>.<random>`: the pid tells whether the owner is still
/// alive, the random part (64 bits) keeps the name from being guessed.
pub(super) const MOUNT_PREFIX: &str = "capture.";
/// Mode of the runtime directory. Only grit's own uid needs to pass: its zygote (mapped to the
/// same uid) copies a task's directory from here, and plain tasks run as grit's uid; sandboxed
/// tasks see their directory bind-mounted and never walk this one.
const RUNTIME_DIR_MODE: u32 = 0o700;

/// The directory that holds grit's mount points: `/run/grit` for root, else
/// `$XDG_RUNTIME_DIR/grit`, else `<tmp>/grit-<uid>`. Mode 0700: nobody else may list it or
/// reach a mount through it.
pub(super) fn runtime_dir() -> io::Result<PathBuf> {
    let uid = nix::unistd::geteuid();
    let dir = if uid.is_root() && Path::new("/run").is_dir() {
        PathBuf::from("/run/grit")
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        PathBuf::from(x).join("grit")
    } else {
        std::env::temp_dir().join(format!("grit-{uid}"))
    };
    match DirBuilder::new().mode(RUNTIME_DIR_MODE).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("creating {}: {e}", dir.display()),
            ));
        }
    }
    // In a shared /tmp someone else could have planted the directory or a symlink.
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid.as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by uid {uid}; refusing to mount there",
                dir.display()
            ),
        ));
    }
    // Also tightens the 0711 that earlier versions used (set explicitly: the umask may differ).
    if meta.permissions().mode() & 0o7777 != RUNTIME_DIR_MODE {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(RUNTIME_DIR_MODE))?;
    }
    Ok(dir)
}

/// A fresh mount point name for this process: `capture.<pid>.<start>.<16 random hex digits>`,
/// `<start>` being the process's start time (see [`start_time`]): pids are reused (within
/// minutes where `pid_max` is 32768), and a later run must not take a process that got a dead
/// grit's pid for that grit.
pub(super) fn mount_name() -> io::Result<String> {
    let pid = std::process::id();
    let start =
        start_time(pid).ok_or_else(|| io::Error::other("no start time in /proc/self/stat"))?;
    Ok(format!(
        "{MOUNT_PREFIX}{pid}.{start}.{:016x}",
        random_u64()?
    ))
}

/// When process `pid` started, in clock ticks after boot (`/proc/<pid>/stat`, field 22): with
/// the pid, it names one process for the machine's uptime. `None` when no process has that pid.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|stat| stat.started)
}

/// What `/proc/<pid>/stat` says of a process, read once.
struct ProcStat {
    /// The state letter (`R`, `S`, `D`, `Z` for a zombie, ...).
    state: char,
    /// The start time, in clock ticks since boot (field 22).
    started: u64,
}

impl ProcStat {
    /// Whether the process is exiting (a zombie, or dead and not yet gone).
    fn exiting(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// `/proc/<pid>/stat` parsed, `None` when no process has that pid.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold ") "): the state is field 3,
    // the first here, and the start time (field 22) the 20th.
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let started = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, started })
}

/// 64 bits from the kernel's random pool.
pub(super) fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// Open `/dev/fuse` and mount a `fuse.grit` filesystem on `mountpoint` served through it.
///
/// Without `allow_other` the kernel serves only processes whose uids and gids all equal grit's.
/// Sandboxed tasks pass: their user namespace maps grit's uid and gid to themselves, and the
/// kernel compares the mapped (host) ids. So other users never reach grit's filesystem code, and
/// the access check there (`access`) sorts out grit's own processes.
pub(super) fn mount_fuse(mountpoint: &Path) -> io::Result<OwnedFd> {
    let dev = File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/fuse: {e}")))?;
    let data = format!(
        "fd={},rootmode=4{:04o},user_id={},group_id={}",
        dev.as_raw_fd(),
        super::fs::DIR_MODE,
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    nix::mount::mount(
        Some(FS_SOURCE),
        mountpoint,
        Some(FS_TYPE),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME,
        Some(data.as_str()),
    )
    .map_err(|e| {
        let hint = if e == nix::errno::Errno::EPERM {
            " (mounting FUSE needs root or a user namespace)"
        } else {
            ""
        };
        io::Error::from_raw_os_error(e as i32).with_context(format!(
            "mount -t {FS_TYPE} on {}{hint}",
            mountpoint.display()
        ))
    })?;
    Ok(OwnedFd::from(dev))
}

trait WithContext {
    fn with_context(self, ctx: String) -> io::Error;
}

impl WithContext for io::Error {
    fn with_context(self, ctx: String) -> io::Error {
        io::Error::new(self.kind(), format!("{ctx}: {self}"))
    }
}

/// Remove the mount at `mountpoint` and end its FUSE connection.
///
/// `MNT_FORCE` on a FUSE mount aborts the connection first, so the server thread stops even when
/// copies of the mount live on in a sandbox's mount namespace; if a process still has a file open
/// in it the unmount itself is busy, and a lazy detach removes it from the mount table anyway.
/// Returns Ok when nothing is mounted there (any more).
pub(super) fn unmount(mountpoint: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    match nix::mount::umount2(mountpoint, MntFlags::MNT_FORCE) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
        // Busy, or MNT_FORCE not allowed (a user namespace): detach lazily instead.
        Err(Errno::EBUSY) | Err(Errno::EPERM) => {}
        Err(e) => {
            return Err(io::Error::from_raw_os_error(e as i32)
                .with_context(format!("unmounting {}", mountpoint.display())));
        }
    }
    match nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)
            .with_context(format!("detaching {}", mountpoint.display()))),
    }
}

/// One `fuse.grit` mount listed in /proc/self/mountinfo.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GritMount {
    pub(super) mountpoint: PathBuf,
    /// The pid encoded in the mount point name, when it follows grit's naming.
    pub(super) pid: Option<i32>,
    /// The owner's start time encoded in the name (see [`mount_name`]); `None` in the names of
    /// earlier versions (`capture.<pid>.<random>`).
    pub(super) started: Option<u64>,
    /// The mount's device (`major:minor` in mountinfo), which names its FUSE connection in
    /// `/sys/fs/fuse/connections`.
    pub(super) device: Option<String>,
}

/// grit's capture mounts in a mountinfo text.
pub(super) fn parse_mountinfo(text: &str) -> Vec<GritMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <type> <source> <super options>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some(FS_TYPE) {
            continue;
        }
        let fields: Vec<&str> = left.split(' ').collect();
        let Some(mp) = fields.get(4) else {
            continue;
        };
        let device = fields.get(2).map(|d| d.to_string());
        let mountpoint = PathBuf::from(unescape(mp));
        let parts: Vec<&str> = mountpoint
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(MOUNT_PREFIX))
            .map(|rest| rest.split('.').collect())
            .unwrap_or_default();
        let pid = parts.first().and_then(|p| p.parse().ok());
        let started = match parts.as_slice() {
            [_, start, _] => start.parse().ok(),
            _ => None,
        };
        out.push(GritMount {
            mountpoint,
            pid,
            started,
            device,
        });
    }
    out
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Is this grit mount abandoned? Told from its owner alone, never by looking at the mount: a
/// mount whose server died while one of its threads could not (see [`owner_gone`]) answers no
/// request, and a `stat` of it would wait for ever. A mount whose name carries no pid is left
/// alone.
fn is_stale(m: &GritMount) -> bool {
    match (m.pid, m.started) {
        (Some(pid), _) if pid == std::process::id() as i32 => false,
        // The owner is the process with that pid and start time, unless it is exiting.
        (Some(pid), Some(started)) => u32::try_from(pid).is_ok_and(|pid| {
            proc_stat(pid).is_none_or(|stat| stat.started != started || stat.exiting())
        }),
        (Some(pid), None) => u32::try_from(pid).is_ok_and(owner_gone),
        (None, _) => false,
    }
}

/// Whether the process that mounted a capture is gone: no process has its pid, or the process is
/// exiting (a zombie: `kill -9` of grit while a thread of it was inside a FUSE notification that
/// waits for a directory lock, held by a lookup that waits for grit's dead FUSE thread, leaves
/// grit a zombie for good), or the pid now belongs to a process that serves no FUSE connection.
fn owner_gone(pid: u32) -> bool {
    match proc_stat(pid) {
        None => true,
        Some(stat) => stat.exiting() || !holds_dev_fuse(pid),
    }
}

/// The state letter of process `pid` (`R`, `S`, `D`, `Z` for a zombie, ...), `None` when no
/// process has that pid.
#[cfg(test)]
pub(super) fn process_state(pid: u32) -> Option<char> {
    proc_stat(pid).map(|stat| stat.state)
}

/// The FUSE connection number of a mount's device (`0:<minor>`, an anonymous device).
fn fuse_connection(device: &str) -> Option<u32> {
    match device.split_once(':') {
        Some(("0", minor)) => minor.parse().ok(),
        _ => None,
    }
}

/// Whether process `pid` has `/dev/fuse` open, or may have. A process whose descriptors this
/// grit may not look at counts as holding it: that is not only another user's process, but
/// also one of the same user with capabilities this grit lacks (a grit run as root without
/// `CAP_SYS_PTRACE` may not read the descriptors of one with it), and taking such a live grit's
/// mount for abandoned aborted its run's capture.
fn holds_dev_fuse(pid: u32) -> bool {
    let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(fds) => fds,
        Err(e) => return e.kind() != io::ErrorKind::NotFound,
    };
    let mut hidden = false;
    for fd in fds.flatten() {
        match std::fs::read_link(fd.path()) {
            Ok(target) if target == Path::new("/dev/fuse") => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => hidden = true,
            Err(_) => {}
        }
    }
    hidden
}

/// Detach every `fuse.grit` mount whose grit process died (e.g. `kill -9`), and remove its mount
/// point directory. Returns the mount points that were cleaned up.
pub(super) fn cleanup_stale() -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| e.with_context("reading /proc/self/mountinfo".into()))?;
    let mut cleaned = Vec::new();
    for m in parse_mountinfo(&text) {
        if !is_stale(&m) {
            continue;
        }
        // Aborting the connection frees every process still waiting on it (the dying owner's
        // stuck thread among them). MNT_FORCE does it where grit may (root); else the
        // connection's `abort` file does, where fusectl is mounted (it belongs to the mount's
        // owner). A mount still held is then detached.
        if let Some(connection) = m.device.as_deref().and_then(fuse_connection) {
            let _ = std::fs::write(
                Path::new("/sys/fs/fuse/connections")
                    .join(connection.to_string())
                    .join("abort"),
                "1",
            );
        }
        unmount(&m.mountpoint).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the stale capture mount {}: {e}", m.mountpoint.display()),
            )
        })?;
        let _ = std::fs::remove_dir(&m.mountpoint);
        cleaned.push(m.mountpoint);
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lists_only_grit_mounts_with_their_pid() {
        let text = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
97 23 0:52 / /run/grit/capture.4242.3 rw,nosuid,nodev,noatime shared:50 - fuse.grit grit rw,user_id=0,group_id=0
98 23 0:53 / /run/other rw - fuse.sshfs host: rw
99 23 0:54 / /tmp/with\\040space/capture.7.0 rw - fuse.grit grit rw
100 23 0:55 / /mnt/x rw - fuse.grit grit rw
";
        let got = parse_mountinfo(text);
        assert_eq!(
            got,
            vec![
                GritMount {
                    mountpoint: "/run/grit/capture.4242.3".into(),
                    pid: Some(4242),
                    started: None,
                    device: Some("0:52".into()),
                },
                GritMount {
                    mountpoint: "/tmp/with space/capture.7.0".into(),
                    pid: Some(7),
                    started: None,
                    device: Some("0:54".into()),
                },
                GritMount {
                    mountpoint: "/mnt/x".into(),
                    pid: None,
                    started: None,
                    device: Some("0:55".into()),
                },
            ]
        );
    }

    #[test]
    fn mount_names_carry_the_pid_and_are_not_guessable() {
        let (a, b) = (mount_name().unwrap(), mount_name().unwrap());
        assert_ne!(a, b);
        let line = format!("1 1 0:1 / /run/grit/{a} rw - fuse.grit grit rw");
        let got = parse_mountinfo(&line);
        assert_eq!(got[0].pid, Some(std::process::id() as i32));
        assert_eq!(got[0].started, start_time(std::process::id()));
        assert!(got[0].started.is_some());
        let random = a.rsplit('.').next().unwrap();
        assert_eq!(random.len(), 16, "{a}");
    }

    /// A mount owned by `pid`, at a path that does not exist: `is_stale` must decide without it.
    fn owned_by(pid: u32) -> GritMount {
        GritMount {
            mountpoint: "/nonexistent/grit/capture".into(),
            pid: Some(pid as i32),
            started: None,
            device: None,
        }
    }

    #[test]
    fn a_mount_whose_pid_was_taken_by_a_later_process_is_stale() {
        // A live process that holds /dev/fuse, as another grit would: by pid alone it is the
        // owner; by its start time it is not.
        let mut server = fuse_holder();
        let pid = server.id();
        let started = start_time(pid).unwrap();
        let mount = |started| GritMount {
            started: Some(started),
            ..owned_by(pid)
        };
        assert!(!is_stale(&mount(started)), "the owner itself");
        assert!(
            is_stale(&mount(started - 1)),
            "a process that took the owner's pid"
        );
        server.kill().unwrap();
        server.wait().unwrap();
        assert!(is_stale(&mount(started)), "the owner is gone");
    }

    /// A live process holding `/dev/fuse` open, as another grit's FUSE server would.
    fn fuse_holder() -> std::process::Child {
        let server = std::process::Command::new("sh")
            .args(["-c", "exec 3<>/dev/fuse; exec sleep 30"])
            .spawn()
            .unwrap();
        let pid = server.id();
        wait_until("/dev/fuse to be open", || holds_dev_fuse(pid));
        server
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_mount_whose_owner_is_a_zombie_or_gone_is_stale() {
        use std::process::Command;
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie, as grit stays when a thread of it cannot die.
        wait_until("the zombie", || process_state(pid) == Some('Z'));
        assert!(is_stale(&owned_by(pid)), "zombie owner");
        child.wait().unwrap();
        assert!(is_stale(&owned_by(pid)), "reaped owner");
    }

    #[test]
    fn a_mount_is_stale_when_its_pid_serves_no_fuse_connection_and_kept_when_it_does() {
        use std::process::Command;
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(
            is_stale(&owned_by(other.id())),
            "a process that took the owner's pid"
        );
        other.kill().unwrap();
        other.wait().unwrap();

        let mut server = fuse_holder();
        let pid = server.id();
        assert!(!is_stale(&owned_by(pid)), "a live FUSE server");
        server.kill().unwrap();
        server.wait().unwrap();
    }

    #[test]
    fn a_connection_is_named_by_its_anonymous_device() {
        assert_eq!(fuse_connection("0:52"), Some(52));
        assert_eq!(fuse_connection("254:0"), None);
        assert_eq!(fuse_connection("0:x"), None);
    }

    #[test]
    fn own_mounts_are_never_stale() {
        let m = GritMount {
            mountpoint: "/nonexistent/capture".into(),
            pid: Some(std::process::id() as i32),
            started: None,
            device: None,
        };
        assert!(!is_stale(&m));
    }
}
