//! The content-addressed object store: `<db>/objects/ab/cd/<rest>`, read-only files named by the
//! SHA-256 of their content.
//!
//! Objects only ever enter through [`Objects::adopt`]: a file staged in `<db>/tmp` (same filesystem)
//! is fsynced, made read-only and renamed into place, so a reader never sees a partial object. An
//! object that already exists is not rewritten: identical content is stored once.

use std::fs::{self, File, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::access::Sharing;

/// Size of the read buffer used when hashing files.
const HASH_BUFFER: usize = 256 * 1024;

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
        debug_assert!(hash.len() > 4 && hash.is_ascii());
        self.root
            .join(&hash[0..2])
            .join(&hash[2..4])
            .join(&hash[4..])
    }

    /// Move `staged` into the store under `hash`. Returns true when the object is new.
    ///
    /// The caller guarantees that `hash` is the SHA-256 of the file's content.
    pub fn adopt(&self, staged: &Path, hash: &str) -> io::Result<bool> {
        let target = self.path(hash);
        if target.is_file() {
            remove_if_exists(staged)?;
            return Ok(false);
        }
        let file = File::open(staged)?;
        let sharing = self.sharing();
        file.set_permissions(Permissions::from_mode(sharing.object_mode()))?;
        // Durable content before the name: a crash after the rename must not expose a short file.
        file.sync_all()?;
        drop(file);
        if let Some(parent) = target.parent() {
            super::access::create_dir_all(parent, sharing.dir_mode())?;
        }
        fs::rename(staged, &target)?;
        Ok(true)
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
}

/// SHA-256 (lowercase hex) and size of a file's content, streamed.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
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
}
