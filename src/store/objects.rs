//! The content-addressed object store: `<db>/objects/ab/cd/<rest>`, read-only files named by the
//! SHA-256 of their content.
//!
//! Objects only ever enter through [`Objects::adopt`]: a file staged in `<db>/tmp` (same filesystem)
//! is fsynced, made read-only and renamed into place, so a reader never sees a partial object. An
//! object that already exists is not rewritten: identical content is stored once.
//!
//! Objects only ever leave through [`VerifiedReader`]: every read (`cat`, `export`, `log`, a task's
//! input) checks the size and SHA-256 recorded for the object while it streams, and ends in an
//! [`ObjectError`] instead of a clean EOF when the bytes are not the ones the store recorded.

use std::fs::{self, File, Permissions};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::access::Sharing;

/// From this many new objects in one [`Objects::adopt_all`], one `syncfs` makes them durable
/// instead of an `fsync` each. `syncfs` also writes whatever else is dirty on the store's
/// filesystem, which a few files are not worth.
pub const SYNCFS_FROM: usize = 16;

/// Size of the read buffer used when hashing files.
const HASH_BUFFER: usize = 256 * 1024;

/// Create `path` and its missing parents as directories of a private store (0700), for copies
/// grit makes outside a run: backups and the quarantine.
pub fn create_store_dirs(path: &Path) -> io::Result<()> {
    super::access::create_dir_all(path, Sharing::Private.dir_mode())
}

#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
    /// Who may read new objects: read from the objects directory's mode at the first adopt.
    sharing: OnceLock<Sharing>,
}

impl Objects {
    pub fn new(root: PathBuf) -> Self {
        Objects {
            root,
            sharing: OnceLock::new(),
        }
    }

    fn sharing(&self) -> Sharing {
        *self
            .sharing
            .get_or_init(|| Sharing::of(&self.root).unwrap_or(Sharing::Private))
    }

    /// Where the object with this hex hash lives (whether or not it exists).
    pub fn path(&self, hash: &str) -> PathBuf {
        self.root.join(Self::relative(hash))
    }

    /// Where the object with this hex hash lives, relative to the objects directory: `ab/cd/…`.
    pub fn relative(hash: &str) -> PathBuf {
        debug_assert!(hash.len() > 4 && hash.is_ascii());
        Path::new(&hash[0..2]).join(&hash[2..4]).join(&hash[4..])
    }

    /// Move `staged` into the store under `hash`. Returns true when the object is new.
    ///
    /// The caller guarantees that `hash` is the SHA-256 of the file's content.
    pub fn adopt(&self, staged: &Path, hash: &str) -> io::Result<bool> {
        Ok(self.adopt_all([(staged, hash)])? == 1)
    }

    /// Move many staged files into the store, each under its hash (as [`Objects::adopt`]);
    /// returns how many objects were new. Every new object's content is durable before its
    /// name appears: one at a time with `fsync` for a few, and with one `syncfs` of the store's
    /// filesystem from [`SYNCFS_FROM`] on. Each `fsync` ends in a flush of the disk's cache
    /// (≈ 1–3 ms here even for a file already written back), so a source task writing 100,000
    /// files spent most of its time on them (BENCHMARKS.md, issue 16), where `syncfs` flushes
    /// once.
    ///
    /// The caller guarantees that each hash is the SHA-256 of its file's content.
    pub fn adopt_all<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> io::Result<usize> {
        let sharing = self.sharing();
        // No descriptor is kept per file: a task may leave more files than grit may open.
        let mut new: Vec<(&Path, &str)> = Vec::new();
        let mut in_batch: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (staged, hash) in files {
            let size = fs::symlink_metadata(staged)?.len();
            // Identical content is stored once (also twice in one batch). An existing object of
            // another size is damaged (truncated, appended to): the staged bytes, hashed on the
            // way in, replace it. Damage that keeps the size is found by the next verified read,
            // not here (that would mean hashing the object again on every dedup).
            let duplicate = !in_batch.insert(hash)
                || fs::symlink_metadata(self.path(hash))
                    .is_ok_and(|existing| existing.is_file() && existing.len() == size);
            if duplicate {
                remove_if_exists(staged)?;
                continue;
            }
            fs::set_permissions(staged, Permissions::from_mode(sharing.object_mode()))?;
            new.push((staged, hash));
        }
        // Durable content before the name: a crash after the rename must not expose a short
        // file.
        if new.len() >= SYNCFS_FROM {
            if let Some((staged, _)) = new.first() {
                nix::unistd::syncfs(File::open(staged)?).map_err(io::Error::from)?;
            }
        } else {
            for (staged, _) in &new {
                File::open(staged)?.sync_all()?;
            }
        }
        let adopted = new.len();
        for (staged, hash) in new {
            let target = self.path(hash);
            if let Some(parent) = target.parent() {
                super::access::create_dir_all(parent, sharing.dir_mode())?;
            }
            fs::rename(staged, &target)?;
        }
        Ok(adopted)
    }

    /// Delete an object; returns the bytes freed (0 if it was already gone).
    pub fn remove(&self, hash: &str) -> io::Result<u64> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(meta) => {
                fs::remove_file(&path)?;
                Ok(meta.len())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Every object on disk as (hash, size), streamed to `each`. Used by gc, which must also find
    /// objects that no row references (left by a crash between rename and commit).
    pub fn walk(&self, mut each: impl FnMut(String, u64) -> io::Result<()>) -> io::Result<()> {
        let Ok(level1) = fs::read_dir(&self.root) else {
            return Ok(());
        };
        for a in level1 {
            let a = a?;
            for b in fs::read_dir(a.path())? {
                let b = b?;
                for c in fs::read_dir(b.path())? {
                    let c = c?;
                    let hash = format!(
                        "{}{}{}",
                        a.file_name().to_string_lossy(),
                        b.file_name().to_string_lossy(),
                        c.file_name().to_string_lossy()
                    );
                    each(hash, c.metadata()?.len())?;
                }
            }
        }
        Ok(())
    }

    /// A checker for "does this object exist?" over many objects (see [`Presence`]).
    pub fn presence(&self) -> Presence<'_> {
        Presence {
            objects: self,
            shard: None,
        }
    }
}

/// Answers "is this object's file there?" for many objects, cheaply: it keeps a descriptor of
/// the first-level fan-out directory it last looked in, so each answer is one `fstatat` of two
/// path components instead of a lookup of every component of the absolute path. Asked in hash
/// order, it opens each fan-out directory once. The end of every run asks this for every live
/// resource; at 100,000 live resources the path walks were most of a no-op run (BENCHMARKS.md,
/// issue 16).
pub struct Presence<'a> {
    objects: &'a Objects,
    /// The fan-out directory last opened: its two-letter name and descriptor, `None` when it
    /// does not exist.
    shard: Option<([u8; 2], Option<OwnedFd>)>,
}

impl Presence<'_> {
    /// Whether an object with this hash exists (as any kind of file: the caller reports a
    /// missing one; a wrong one is `grit verify`'s business).
    pub fn exists(&mut self, hash: &str) -> bool {
        let bytes = hash.as_bytes();
        if bytes.len() <= 4
            || !bytes[..4]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            // Not the shape of a hash grit writes, so no object of grit's: the plain way, for
            // the record, where the path can be formed at all.
            return hash.len() > 4 && self.by_path(hash);
        }
        let prefix = [bytes[0], bytes[1]];
        if self.shard.as_ref().map(|(name, _)| *name) != Some(prefix) {
            let path = self.objects.root.join(&hash[0..2]);
            match open_dir_path(&path) {
                Ok(fd) => self.shard = Some((prefix, Some(fd))),
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => {
                    self.shard = Some((prefix, None))
                }
                // Out of descriptors, or anything else: this answer must not depend on it.
                Err(_) => {
                    self.shard = None;
                    return self.by_path(hash);
                }
            }
        }
        let Some((_, Some(dir))) = &self.shard else {
            return false;
        };
        // "cd/<rest>", the path under the fan-out directory, built on the stack: this runs for
        // every live object at the end of every run.
        let mut path = [0u8; 128];
        let tail = &bytes[2..];
        let Some(rest) = path.get_mut(..tail.len() + 1) else {
            return self.by_path(hash);
        };
        rest[..2].copy_from_slice(&tail[..2]);
        rest[2] = b'/';
        rest[3..].copy_from_slice(&tail[2..]);
        let rest: &[u8] = rest;
        // `faccessat(F_OK)` rather than `fstatat`: only the lookup, without filling in a stat
        // (the kernel's getattr and security hooks were 15 % of a no-op run at 100,000).
        // AT_EACCESS spares the kernel switching credentials.
        let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW | nix::fcntl::AtFlags::AT_EACCESS;
        match nix::unistd::faccessat(dir, rest, nix::unistd::AccessFlags::F_OK, flags) {
            Ok(()) => true,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => false,
            Err(_) => self.by_path(hash),
        }
    }

    fn by_path(&self, hash: &str) -> bool {
        fs::symlink_metadata(self.objects.path(hash)).is_ok()
    }
}

/// An `O_PATH` descriptor of a directory.
fn open_dir_path(path: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    open(path, flags, Mode::empty())
}

/// Why an object cannot be served: it is gone, or its bytes are not the recorded ones.
///
/// `what` names the object for people: the resource name, or "the log of task 42".
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(
        "{what} (object {hash}) is missing: {path}\n  help: the store is damaged; run `grit verify --repair`"
    )]
    Missing {
        what: String,
        hash: String,
        path: PathBuf,
    },
    #[error(
        "{what} (object {hash}) is corrupt: {problem}: {path}\n  help: the store is damaged; run `grit verify --repair`"
    )]
    Corrupt {
        what: String,
        hash: String,
        path: PathBuf,
        problem: String,
    },
    #[error("{what} (object {hash}): {path}: {source}")]
    Io {
        what: String,
        hash: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ObjectError {
    /// The object error carried inside an `io::Error` (as [`VerifiedReader`] reports it through
    /// the `Read` trait), if any. `io::Error::source` skips the wrapped error itself, so callers
    /// that walk error chains look here.
    pub fn in_io(error: &io::Error) -> Option<&ObjectError> {
        error.get_ref().and_then(|inner| inner.downcast_ref())
    }

    /// Missing or corrupt, as opposed to an I/O error on a healthy store.
    pub fn is_damage(&self) -> bool {
        !matches!(self, ObjectError::Io { .. })
    }
}

/// A reader over one object that checks, while it streams, that the bytes are those recorded:
/// more bytes than the recorded size fail at once, and at EOF the size and SHA-256 must match.
/// A mismatch is returned as an `io::Error` wrapping [`ObjectError::Corrupt`] instead of EOF, so
/// `io::copy` and friends stop with an error and a consumer never sees a clean end of bad data.
pub struct VerifiedReader {
    file: File,
    hasher: Sha256,
    read: u64,
    expected_size: Option<u64>,
    hash: String,
    what: String,
    path: PathBuf,
    done: bool,
}

impl VerifiedReader {
    /// Open the object `hash`; `size` is the recorded size when the store has one (resources do,
    /// task logs do not).
    pub fn open(
        objects: &Objects,
        hash: &str,
        size: Option<u64>,
        what: &str,
    ) -> Result<VerifiedReader, ObjectError> {
        let path = objects.path(hash);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ObjectError::Missing {
                    what: what.to_string(),
                    hash: hash.to_string(),
                    path,
                });
            }
            Err(source) => {
                return Err(ObjectError::Io {
                    what: what.to_string(),
                    hash: hash.to_string(),
                    path,
                    source,
                });
            }
        };
        Ok(VerifiedReader {
            file,
            hasher: Sha256::new(),
            read: 0,
            expected_size: size,
            hash: hash.to_string(),
            what: what.to_string(),
            path,
            done: false,
        })
    }

    fn corrupt(&self, problem: String) -> ObjectError {
        ObjectError::Corrupt {
            what: self.what.clone(),
            hash: self.hash.clone(),
            path: self.path.clone(),
            problem,
        }
    }

    /// Read to the end, discarding the bytes: the object is intact when this returns Ok.
    pub fn verify(mut self) -> Result<(), ObjectError> {
        let mut buffer = hash_buffer(self.expected_size);
        loop {
            match self.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.into_object_error(e)),
            }
        }
    }

    /// Read everything into memory; nothing is returned unless it all checks out.
    pub fn read_verified(mut self) -> Result<Vec<u8>, ObjectError> {
        let mut content = Vec::with_capacity(self.expected_size.unwrap_or(0) as usize);
        match self.read_to_end(&mut content) {
            Ok(_) => Ok(content),
            Err(e) => Err(self.into_object_error(e)),
        }
    }

    /// The object error inside `e`, or `e` as an I/O error on this object.
    fn into_object_error(self, e: io::Error) -> ObjectError {
        match e.downcast::<ObjectError>() {
            Ok(inner) => inner,
            Err(source) => ObjectError::Io {
                what: self.what,
                hash: self.hash,
                path: self.path,
                source,
            },
        }
    }
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if let Some(expected) = self.expected_size
            && self.read > expected
        {
            return Err(io::Error::other(
                self.corrupt(format!("longer than its recorded {expected} bytes")),
            ));
        }
        if n > 0 {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        if let Some(expected) = self.expected_size
            && self.read != expected
        {
            return Err(io::Error::other(self.corrupt(format!(
                "{} bytes instead of the recorded {expected}",
                self.read
            ))));
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if actual != self.hash {
            return Err(io::Error::other(
                self.corrupt(format!("its content hashes to {actual}")),
            ));
        }
        self.done = true;
        Ok(0)
    }
}

/// Identity of an object file as last verified: same inode, size and change time means no write
/// through the filesystem has touched it since (any write or chmod updates ctime). Used to hash an
/// input once per run however many tasks read it; it cannot see bit rot between two reads of the
/// same run, which is why it lives only as long as one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl FileStamp {
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        let meta = fs::metadata(path)?;
        Ok(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

/// Objects verified during one run, so each is hashed once however many tasks read it.
#[derive(Debug, Default)]
pub struct VerifiedCache {
    seen: std::sync::Mutex<std::collections::HashMap<String, FileStamp>>,
}

impl VerifiedCache {
    /// Check the object `hash` (size `size`) before a task reads it, unless it was verified
    /// earlier in this run and its file has not changed since.
    pub fn verify(
        &self,
        objects: &Objects,
        hash: &str,
        size: Option<u64>,
        what: &str,
    ) -> Result<(), ObjectError> {
        let path = objects.path(hash);
        let before = FileStamp::of(&path).ok();
        if let (Some(stamp), Ok(seen)) = (before, self.seen.lock())
            && seen.get(hash) == Some(&stamp)
        {
            return Ok(());
        }
        VerifiedReader::open(objects, hash, size, what)?.verify()?;
        // Remember the stamp taken before hashing: a change during the hash shows up as a
        // different stamp next time, and the object is hashed again.
        if let (Some(stamp), Ok(mut seen)) = (before, self.seen.lock()) {
            seen.insert(hash.to_string(), stamp);
        }
        Ok(())
    }
}

/// A zeroed buffer for streaming a file of about `size` bytes through SHA-256: no bigger than the
/// file (plus the byte that finds its end), so a tiny object (the common case, one per task)
/// does not cost a 256 KiB allocation and clearing it.
fn hash_buffer(size: Option<u64>) -> Vec<u8> {
    let len = size.map_or(HASH_BUFFER, |size| {
        usize::try_from(size.saturating_add(1)).map_or(HASH_BUFFER, |len| len.min(HASH_BUFFER))
    });
    vec![0u8; len]
}

/// SHA-256 (lowercase hex) and size of a file's content, streamed.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    hash_open_file(&mut File::open(path)?, |_| Ok(()))
}

/// [`hash_file`] of a file already open (from its current offset); `also` sees every chunk
/// hashed, as a copy being written does.
pub fn hash_open_file(
    file: &mut File,
    mut also: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = hash_buffer(file.metadata().ok().map(|m| m.len()));
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        also(&buffer[..n])?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_sees_present_objects_and_misses_deleted_ones_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        super::super::access::create_dir(&root, 0o700).unwrap();
        let objects = Objects::new(root.clone());
        let mut hashes = Vec::new();
        for content in [&b"one\n"[..], b"two\n", b"three\n"] {
            let staged = dir.path().join("staged");
            fs::write(&staged, content).unwrap();
            let (hash, _) = hash_file(&staged).unwrap();
            objects.adopt(&staged, &hash).unwrap();
            hashes.push(hash);
        }
        let absent = "ab".repeat(32);
        let mut presence = objects.presence();
        assert!(hashes.iter().all(|h| presence.exists(h)));
        assert!(!presence.exists(&absent), "never stored");
        assert!(!presence.exists("zz"), "not the shape of a hash");

        // A deleted object and a deleted fan-out directory, seen by a checker that already
        // holds that directory's descriptor and by a fresh one.
        assert_ne!(
            hashes[1][0..2],
            hashes[2][0..2],
            "the fixture needs two fan-out directories"
        );
        fs::remove_file(objects.path(&hashes[0])).unwrap();
        let second_shard = root.join(&hashes[1][0..2]);
        fs::set_permissions(&second_shard, Permissions::from_mode(0o700)).unwrap();
        fs::remove_dir_all(&second_shard).unwrap();
        for mut checker in [presence, objects.presence()] {
            assert!(!checker.exists(&hashes[0]));
            assert!(!checker.exists(&hashes[1]));
            assert!(checker.exists(&hashes[2]));
        }
        // Without `objects/` nothing exists.
        fs::remove_dir_all(&root).unwrap();
        assert!(!objects.presence().exists(&hashes[2]));
    }

    #[test]
    fn adopt_stores_once_read_only_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        super::super::access::create_dir(&dir.path().join("objects"), 0o700).unwrap();
        let objects = Objects::new(dir.path().join("objects"));
        let staged = dir.path().join("a");
        fs::write(&staged, b"hello\n").unwrap();
        let (hash, size) = hash_file(&staged).unwrap();
        assert_eq!(
            hash,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(size, 6);
        assert!(objects.adopt(&staged, &hash).unwrap());
        assert!(!staged.exists());
        let stored = objects.path(&hash);
        assert!(
            stored.ends_with("58/91/b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        );
        assert_eq!(fs::read(&stored).unwrap(), b"hello\n");
        assert_eq!(
            fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(
            fs::metadata(stored.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o700
        );

        fs::write(&staged, b"hello\n").unwrap();
        assert!(
            !objects.adopt(&staged, &hash).unwrap(),
            "second copy is deduplicated"
        );
        assert!(!staged.exists());
        let mut seen = Vec::new();
        objects
            .walk(|h, size| {
                seen.push((h, size));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![(hash.clone(), 6)]);
        assert_eq!(objects.remove(&hash).unwrap(), 6);
        assert!(!objects.path(&hash).exists());
    }

    #[test]
    fn adopt_all_stores_a_large_batch_once_each_read_only() {
        let dir = tempfile::tempdir().unwrap();
        super::super::access::create_dir(&dir.path().join("objects"), 0o700).unwrap();
        let objects = Objects::new(dir.path().join("objects"));
        // More files than SYNCFS_FROM (the syncfs path), two with the same content, and one
        // whose object exists already.
        let mut files = Vec::new();
        for i in 0..SYNCFS_FROM + 4 {
            let staged = dir.path().join(format!("staged{i}"));
            let content = if i == 1 {
                "0".to_string()
            } else {
                i.to_string()
            };
            fs::write(&staged, content).unwrap();
            let (hash, _) = hash_file(&staged).unwrap();
            files.push((staged, hash));
        }
        let (early_staged, early_hash) = &files[5];
        let copy = dir.path().join("early");
        fs::copy(early_staged, &copy).unwrap();
        assert!(objects.adopt(&copy, early_hash).unwrap());

        let new = objects
            .adopt_all(files.iter().map(|(p, h)| (p.as_path(), h.as_str())))
            .unwrap();
        assert_eq!(
            new,
            SYNCFS_FROM + 4 - 2,
            "a duplicate and an existing object"
        );
        for (i, (staged, hash)) in files.iter().enumerate() {
            assert!(!staged.exists(), "every staged file is gone");
            let stored = objects.path(hash);
            let expected = if i == 1 {
                "0".to_string()
            } else {
                i.to_string()
            };
            assert_eq!(fs::read_to_string(&stored).unwrap(), expected);
            assert_eq!(
                fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
                0o400
            );
        }
        // A small batch takes the fsync path, with the same result.
        let staged = dir.path().join("small");
        fs::write(&staged, b"small").unwrap();
        let (hash, _) = hash_file(&staged).unwrap();
        assert_eq!(
            objects
                .adopt_all([(staged.as_path(), hash.as_str())])
                .unwrap(),
            1
        );
        assert_eq!(fs::read(objects.path(&hash)).unwrap(), b"small");
    }

    fn stored(content: &[u8]) -> (tempfile::TempDir, Objects, String) {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::new(dir.path().join("objects"));
        let staged = dir.path().join("staged");
        fs::write(&staged, content).unwrap();
        let (hash, _) = hash_file(&staged).unwrap();
        objects.adopt(&staged, &hash).unwrap();
        (dir, objects, hash)
    }

    fn damage(objects: &Objects, hash: &str, content: &[u8]) {
        let path = objects.path(hash);
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, content).unwrap();
    }

    #[test]
    fn verified_reader_passes_intact_objects_and_fails_damaged_ones() {
        let (_dir, objects, hash) = stored(b"hello\n");
        let read = |size| VerifiedReader::open(&objects, &hash, size, "greeting")?.read_verified();
        assert_eq!(read(Some(6)).unwrap(), b"hello\n");
        assert_eq!(read(None).unwrap(), b"hello\n");
        // The recorded size disagrees with the file: corrupt, before hashing is even finished.
        let short = read(Some(7)).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("6 bytes instead of the recorded 7"),
            "{short}"
        );
        let long = read(Some(5)).unwrap_err();
        assert!(
            long.to_string().contains("longer than its recorded 5"),
            "{long}"
        );

        // `verify` sizes its buffer by the recorded size; a wrong size is still caught.
        let verify = |size| VerifiedReader::open(&objects, &hash, size, "greeting")?.verify();
        assert!(verify(Some(6)).is_ok() && verify(None).is_ok());
        for wrong in [0, 1, 5, 7, 1 << 20] {
            assert!(verify(Some(wrong)).unwrap_err().is_damage(), "size {wrong}");
        }

        damage(&objects, &hash, b"hellO\n");
        let flipped = read(Some(6)).unwrap_err();
        assert!(flipped.is_damage());
        let text = flipped.to_string();
        assert!(text.contains("greeting") && text.contains(&hash), "{text}");
        assert!(text.contains("grit verify --repair"), "{text}");

        // Through `io::copy` the damage is an error, never a clean EOF.
        let mut reader = VerifiedReader::open(&objects, &hash, Some(6), "greeting").unwrap();
        let error = io::copy(&mut reader, &mut io::sink()).unwrap_err();
        assert!(matches!(
            ObjectError::in_io(&error),
            Some(ObjectError::Corrupt { .. })
        ));

        fs::remove_file(objects.path(&hash)).unwrap();
        assert!(matches!(read(Some(6)), Err(ObjectError::Missing { .. })));
    }

    #[test]
    fn hash_file_hashes_files_smaller_and_larger_than_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 3, HASH_BUFFER - 1, HASH_BUFFER, 3 * HASH_BUFFER + 7] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            fs::write(&path, &content).unwrap();
            let expected = hex::encode(Sha256::digest(&content));
            assert_eq!(hash_file(&path).unwrap(), (expected, len as u64), "{len}");
        }
    }

    #[test]
    fn the_run_cache_hashes_again_after_a_change() {
        let (_dir, objects, hash) = stored(b"data\n");
        let cache = VerifiedCache::default();
        cache.verify(&objects, &hash, Some(5), "x").unwrap();
        cache.verify(&objects, &hash, Some(5), "x").unwrap();
        damage(&objects, &hash, b"DATA\n");
        assert!(cache.verify(&objects, &hash, Some(5), "x").is_err());
    }
}
