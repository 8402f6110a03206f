//! Who can read a store: its owner alone, unless it was created for a group (`--group`). Nothing
//! in a store is ever open to other users.
//!
//! ```text
//!                      private (default)   shared with a group (--group NAME)
//! directories          0700                2750 (setgid: new files inherit the group)
//! objects              0400                0440
//! database, WAL, SHM,  0600                0640
//! lock, logs, staging
//! ```
//!
//! A store's sharing is read from its root directory's mode (group bits set: shared with the
//! root's group), so later runs keep it without being told. Every mode is set explicitly, never
//! left to the umask. Existing stores are never re-permissioned: `grit doctor --db DIR` reports a
//! store that is open to others and prints the commands that close it ([`audit`]).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who besides the owner may read a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Private,
    /// The group of the store's root directory may read.
    Group,
}

impl Sharing {
    /// The sharing of the store whose root (or objects) directory is `dir`.
    ///
    /// Shared when the group may read it and others may not; stores of earlier versions (0755)
    /// count as private: nothing new in them is opened to anyone.
    pub fn of(dir: &Path) -> io::Result<Sharing> {
        let mode = fs::metadata(dir)?.mode();
        Ok(if mode & 0o070 != 0 && mode & 0o007 == 0 {
            Sharing::Group
        } else {
            Sharing::Private
        })
    }

    pub fn dir_mode(self) -> u32 {
        match self {
            Sharing::Private => 0o700,
            Sharing::Group => 0o2750,
        }
    }

    /// The database and its companions, the lock, logs and staged files.
    pub fn file_mode(self) -> u32 {
        match self {
            Sharing::Private => 0o600,
            Sharing::Group => 0o640,
        }
    }

    pub fn object_mode(self) -> u32 {
        match self {
            Sharing::Private => 0o400,
            Sharing::Group => 0o440,
        }
    }
}

/// Create directory `path` with `mode` (its parent must exist). The mode is set explicitly, as
/// the umask may have narrowed it. An existing directory is left as it is.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    match DirBuilder::new().mode(mode & 0o777).create(path) {
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// [`create_dir`] for `path` and any missing parents up to an existing directory.
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dir_all(parent, mode)?;
    }
    create_dir(path, mode)
}

/// Create file `path` with `mode` if it does not exist (mode set explicitly); an existing file is
/// left as it is.
pub fn create_file(path: &Path, mode: u32) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => file.set_permissions(Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Open `path` for appending, creating it readable by its owner only (logs in `<db>/tmp`).
pub fn open_append_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.mode() & 0o7777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Prepare the root of a store that is being created: mode 0700, or with `group` its group set
/// and mode 2750. A directory that exists already keeps its mode unless it is empty (a directory
/// made for the store, such as a systemd `StateDirectory`): grit does not re-permission a
/// directory that holds other things (`--db .`); `grit doctor` reports it instead.
pub fn prepare_new_root(root: &Path, group: Option<&Group>) -> io::Result<Sharing> {
    let sharing = if group.is_some() {
        Sharing::Group
    } else {
        Sharing::Private
    };
    if root.is_dir() && fs::read_dir(root)?.next().is_some() {
        return Sharing::of(root);
    }
    create_dir_all(root, sharing.dir_mode())?;
    if let Some(group) = group {
        nix::unistd::chown(root, None, Some(nix::unistd::Gid::from_raw(group.gid))).map_err(
            |e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "cannot give {} to group {}: {e} (grit must run as root or as a member \
                         of the group)",
                        root.display(),
                        group.name
                    ),
                )
            },
        )?;
    }
    fs::set_permissions(root, Permissions::from_mode(sharing.dir_mode()))?;
    Ok(sharing)
}

/// A group named on the command line.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

impl Group {
    /// Look up group `name` (or a numeric gid).
    pub fn lookup(name: &str) -> Result<Group, String> {
        let found = match name.parse::<u32>() {
            Ok(gid) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
            Err(_) => nix::unistd::Group::from_name(name),
        };
        match found {
            Ok(Some(g)) => Ok(Group {
                name: g.name,
                gid: g.gid.as_raw(),
            }),
            Ok(None) => Err(format!("no such group: {name}")),
            Err(e) => Err(format!("looking up group {name}: {e}")),
        }
    }
}

/// One path of a store that is open to more users than its sharing allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub mode: u32,
}

/// What [`audit`] found: the paths open to others, and the commands that close the store.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Paths readable, writable or searchable by users other than the owner and the store's
    /// group (at most [`AUDIT_SHOWN`] are kept; `open_count` counts them all).
    pub open: Vec<Finding>,
    pub open_count: u64,
    /// Shell commands that set every mode as a new store of the same sharing has them.
    pub fix: Vec<String>,
    /// For a private store: the commands that share it with a group instead.
    pub share: Vec<String>,
}

/// Paths listed by [`audit`]; the rest are counted.
pub const AUDIT_SHOWN: usize = 10;

/// Check every directory and file of the store at `root` for access by "other" users (and, in a
/// private store, by the group). Never changes anything.
pub fn audit(root: &Path) -> io::Result<Audit> {
    let sharing = Sharing::of(root)?;
    let allowed_extra = match sharing {
        Sharing::Private => 0o077,
        Sharing::Group => 0o027,
    };
    let mut audit = Audit::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        let mode = meta.mode() & 0o7777;
        // A symbolic link's own mode means nothing (an unpacked image holds many).
        if mode & allowed_extra != 0 && !meta.file_type().is_symlink() {
            audit.open_count += 1;
            if audit.open.len() < AUDIT_SHOWN {
                audit.open.push(Finding {
                    path: path.clone(),
                    mode,
                });
            }
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    if audit.open_count > 0 {
        audit.fix = commands(root, sharing);
        if sharing == Sharing::Private {
            audit.share = commands(root, Sharing::Group);
        }
    }
    Ok(audit)
}

/// The commands that give every path of the store at `root` the modes of `sharing`.
fn commands(root: &Path, sharing: Sharing) -> Vec<String> {
    let q = shell_quote(root);
    let mut out = Vec::new();
    if sharing == Sharing::Group {
        out.push(format!("chgrp -R GROUP {q}"));
    }
    out.push(format!(
        "find {q} -type d -exec chmod {:o} {{}} +",
        sharing.dir_mode()
    ));
    out.push(format!(
        "find {q}/objects -type f -exec chmod {:o} {{}} +",
        sharing.object_mode()
    ));
    out.push(format!(
        "find {q} -path {q}/objects -prune -o -type f -exec chmod {:o} {{}} +",
        sharing.file_mode()
    ));
    out
}

/// `path` quoted for a POSIX shell when it needs it.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn modes_are_set_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file creation mask (restored below).
        let old = unsafe { libc::umask(0o027) };
        let d = dir.path().join("a/b");
        create_dir_all(&d, 0o2750).unwrap();
        let f = dir.path().join("f");
        create_file(&f, 0o640).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        assert_eq!(mode(&d), 0o2750);
        assert_eq!(mode(&dir.path().join("a")), 0o2750);
        assert_eq!(mode(&f), 0o640);
        // Existing ones are left alone.
        fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        create_file(&f, 0o600).unwrap();
        assert_eq!(mode(&f), 0o644);
    }

    #[test]
    fn sharing_follows_the_group_bits() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        assert_eq!(Sharing::of(dir.path()).unwrap(), Sharing::Private);
        fs::set_permissions(dir.path(), Permissions::from_mode(0o2750)).unwrap();
        assert_eq!(Sharing::of(dir.path()).unwrap(), Sharing::Group);
        // Open to everyone (earlier versions): private from now on, not shared.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        assert_eq!(Sharing::of(dir.path()).unwrap(), Sharing::Private);
    }

    #[test]
    fn audit_lists_what_others_can_reach_and_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("db");
        prepare_new_root(&root, None).unwrap();
        create_dir(&root.join("objects"), 0o700).unwrap();
        create_file(&root.join("grit.sqlite"), 0o600).unwrap();
        let clean = audit(&root).unwrap();
        assert_eq!(clean.open_count, 0, "{clean:?}");
        assert!(clean.fix.is_empty());

        fs::set_permissions(root.join("grit.sqlite"), Permissions::from_mode(0o644)).unwrap();
        let found = audit(&root).unwrap();
        assert_eq!(found.open_count, 1);
        assert_eq!(found.open[0].path, root.join("grit.sqlite"));
        assert_eq!(found.open[0].mode, 0o644);
        assert!(
            found.fix.iter().any(|c| c.contains("chmod 600")),
            "{found:?}"
        );
        assert!(
            found
                .fix
                .iter()
                .any(|c| c.contains("-type d -exec chmod 700"))
        );
        assert!(found.share.iter().any(|c| c.contains("chmod 2750")));
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/var/lib/grit")), "/var/lib/grit");
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
