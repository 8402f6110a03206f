//! Container images for `image = "…"` steps: what an image is (a root filesystem directory, an
//! OCI image layout, or a `docker save` archive), its digest (part of the step version), and the
//! root filesystem a task's sandbox uses as its `/` (see `sandbox::rootfs`).
//!
//! # Layout
//! - [`tree`]: the digest of a directory image (a hash over its whole tree).
//! - `archive`: reading OCI layouts and `docker save` archives: which manifest, which layers.
//! - `unpack`: applying layers to a directory, safely against hostile archives.
//!
//! # Where images live
//! A directory is used in place (it is mounted read-only, nosuid and nodev). An OCI layout or
//! a `docker save` archive is unpacked once into `<store>/images/<hex digest>/rootfs`, atomically
//! (into a temporary directory renamed into place), and reused by every later run.

mod archive;
pub mod tree;
mod unpack;

use std::path::{Path, PathBuf};

/// What kind of image a step names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A root filesystem directory (also a Nix-built one, e.g. `pkgs.dockerTools` or `buildEnv`).
    Rootfs,
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// A `docker save` archive: a tar holding `manifest.json`, plain or gzip-compressed (as
    /// `pkgs.dockerTools.buildImage` writes it).
    DockerArchive,
}

impl ImageKind {
    pub fn describe(self) -> &'static str {
        match self {
            ImageKind::Rootfs => "root filesystem directory",
            ImageKind::OciLayout => "OCI image layout",
            ImageKind::DockerArchive => "docker save archive",
        }
    }
}

/// The image of one step, identified when the manifest is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The absolute path of the image on the host.
    pub source: PathBuf,
    pub kind: ImageKind,
    /// `sha256:<hex>`: the tree hash of a directory, the manifest digest of an OCI layout, the
    /// image id (config digest) of a `docker save` archive, the hash of the whole file of a
    /// gzip-compressed one.
    pub digest: String,
    /// The step names no shell: it runs under bash in strict mode when the image has bash, else
    /// under `sh -ec` ([`Image::shell`]).
    pub choose_shell: bool,
}

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an image: {reason}", path.display())]
    NotAnImage { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// A layer entry that would leave the image or is otherwise refused.
    #[error("{}: layer {layer}: {reason}; the image is refused", path.display())]
    Hostile {
        path: PathBuf,
        layer: String,
        reason: String,
    },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The conventional `PATH` of a Linux image (Docker's default), used for image steps.
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Image {
    /// Identifies the image at `path` and computes its digest. A directory is hashed in full
    /// (see [`tree`] for the cost); an OCI layout or an archive only has its index read.
    pub fn identify(path: &Path) -> Result<Image, ImageError> {
        let meta = std::fs::metadata(path).map_err(io_error(path))?;
        let (kind, digest) = if meta.is_dir() {
            if path.join("oci-layout").is_file() || path.join("index.json").is_file() {
                (ImageKind::OciLayout, archive::oci_digest(path)?)
            } else {
                (ImageKind::Rootfs, tree::digest(path)?)
            }
        } else if meta.is_file() && archive::is_gzip_file(path)? {
            (
                ImageKind::DockerArchive,
                archive::gzip_archive_digest(path)?,
            )
        } else if meta.is_file() {
            (ImageKind::DockerArchive, archive::docker_digest(path)?)
        } else {
            return Err(ImageError::NotAnImage {
                path: path.to_path_buf(),
                reason: "neither a directory nor a file".into(),
            });
        };
        Ok(Image {
            source: path.to_path_buf(),
            kind,
            digest,
            choose_shell: false,
        })
    }

    /// The hex part of the digest (a directory name).
    fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// The root filesystem the task sees as `/`, for a store at `store_dir`: the directory
    /// itself, or the unpacked copy in the store (which [`Image::prepare`] makes).
    pub fn rootfs(&self, store_dir: &Path) -> PathBuf {
        match self.kind {
            ImageKind::Rootfs => self.source.clone(),
            _ => images_dir(store_dir).join(self.hex()).join("rootfs"),
        }
    }

    /// Whether the image still has to be unpacked into the store.
    pub fn needs_unpack(&self, store_dir: &Path) -> bool {
        self.kind != ImageKind::Rootfs && !self.rootfs(store_dir).is_dir()
    }

    /// Makes [`Image::rootfs`] exist: unpacks an OCI layout or an archive into the store unless
    /// an earlier run did. Returns the root filesystem.
    pub fn prepare(&self, store_dir: &Path) -> Result<PathBuf, ImageError> {
        let rootfs = self.rootfs(store_dir);
        if !self.needs_unpack(store_dir) {
            return Ok(rootfs);
        }
        let images = images_dir(store_dir);
        private_dir(&images)?;
        // A private temporary directory beside the final one: the rename is atomic, and a
        // crash leaves only a `tmp-*` directory that the next unpack of any image removes.
        let tmp = tempfile_dir(&images)?;
        let result = (|| {
            let target = tmp.join("rootfs");
            private_dir(&target)?;
            match self.kind {
                ImageKind::OciLayout => archive::unpack_oci(&self.source, &self.digest, &target)?,
                ImageKind::DockerArchive if archive::is_gzip_file(&self.source)? => {
                    let scratch = tmp.join("archive.tar");
                    archive::unpack_gzip_docker(&self.source, &self.digest, &scratch, &target)?;
                    std::fs::remove_file(&scratch).map_err(io_error(&scratch))?;
                }
                ImageKind::DockerArchive => {
                    archive::unpack_docker(&self.source, &self.digest, &target)?
                }
                ImageKind::Rootfs => {}
            }
            let final_dir = images.join(self.hex());
            match std::fs::rename(&tmp, &final_dir) {
                Ok(()) => Ok(()),
                // Another grit unpacked the same image meanwhile: theirs is as good.
                Err(_) if final_dir.join("rootfs").is_dir() => Ok(()),
                Err(e) => Err(io_error(&final_dir)(e)),
            }
        })();
        if tmp.exists() {
            let _ = remove_tree(&tmp);
        }
        result.map(|()| rootfs)
    }

    /// The shell a step in this image runs under: `shell` as the step names it, or (with
    /// [`Image::choose_shell`]) `shell` only when the prepared image at `rootfs` has bash, else
    /// `sh -ec`.
    pub fn shell(&self, rootfs: &Path, shell: &[String]) -> Vec<String> {
        if self.choose_shell && !Image::has_bash(rootfs) {
            crate::manifest::POSIX_SHELL
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            shell.to_vec()
        }
    }

    /// Whether the image at `rootfs` has an executable bash.
    pub fn has_bash(rootfs: &Path) -> bool {
        // A root in /nix/store links into the store, which its tasks see (`sandbox::rootfs`):
        // there the host's lookup is the task's.
        let in_nix_store = rootfs.starts_with("/nix/store");
        ["usr/bin/bash", "bin/bash", "usr/local/bin/bash"]
            .iter()
            .any(|p| {
                resolve_in_root(rootfs, Path::new(p)).is_some_and(|f| is_executable(&f))
                    || in_nix_store && is_executable(&rootfs.join(p))
            })
    }
}

/// Creates `dir` (owner only, like the rest of the store) unless it exists.
fn private_dir(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io_error(dir)(e)),
        _ => Ok(()),
    }
}

/// `<store>/images`.
pub fn images_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("images")
}

/// Removes a tree without following symbolic links; directories an image made read-only are
/// opened up first (the owner may always change the mode of its own files).
fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn open_up(p: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if meta.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(path);
    std::fs::remove_dir_all(path)
}

/// A new private directory `tmp-<pid>-<n>` under `parent`; stale ones of dead processes are
/// removed on the way.
fn tempfile_dir(parent: &Path) -> Result<PathBuf, ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(rest) = name.strip_prefix("tmp-")
                && let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok())
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = remove_tree(&e.path());
            }
        }
    }
    let pid = std::process::id();
    for n in 0..1000u32 {
        let dir = parent.join(format!("tmp-{pid}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&dir)(e)),
        }
    }
    Err(ImageError::Invalid {
        path: parent.to_path_buf(),
        reason: "cannot create a temporary directory".into(),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `relative` looked up inside `root` as if `root` were `/`: symbolic links (absolute ones
/// included) are followed within `root` and never leave it. `None` if it does not exist.
pub fn resolve_in_root(root: &Path, relative: &Path) -> Option<PathBuf> {
    fn components(p: &Path) -> Vec<std::ffi::OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    }
    use std::path::Component;
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    // A stack: the next component to look at is on top.
    let mut pending = components(relative);
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            parts.pop();
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&parts);
        here.push(&part);
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&here).ok()?;
            if target.is_absolute() {
                parts.clear();
            }
            pending.extend(components(&target).into_iter().rev());
        } else {
            parts.push(part);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_shell_is_bash_when_the_image_has_it_else_sh() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let image = Image {
            source: root.to_path_buf(),
            kind: ImageKind::Rootfs,
            digest: String::new(),
            choose_shell: true,
        };
        let strict: Vec<String> = crate::manifest::STRICT_SHELL
            .iter()
            .map(|s| s.to_string())
            .collect();
        let posix: Vec<String> = crate::manifest::POSIX_SHELL
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(image.shell(root, &strict), posix);
        // bash through a merged-/usr link, as Debian lays it out.
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/bash"), b"").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/bash"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        assert_eq!(image.shell(root, &strict), strict);
        // A shell the step names is kept either way.
        let named = Image {
            choose_shell: false,
            ..image
        };
        std::fs::remove_file(root.join("usr/bin/bash")).unwrap();
        assert_eq!(named.shell(root, &strict), strict);
    }

    #[test]
    fn lookups_follow_links_inside_the_root_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/bash"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/../../..", root.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("bin/bash")),
            Some(root.join("usr/bin/bash"))
        );
        // `..` and absolute targets stop at the root.
        assert_eq!(
            resolve_in_root(root, Path::new("up/usr/bin/bash")),
            Some(root.join("usr/bin/bash"))
        );
        assert_eq!(resolve_in_root(root, Path::new("nope")), None);
    }
}
