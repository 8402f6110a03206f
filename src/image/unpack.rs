//! Applying image layers (tar streams) to a directory, in order, with the OCI whiteout rules:
//! `.wh.NAME` removes `NAME` of the layers below, `.wh..wh..opq` empties its directory of them.
//!
//! A layer is untrusted input and must never write outside the target:
//! - an entry path with `..` is refused (the whole image is);
//! - parent directories are opened with `openat2(RESOLVE_IN_ROOT)`, so a symbolic link in the
//!   image (`etc -> /`, `x -> ../../..`) resolves inside the target as it would inside the
//!   container, never on the host; the final component is created with `O_EXCL`/`O_NOFOLLOW`
//!   semantics (`mkdirat`, `symlinkat`, `openat(O_CREAT|O_EXCL)`), so it is never followed;
//! - hard links name their target inside the image the same way;
//! - device nodes and fifos are skipped, and setuid, setgid and sticky bits on files dropped
//!   (the sandbox also mounts the image nosuid and nodev); owners are not kept: the files belong
//!   to the user running grit, which the task runs as, with the owner's permission bits only
//!   (the store is private to its owner or group; `grit doctor` checks that).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::archive::Hashing;
use super::{ImageError, io_error};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Applies layers to one target directory.
pub(super) struct Unpacker {
    /// The image, for messages.
    source: PathBuf,
    target: PathBuf,
    root: OwnedFd,
    /// Entries that were device nodes or fifos, skipped.
    pub skipped: usize,
}

/// An entry's path split into normal components; `None` when it has `..`.
fn components(raw: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            other => out.push(other.to_vec()),
        }
    }
    Some(out)
}

fn cstr(bytes: &[u8]) -> CString {
    // Tar paths cannot hold NUL (the header field ends there).
    CString::new(bytes).unwrap_or_default()
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Unpacker {
    pub(super) fn new(source: &Path, target: &Path) -> Result<Unpacker, ImageError> {
        let c = cstr(target.as_os_str().as_bytes());
        // SAFETY: open of a NUL-terminated path; the descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io_error(target)(errno()));
        }
        Ok(Unpacker {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            // SAFETY: a fresh descriptor.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            skipped: 0,
        })
    }

    fn hostile(&self, layer: &str, reason: impl Into<String>) -> ImageError {
        ImageError::Hostile {
            path: self.source.clone(),
            layer: layer.to_string(),
            reason: reason.into(),
        }
    }

    /// Applies one layer blob, gzip-compressed or plain.
    pub(super) fn apply<R: Read>(
        &mut self,
        layer: &str,
        blob: &mut Hashing<R>,
    ) -> Result<(), ImageError> {
        let gzip = blob.is_gzip().map_err(io_error(&self.source))?;
        if gzip {
            self.apply_plain(layer, flate2::read::GzDecoder::new(blob))
        } else {
            self.apply_plain(layer, blob)
        }
    }

    /// Applies one uncompressed layer tar.
    pub(super) fn apply_plain<R: Read>(
        &mut self,
        layer: &str,
        reader: R,
    ) -> Result<(), ImageError> {
        let mut archive = tar::Archive::new(reader);
        // What this layer wrote: its whiteouts and opaque markers apply to lower layers only.
        let mut written: HashSet<Vec<Vec<u8>>> = HashSet::new();
        let bad_tar =
            |e: std::io::Error| self.hostile(layer, format!("not a readable tar layer ({e})"));
        let entries = archive.entries().map_err(bad_tar)?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| self.hostile(layer, format!("not a readable tar layer ({e})")))?;
            let raw = entry.path_bytes().into_owned();
            let Some(parts) = components(&raw) else {
                return Err(self.hostile(
                    layer,
                    format!(
                        "entry `{}` leaves the image with `..`",
                        String::from_utf8_lossy(&raw)
                    ),
                ));
            };
            let Some((name, parent)) = parts.split_last() else {
                continue; // the root itself
            };
            let kind = entry.header().entry_type();
            let io = |e: std::io::Error| {
                // `Other` is ours: an entry that would leave the image (see `open_dir`).
                if e.kind() == std::io::ErrorKind::Other {
                    return self.hostile(
                        layer,
                        format!("entry `{}`: {e}", String::from_utf8_lossy(&raw)),
                    );
                }
                ImageError::Io {
                    path: self.target.join(String::from_utf8_lossy(&raw).as_ref()),
                    source: e,
                }
            };
            if name.as_slice() == OPAQUE.as_bytes() {
                let dir = self.open_dir(parent, true).map_err(io)?;
                self.clear(&dir, parent, &written).map_err(io)?;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT.as_bytes()) {
                if !hidden.starts_with(WHITEOUT.as_bytes()) {
                    let mut path = parent.to_vec();
                    path.push(hidden.to_vec());
                    if !written.contains(&path) {
                        let dir = self.open_dir(parent, true).map_err(io)?;
                        self.remove(&dir, hidden).map_err(io)?;
                    }
                }
                continue;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let dir = self.open_dir(parent, true).map_err(io)?;
            let cname = cstr(name);
            use tar::EntryType as T;
            match kind {
                T::Directory => {
                    // SAFETY: *at calls on an owned directory descriptor and NUL-terminated names.
                    unsafe {
                        // Owner only, like the rest of the store: tasks run as the owner.
                        let perm = 0o700;
                        if libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), perm) != 0 {
                            let e = errno();
                            if e.raw_os_error() != Some(libc::EEXIST) {
                                return Err(io(e));
                            }
                            if !self.is_dir(&dir, name) {
                                self.remove(&dir, name).map_err(io)?;
                                if libc::mkdirat(dir.as_raw_fd(), cname.as_ptr(), perm) != 0 {
                                    return Err(io(errno()));
                                }
                            } else {
                                libc::fchmodat(dir.as_raw_fd(), cname.as_ptr(), perm, 0);
                            }
                        }
                    }
                }
                T::Regular | T::Continuous | T::GNUSparse => {
                    self.remove(&dir, name).map_err(io)?;
                    // SAFETY: as above; O_EXCL|O_NOFOLLOW create a new file and never follow.
                    let fd = unsafe {
                        libc::openat(
                            dir.as_raw_fd(),
                            cname.as_ptr(),
                            libc::O_WRONLY
                                | libc::O_CREAT
                                | libc::O_EXCL
                                | libc::O_NOFOLLOW
                                | libc::O_CLOEXEC,
                            0o600,
                        )
                    };
                    if fd < 0 {
                        return Err(io(errno()));
                    }
                    // SAFETY: a fresh descriptor.
                    let mut file = unsafe { File::from_raw_fd(fd) };
                    std::io::copy(&mut entry, &mut file).map_err(io)?;
                    // No setuid, setgid or sticky bit, and owner only like the rest of the
                    // store (tasks run as the owner, who may always read).
                    let perm = (mode & 0o700) | 0o400;
                    // SAFETY: fchmod on the file just created.
                    unsafe { libc::fchmod(file.as_raw_fd(), perm) };
                }
                T::Symlink => {
                    let Some(target) = entry.link_name_bytes() else {
                        return Err(self.hostile(layer, "a symbolic link without a target"));
                    };
                    self.remove(&dir, name).map_err(io)?;
                    let target = cstr(&target);
                    // SAFETY: as above.
                    if unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), cname.as_ptr()) }
                        != 0
                    {
                        return Err(io(errno()));
                    }
                }
                T::Link => {
                    let Some(target) = entry.link_name_bytes() else {
                        return Err(self.hostile(layer, "a hard link without a target"));
                    };
                    let Some(tparts) = components(&target) else {
                        return Err(self.hostile(
                            layer,
                            format!(
                                "hard link `{}` points out of the image with `..`",
                                String::from_utf8_lossy(&raw)
                            ),
                        ));
                    };
                    let Some((tname, tparent)) = tparts.split_last() else {
                        return Err(self.hostile(layer, "a hard link to the root"));
                    };
                    let tdir = self.open_dir(tparent, false).map_err(io)?;
                    self.remove(&dir, name).map_err(io)?;
                    let tname = cstr(tname);
                    // SAFETY: as above; flags 0 never follows a symbolic link at the source.
                    if unsafe {
                        libc::linkat(
                            tdir.as_raw_fd(),
                            tname.as_ptr(),
                            dir.as_raw_fd(),
                            cname.as_ptr(),
                            0,
                        )
                    } != 0
                    {
                        return Err(io(errno()));
                    }
                }
                T::Char | T::Block | T::Fifo => {
                    self.skipped += 1;
                    continue;
                }
                // Pax and GNU long-name headers are read by the tar crate; nothing else to do.
                _ => continue,
            }
            written.insert(parts.clone());
        }
        Ok(())
    }

    /// Opens the directory `parts` beneath the target, resolving symbolic links as if the
    /// target were `/`; with `create`, missing directories are made (a layer need not list
    /// its parents).
    fn open_dir(&self, parts: &[Vec<u8>], create: bool) -> std::io::Result<OwnedFd> {
        let mut dir = self.open_in_root(&[])?;
        for (i, part) in parts.iter().enumerate() {
            match self.open_in_root(&parts[..=i]) {
                Ok(fd) => dir = fd,
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cstr(part);
                    // SAFETY: mkdirat on an owned descriptor with a NUL-terminated name.
                    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
                        let e = errno();
                        if e.raw_os_error() == Some(libc::EEXIST) {
                            // A symbolic link whose target the image does not have.
                            return Err(std::io::Error::other(format!(
                                "`{}` is a symbolic link to a directory the image does not have",
                                String::from_utf8_lossy(&parts[..=i].join(&b'/'))
                            )));
                        }
                        return Err(e);
                    }
                    dir = self.open_in_root(&parts[..=i])?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(dir)
    }

    fn open_in_root(&self, parts: &[Vec<u8>]) -> std::io::Result<OwnedFd> {
        let path = if parts.is_empty() {
            b".".to_vec()
        } else {
            parts.join(&b'/')
        };
        let c = cstr(&path);
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 with an owned directory descriptor, a NUL-terminated path and an
        // open_how of the declared size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: a fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The host path of an opened directory, checked to lie inside the target.
    fn host_path(&self, dir: &OwnedFd) -> std::io::Result<PathBuf> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        if !path.starts_with(&self.target) {
            return Err(std::io::Error::other(format!(
                "{} resolved outside the image",
                path.display()
            )));
        }
        Ok(path)
    }

    fn is_dir(&self, dir: &OwnedFd, name: &[u8]) -> bool {
        self.host_path(dir).is_ok_and(|p| {
            std::fs::symlink_metadata(p.join(std::ffi::OsStr::from_bytes(name)))
                .is_ok_and(|m| m.is_dir())
        })
    }

    /// Removes `name` in `dir` if it exists (a whole tree for a directory), never following a
    /// symbolic link.
    fn remove(&self, dir: &OwnedFd, name: &[u8]) -> std::io::Result<()> {
        let path = self.host_path(dir)?.join(std::ffi::OsStr::from_bytes(name));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => super::remove_tree(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The opaque marker: removes every entry of `dir` that this layer did not write.
    fn clear(
        &self,
        dir: &OwnedFd,
        parts: &[Vec<u8>],
        written: &HashSet<Vec<Vec<u8>>>,
    ) -> std::io::Result<()> {
        let path = self.host_path(dir)?;
        for e in std::fs::read_dir(&path)? {
            let name = e?.file_name();
            let mut child = parts.to_vec();
            child.push(name.as_bytes().to_vec());
            if !written.contains(&child) {
                self.remove(dir, name.as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, path, target).unwrap();
    }

    /// Writes a raw path (the tar crate refuses `..` through its safe API).
    fn raw_file(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("root");
        std::fs::create_dir(&t).unwrap();
        let mut u = Unpacker::new(d.path(), &t).unwrap();
        let one = layer(|b| {
            file(b, "etc/a", b"a", 0o4755);
            file(b, "etc/b", b"b", 0o644);
            file(b, "var/x/old", b"o", 0o644);
        });
        let two = layer(|b| {
            file(b, "etc/.wh.a", b"", 0o644);
            file(b, "var/x/new", b"n", 0o644);
            file(b, "var/x/.wh..wh..opq", b"", 0o644);
        });
        u.apply_plain("1", &one[..]).unwrap();
        u.apply_plain("2", &two[..]).unwrap();
        assert!(!t.join("etc/a").exists());
        assert_eq!(std::fs::read(t.join("etc/b")).unwrap(), b"b");
        assert!(!t.join("var/x/old").exists());
        assert_eq!(std::fs::read(t.join("var/x/new")).unwrap(), b"n");
        assert!(!t.join("var/x/.wh..wh..opq").exists());
    }

    #[test]
    fn setuid_bits_are_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("root");
        std::fs::create_dir(&t).unwrap();
        let mut u = Unpacker::new(d.path(), &t).unwrap();
        u.apply_plain("1", &layer(|b| file(b, "bin/su", b"x", 0o4755))[..])
            .unwrap();
        let mode = std::fs::metadata(t.join("bin/su"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o700);
    }

    #[test]
    fn hostile_layers_cannot_write_outside() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("root");
        std::fs::create_dir(&t).unwrap();
        let mut u = Unpacker::new(d.path(), &t).unwrap();
        // Through an absolute symlink and a relative one that climbs: both stay inside.
        let bad = layer(|b| {
            file(b, "etc/passwd", b"root", 0o644);
            symlink(b, "abs", "/etc");
            file(b, "abs/escaped", b"x", 0o644);
            symlink(b, "up", "../../../../..");
            file(b, "up/escaped2", b"x", 0o644);
        });
        u.apply_plain("1", &bad[..]).unwrap();
        assert!(!std::path::Path::new("/etc/escaped").exists());
        assert!(!std::path::Path::new("/escaped2").exists());
        // They landed inside the image, where the links lead when it is `/`.
        assert!(t.join("etc/escaped").exists());
        assert!(t.join("escaped2").exists());
        // A link to a directory the image lacks (here: the host's) is refused, not followed.
        let dangling = layer(|b| {
            symlink(b, "host", d.path().to_str().unwrap());
            file(b, "host/escaped3", b"x", 0o644);
        });
        let err = u.apply_plain("1b", &dangling[..]).unwrap_err();
        assert!(matches!(err, ImageError::Hostile { .. }), "{err}");
        assert!(!d.path().join("escaped3").exists());
        // `..` in a path refuses the image.
        let dotdot = layer(|b| raw_file(b, "../outside"));
        let err = u.apply_plain("2", &dotdot[..]).unwrap_err();
        assert!(matches!(err, ImageError::Hostile { .. }), "{err}");
        assert!(!d.path().join("outside").exists());
    }
}
