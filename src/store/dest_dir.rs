//! Files and directories grit creates under a destination the user named (`grit export --to DIR`
//! or `--tar FILE`, `grit backup DEST`), which may sit in a directory other users can write to
//! (`/tmp`, a group's share) and so hold symbolic links someone else planted.
//!
//! Nothing is created through a symbolic link. A directory is made with `mkdir` and then opened
//! with `O_NOFOLLOW | O_DIRECTORY`; what lies below it is reached from that descriptor, never by
//! its path again; a file is written under a fresh name created with `O_EXCL` and renamed over its
//! target, which replaces a link or an earlier file there instead of writing through it. A
//! destination that is itself a symbolic link is refused ([`DestError::Symlink`], exit 2), and so
//! is a link where grit needs a directory below it. Directories above the destination that exist
//! already are the user's own path and are followed as usual.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

/// Why a destination could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// The destination, or a directory grit needs below it, is a symbolic link.
    #[error(
        "refusing to write to {path}: it is a symbolic link, and in a directory other users can write to it may have been planted by one of them\n  help: remove the link, or give the path it points to if that is where the output belongs"
    )]
    Symlink { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DestError {
    fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        DestError::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    /// The I/O error underneath, for errors that name the path themselves.
    pub fn into_source(self) -> io::Error {
        match self {
            DestError::Io { source, .. } => source,
            symlink @ DestError::Symlink { .. } => io::Error::other(symlink),
        }
    }
}

/// An open directory under a destination: what grit creates in it is created relative to this
/// descriptor.
#[derive(Debug)]
pub struct DestDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl DestDir {
    /// The directory `path`, created with any missing parents when it does not exist: with
    /// `mode` set explicitly, or with `None` 0777 under the umask. `path` itself must not be a
    /// symbolic link.
    pub fn create(path: &Path, mode: Option<u32>) -> Result<DestDir, DestError> {
        match split(path) {
            Some((parent, name)) => ancestor(parent, mode)?.dir(name, mode),
            // `/` or a path ending in `..`: nothing there is a link someone could plant.
            None => open_followed(path),
        }
    }

    /// The existing directory `path`, as the user named it (links followed): the directory of a
    /// file the user named.
    pub fn open(path: &Path) -> Result<DestDir, DestError> {
        open_followed(if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Subdirectory `name`, created as in [`DestDir::create`] when missing; a symbolic link
    /// there is refused.
    pub fn dir(&self, name: &OsStr, mode: Option<u32>) -> Result<DestDir, DestError> {
        let path = self.path.join(name);
        let first = Mode::from_bits_truncate(mode.unwrap_or(0o777) & 0o777);
        let created = match mkdirat(&self.fd, name, first) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(DestError::io(path, e)),
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(_) if self.is_symlink(name) => return Err(DestError::Symlink { path }),
            Err(e) => return Err(DestError::io(path, e)),
        };
        if created && let Some(mode) = mode {
            // Set explicitly: the umask may have narrowed it.
            fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| DestError::io(&path, e))?;
        }
        Ok(DestDir { fd, path })
    }

    /// The directory that holds `relative` (made of plain names), created as in
    /// [`DestDir::create`], and the name of its last part.
    pub fn parent_of<'a>(
        &self,
        relative: &'a Path,
        mode: Option<u32>,
    ) -> Result<(DestDir, &'a OsStr), DestError> {
        let mut names = Vec::new();
        for part in relative.components() {
            match part {
                Component::Normal(name) => names.push(name),
                _ => {
                    return Err(DestError::io(
                        self.path.join(relative),
                        io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"),
                    ));
                }
            }
        }
        let Some((last, dirs)) = names.split_last() else {
            return Err(DestError::io(
                &self.path,
                io::Error::new(io::ErrorKind::InvalidInput, "an empty name"),
            ));
        };
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| DestError::io(&self.path, e))?;
        let mut dir = DestDir {
            fd,
            path: self.path.clone(),
        };
        for name in dirs {
            dir = dir.dir(name, mode)?;
        }
        Ok((dir, last))
    }

    /// Whether `name` in this directory is a symbolic link.
    pub fn is_symlink(&self, name: &OsStr) -> bool {
        fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
    }

    /// Whether the directory holds nothing.
    pub fn is_empty(&self) -> Result<bool, DestError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| DestError::io(&self.path, e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| DestError::io(&self.path, e))?;
        for entry in dir.iter() {
            let entry = entry.map_err(|e| DestError::io(&self.path, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A new file that takes the place of `name` once [committed](NewFile::commit): it is
    /// written as `<name>.<random>.partial`, created with `O_EXCL` and `mode` (under the umask).
    pub fn new_file(&self, name: &OsStr, mode: u32) -> Result<NewFile<'_>, DestError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let random = RandomState::new();
        let mut attempt = 0u32;
        loop {
            let mut temp = name.to_owned();
            temp.push(format!(".{:016x}.partial", random.hash_one(attempt)));
            match openat(
                &self.fd,
                temp.as_os_str(),
                flags,
                Mode::from_bits_truncate(mode),
            ) {
                Ok(fd) => {
                    return Ok(NewFile {
                        dir: self,
                        name: name.to_owned(),
                        temp,
                        file: File::from(fd),
                        committed: false,
                    });
                }
                Err(Errno::EEXIST) if attempt < 100 => attempt += 1,
                Err(e) => return Err(DestError::io(self.path.join(temp), e)),
            }
        }
    }

    /// Hard-links the file `source` as `name` here; an existing `name` (a link included) is an
    /// error, never written through.
    pub fn link(&self, source: &Path, name: &OsStr) -> io::Result<()> {
        linkat(AT_FDCWD, source, &self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }
}

/// A file being written under a temporary name in a [`DestDir`]; removed unless committed.
pub struct NewFile<'a> {
    dir: &'a DestDir,
    name: OsString,
    temp: OsString,
    file: File,
    committed: bool,
}

impl NewFile<'_> {
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where the file ends up.
    pub fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    /// Renames the written file over its target: an earlier file or a symbolic link there is
    /// replaced, not written through.
    pub fn commit(mut self) -> Result<(), DestError> {
        let (dir, temp, name) = (&self.dir.fd, self.temp.as_os_str(), self.name.as_os_str());
        renameat(dir, temp, dir, name).map_err(|e| DestError::io(self.path(), e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for NewFile<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = unlinkat(
                &self.dir.fd,
                self.temp.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// `path` as its parent (`.` for a bare name) and its last name; `None` for `/` and paths that
/// end in `..`.
fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    Some((parent.unwrap_or(Path::new(".")), name))
}

/// The directory `path` with links followed, or created (with missing parents) as in
/// [`DestDir::dir`] where it does not exist.
fn ancestor(path: &Path, mode: Option<u32>) -> Result<DestDir, DestError> {
    match open_followed(path) {
        Err(DestError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            match split(path) {
                Some((parent, name)) => ancestor(parent, mode)?.dir(name, mode),
                None => Err(DestError::io(path, source)),
            }
        }
        other => other,
    }
}

fn open_followed(path: &Path) -> Result<DestDir, DestError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = openat(AT_FDCWD, path, flags, Mode::empty()).map_err(|e| DestError::io(path, e))?;
    Ok(DestDir {
        fd,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn creates_parents_and_refuses_a_linked_destination() {
        let root = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        let dir = DestDir::create(&root.path().join("a/b"), Some(0o700)).unwrap();
        assert!(dir.is_empty().unwrap());
        std::os::unix::fs::symlink(victim.path(), root.path().join("x")).unwrap();
        let linked = DestDir::create(&root.path().join("x"), None);
        assert!(
            matches!(linked, Err(DestError::Symlink { .. })),
            "{linked:?}"
        );
        let below = dir.parent_of(Path::new("x/y"), None).unwrap().0;
        assert_eq!(below.path(), root.path().join("a/b/x"));
        std::os::unix::fs::symlink(victim.path(), below.path().join("z")).unwrap();
        let through = below.parent_of(Path::new("z/f"), None);
        assert!(
            matches!(through, Err(DestError::Symlink { .. })),
            "{through:?}"
        );
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_new_file_replaces_a_link_and_is_removed_unless_committed() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("out")).unwrap();
        let dir = DestDir::open(root.path()).unwrap();
        let mut file = dir.new_file(OsStr::new("out"), 0o644).unwrap();
        file.file().write_all(b"new").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(root.path().join("out")).unwrap(),
            "new"
        );
        drop(dir.new_file(OsStr::new("gone"), 0o644).unwrap());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2);
    }
}
