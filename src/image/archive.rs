//! Reading packed images: an OCI image layout directory (`index.json` → manifest → layer blobs)
//! and a `docker save` archive (a tar with `manifest.json` → config and layer tars). Identifying
//! one reads only its index; unpacking checks every blob against its digest while it streams
//! through `unpack`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::unpack::Unpacker;
use super::{ImageError, io_error};

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The hex of a `sha256:<64 hex>` digest; anything else is refused (it names a file).
fn digest_hex<'d>(path: &Path, digest: &'d str) -> Result<&'d str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(invalid(
            path,
            format!("unsupported digest `{digest}` (grit reads sha256 digests)"),
        )),
    }
}

/// The architecture name OCI uses for this machine.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The one image manifest of an index: the only one, or the one for this machine's platform
/// (attestations and other platforms are passed over).
fn pick<'i>(path: &Path, index: &'i Index) -> Result<&'i Descriptor, ImageError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !d.annotations.contains_key("vnd.docker.reference.type"))
        .collect();
    match candidates.as_slice() {
        [] => Err(invalid(path, "index.json lists no image manifest")),
        [one] => Ok(one),
        many => many
            .iter()
            .copied()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
            })
            .ok_or_else(|| {
                invalid(
                    path,
                    format!(
                        "index.json lists {} manifests and none for linux/{}",
                        many.len(),
                        host_arch()
                    ),
                )
            }),
    }
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(layout
        .join("blobs/sha256")
        .join(digest_hex(layout, digest)?))
}

/// Reads a blob of an OCI layout and checks it against its digest.
fn read_blob(layout: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(layout, digest)?;
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(invalid(
            &path,
            format!("blob does not match its digest {digest} (it hashes to {actual})"),
        ));
    }
    Ok(bytes)
}

fn json<'a, T: Deserialize<'a>>(path: &Path, what: &str, bytes: &'a [u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(path, format!("{what}: {e}")))
}

/// The manifest digest of the OCI layout at `layout` (following one nested index).
pub(super) fn oci_digest(layout: &Path) -> Result<String, ImageError> {
    let index_path = layout.join("index.json");
    let bytes = std::fs::read(&index_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotAnImage {
            path: layout.to_path_buf(),
            reason: "an OCI layout needs index.json".into(),
        },
        _ => io_error(&index_path)(e),
    })?;
    let index: Index = json(&index_path, "index.json", &bytes)?;
    let chosen = pick(layout, &index)?;
    digest_hex(layout, &chosen.digest)?;
    if INDEX_TYPES.contains(&chosen.media_type.as_str()) {
        let nested: Index = json(layout, "nested index", &read_blob(layout, &chosen.digest)?)?;
        let inner = pick(layout, &nested)?;
        digest_hex(layout, &inner.digest)?;
        return Ok(inner.digest.clone());
    }
    Ok(chosen.digest.clone())
}

/// Unpacks the manifest `digest` of the OCI layout at `layout` into `target`.
pub(super) fn unpack_oci(layout: &Path, digest: &str, target: &Path) -> Result<(), ImageError> {
    let manifest: Manifest = json(layout, "image manifest", &read_blob(layout, digest)?)?;
    let mut unpacker = Unpacker::new(layout, target)?;
    for layer in &manifest.layers {
        let path = blob_path(layout, &layer.digest)?;
        let file = File::open(&path).map_err(io_error(&path))?;
        let mut hashed = Hashing::new(file);
        unpacker.apply(&layer.digest, &mut hashed)?;
        let actual = hashed.finish().map_err(io_error(&path))?;
        if actual != layer.digest {
            return Err(invalid(
                &path,
                format!(
                    "layer does not match its digest {} ({actual})",
                    layer.digest
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the file at `path` starts with the gzip magic.
pub(super) fn is_gzip_file(path: &Path) -> Result<bool, ImageError> {
    let mut head = [0u8; 2];
    let mut file = File::open(path).map_err(io_error(path))?;
    let n = file.read(&mut head).map_err(io_error(path))?;
    Ok(n == 2 && head == [0x1f, 0x8b])
}

/// The digest of a gzip-compressed `docker save` archive (what `pkgs.dockerTools.buildImage`
/// writes): the SHA-256 of the compressed file, read in full (its members cannot be reached
/// without decompressing it all).
pub(super) fn gzip_archive_digest(path: &Path) -> Result<String, ImageError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut hashed = Hashing::new(file);
    std::io::copy(&mut hashed, &mut std::io::sink()).map_err(io_error(path))?;
    hashed.finish().map_err(io_error(path))
}

/// Unpacks a gzip-compressed `docker save` archive: decompressed once into `scratch` (inside the
/// store's temporary directory), then read as a plain one.
pub(super) fn unpack_gzip_docker(
    archive: &Path,
    digest: &str,
    scratch: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    let file = File::open(archive).map_err(io_error(archive))?;
    let mut hashed = Hashing::new(file);
    {
        let mut out = File::create(scratch).map_err(io_error(scratch))?;
        std::io::copy(&mut flate2::read::GzDecoder::new(&mut hashed), &mut out)
            .map_err(|e| invalid(archive, format!("cannot decompress: {e}")))?;
    }
    let actual = hashed.finish().map_err(io_error(archive))?;
    if actual != digest {
        return Err(invalid(
            archive,
            format!(
                "the archive changed since the manifest was read ({digest} → {actual}); run again"
            ),
        ));
    }
    let index = members(scratch)?;
    let (_, config) = docker_image(scratch, &index)?;
    let inner = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    unpack_docker(scratch, &inner, target)
}

/// The members of a tar archive: path → (offset of the content, size).
fn members(archive: &Path) -> Result<HashMap<String, (u64, u64)>, ImageError> {
    let file = File::open(archive).map_err(io_error(archive))?;
    let mut tar = tar::Archive::new(file);
    let mut out = HashMap::new();
    let not_tar = |e: std::io::Error| ImageError::NotAnImage {
        path: archive.to_path_buf(),
        reason: format!("not a directory, and not a tar archive ({e})"),
    };
    for entry in tar.entries_with_seek().map_err(not_tar)? {
        let entry = entry.map_err(not_tar)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").to_string();
        out.insert(name, (entry.raw_file_position(), entry.size()));
    }
    Ok(out)
}

/// One member's content as a reader.
fn member(
    archive: &Path,
    index: &HashMap<String, (u64, u64)>,
    name: &str,
) -> Result<std::io::Take<File>, ImageError> {
    let Some(&(offset, size)) = index.get(name.trim_start_matches("./")) else {
        return Err(invalid(
            archive,
            format!("the archive has no `{name}` (named by manifest.json)"),
        ));
    };
    let mut file = File::open(archive).map_err(io_error(archive))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_error(archive))?;
    Ok(file.take(size))
}

fn read_member(
    archive: &Path,
    index: &HashMap<String, (u64, u64)>,
    name: &str,
) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    member(archive, index, name)?
        .read_to_end(&mut bytes)
        .map_err(io_error(archive))?;
    Ok(bytes)
}

/// The archive's one image: its manifest entry and config bytes.
fn docker_image(
    archive: &Path,
    index: &HashMap<String, (u64, u64)>,
) -> Result<(DockerEntry, Vec<u8>), ImageError> {
    if !index.contains_key("manifest.json") {
        return Err(ImageError::NotAnImage {
            path: archive.to_path_buf(),
            reason: "a tar without manifest.json (grit reads `docker save` archives; unpack \
                     other archives into a directory)"
                .into(),
        });
    }
    let bytes = read_member(archive, index, "manifest.json")?;
    let mut entries: Vec<DockerEntry> = json(archive, "manifest.json", &bytes)?;
    if entries.len() != 1 {
        return Err(invalid(
            archive,
            format!(
                "manifest.json lists {} images; save exactly one (`docker save IMAGE`)",
                entries.len()
            ),
        ));
    }
    let entry = entries.remove(0);
    let config = read_member(archive, index, &entry.config)?;
    Ok((entry, config))
}

/// The image id of the `docker save` archive at `archive`: the digest of its config, which
/// names every layer by the digest of its content.
pub(super) fn docker_digest(archive: &Path) -> Result<String, ImageError> {
    let index = members(archive)?;
    let (_, config) = docker_image(archive, &index)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&config))))
}

/// Unpacks the `docker save` archive at `archive` (whose id must still be `digest`).
pub(super) fn unpack_docker(archive: &Path, digest: &str, target: &Path) -> Result<(), ImageError> {
    let index = members(archive)?;
    let (entry, config_bytes) = docker_image(archive, &index)?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
    if actual != digest {
        return Err(invalid(
            archive,
            format!(
                "the archive changed since the manifest was read ({digest} → {actual}); run again"
            ),
        ));
    }
    let config: Config = json(archive, "image config", &config_bytes)?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    let mut unpacker = Unpacker::new(archive, target)?;
    for (i, name) in entry.layers.iter().enumerate() {
        let raw = member(archive, &index, name)?;
        // A diff id is the digest of the uncompressed layer tar.
        let (actual, expected) = if is_gzip_start(archive, &index, name)? {
            let mut hashed = Hashing::new(flate2::read::GzDecoder::new(raw));
            unpacker.apply_plain(name, &mut hashed)?;
            (hashed.finish().map_err(io_error(archive))?, diff_ids.get(i))
        } else {
            let mut hashed = Hashing::new(raw);
            unpacker.apply_plain(name, &mut hashed)?;
            (hashed.finish().map_err(io_error(archive))?, diff_ids.get(i))
        };
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(invalid(
                archive,
                format!("layer {name} does not match its diff id {expected} ({actual})"),
            ));
        }
    }
    Ok(())
}

fn is_gzip_start(
    archive: &Path,
    index: &HashMap<String, (u64, u64)>,
    name: &str,
) -> Result<bool, ImageError> {
    let mut head = [0u8; 2];
    let mut reader = member(archive, index, name)?;
    let n = reader.read(&mut head).map_err(io_error(archive))?;
    Ok(n == 2 && head == [0x1f, 0x8b])
}

/// A reader that hashes everything read through it.
pub(super) struct Hashing<R> {
    inner: BufReader<R>,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner: BufReader::with_capacity(1 << 16, inner),
            hasher: Sha256::new(),
        }
    }

    /// Reads what is left (a tar's trailing padding) and returns `sha256:<hex>` of it all.
    fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }

    /// Whether the stream starts with the gzip magic (without consuming it).
    pub(super) fn is_gzip(&mut self) -> std::io::Result<bool> {
        let head = self.inner.fill_buf()?;
        Ok(head.len() >= 2 && head[..2] == [0x1f, 0x8b])
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
