//! Container steps (issue 15, item 5): `image = "…"` runs a step's script with an image as its
//! root, through the real `grit` binary with the sandbox on. The images are built here from
//! `busybox-static` (a root filesystem directory, an OCI layout and a `docker save` archive of
//! the same content, with a whiteout), each with its own `/etc/os-release`.
//!
//! Needs /bin/busybox (Debian's `busybox-static`); without it each test says so and passes.

mod common;
#[path = "common/sandbox_support.rs"]
mod sandbox_support;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{describe, executed, sha256_hex};
use sandbox_support::Sandboxed;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "cat", "echo", "ls", "test", "wc", "id", "touch"];

/// The busybox binary, or `None` after saying why the test is skipped.
fn busybox() -> Option<Vec<u8>> {
    match std::fs::read(BUSYBOX) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("skipped: {BUSYBOX} is missing ({e}); install busybox-static");
            None
        }
    }
}

/// A root filesystem directory: busybox, its applets, `/etc/os-release` with `ID=<id>`.
fn rootfs(dir: &Path, busybox: &[u8], id: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("bin/busybox"), busybox).unwrap();
    std::fs::set_permissions(
        dir.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/os-release"), format!("ID={id}\n")).unwrap();
}

const PROBE: &str = r#"
[[step]]
name = "probe"
image = "IMAGE"
once = true
script = "cat /etc/os-release > $OUTPUT_DIR/os; ls /etc > $OUTPUT_DIR/etc; echo $PATH > $OUTPUT_DIR/path"

[[step]]
name = "size"
inputs = ["os"]
image = "IMAGE"
script = "wc -c < $INPUT_FILE > $OUTPUT_DIR/os_size"
"#;

fn probe_manifest(image: &str) -> String {
    PROBE.replace("IMAGE", image)
}

fn run_ok(p: &Sandboxed) -> serde_json::Value {
    let (out, json) = p.run(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nlog: {}",
        describe(&out),
        p.log_of_step("probe")
    );
    json
}

#[test]
fn an_image_step_sees_the_images_os_release_and_its_outputs_are_captured() {
    let Some(bb) = busybox() else { return };
    let p = Sandboxed::new(&probe_manifest("rootfs"));
    rootfs(&p.path().join("rootfs"), &bb, "grit-test-image");
    let (out, json) = p.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let os = p.cat("os").expect("os captured");
    assert_eq!(os, "ID=grit-test-image\n");
    let host = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    assert_ne!(os, host);
    assert_eq!(p.cat("etc").as_deref(), Some("os-release\n"));
    assert_eq!(
        p.cat("path").as_deref(),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
    );
    // A map step in the image reads its INPUT_FILE as usual.
    assert_eq!(p.cat("os_size").as_deref().map(str::trim), Some("19"));
    assert_eq!(executed(&json, "size"), 1);
    // busybox has no bash: the run says the script runs under `sh -ec`.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no bash") && stderr.contains("sh -ec"),
        "{stderr}"
    );
}

#[test]
fn a_changed_image_reruns_the_step_and_an_unchanged_one_does_not() {
    let Some(bb) = busybox() else { return };
    let p = Sandboxed::new(&probe_manifest("rootfs"));
    let image = p.path().join("rootfs");
    rootfs(&image, &bb, "first");
    let first = run_ok(&p);
    assert_eq!(executed(&first, "probe"), 1);
    let again = run_ok(&p);
    assert_eq!(
        executed(&again, "probe"),
        0,
        "an unchanged image re-ran: {again}"
    );
    // Same bytes, new times: still unchanged.
    std::fs::write(image.join("etc/os-release"), "ID=first\n").unwrap();
    assert_eq!(executed(&run_ok(&p), "probe"), 0);
    std::fs::write(image.join("etc/os-release"), "ID=second\n").unwrap();
    let changed = run_ok(&p);
    assert_eq!(executed(&changed, "probe"), 1, "{changed}");
    assert_eq!(p.cat("os").as_deref(), Some("ID=second\n"));
}

/// One layer tar built with the tar crate.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, data: &[u8], mode: u32) -> Layer {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    fn dir(mut self, path: &str) -> Layer {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Directory);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(tar::EntryType::Symlink);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A file whose name is written raw (the tar crate's own API refuses `..`).
    fn raw_file(mut self, path: &str) -> Layer {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(6);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.0.append(&h, &b"pwned\n"[..]).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn busybox_layer(bb: &[u8], id: &str) -> Layer {
    let mut layer = Layer::new()
        .dir("bin")
        .dir("etc")
        .file("bin/busybox", bb, 0o755);
    for applet in APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
        .file("etc/os-release", format!("ID={id}\n").as_bytes(), 0o644)
        .file("etc/stale", b"removed by the next layer\n", 0o644)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn config(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// An OCI image layout of `layers` (the first gzip-compressed, the others plain).
fn oci_layout(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = digest(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        serde_json::json!({"digest": d, "size": bytes.len()})
    };
    let config = config(layers);
    let mut config_desc = put(&config);
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (blob, media) = if i == 0 {
                (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
            } else {
                (l.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            let mut d = put(&blob);
            d["mediaType"] = media.into();
            d
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc, "layers": layer_descs,
    }))
    .unwrap();
    let mut manifest_desc = put(&manifest);
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]}))
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A `docker save` archive of `layers` (plain tars, as docker writes them).
fn docker_archive(path: &Path, layers: &[Vec<u8>]) {
    let config = config(layers);
    let config_name = format!("{}.json", sha256_hex(&config));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["grit-test:latest"], "Layers": names}
    ]))
    .unwrap();
    let mut archive = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        archive.append_data(&mut h, name, bytes).unwrap();
    };
    for (name, layer) in names.iter().zip(layers) {
        add(name, layer);
    }
    add(&config_name, &config);
    add("manifest.json", &manifest);
    archive.finish().unwrap();
}

fn store_images(p: &Sandboxed) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p.db().join("images"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_same_image_as_an_oci_layout_and_a_docker_archive_gives_the_same_result() {
    let Some(bb) = busybox() else { return };
    let layers = vec![
        busybox_layer(&bb, "layered").bytes(),
        Layer::new()
            .file("etc/.wh.stale", b"", 0o644)
            .file("etc/added", b"second layer\n", 0o644)
            .bytes(),
    ];
    let mut outputs = Vec::new();
    // A gzip-compressed archive is what `pkgs.dockerTools.buildImage` writes.
    for kind in ["oci", "docker", "docker-gz"] {
        let image = match kind {
            "oci" => "image-oci",
            "docker" => "image.tar",
            _ => "image.tar.gz",
        };
        let p = Sandboxed::new(&probe_manifest(image));
        match kind {
            "oci" => oci_layout(&p.path().join(image), &layers),
            "docker" => docker_archive(&p.path().join(image), &layers),
            _ => {
                let plain = p.path().join("plain.tar");
                docker_archive(&plain, &layers);
                let bytes = std::fs::read(&plain).unwrap();
                std::fs::write(p.path().join(image), gzip(&bytes)).unwrap();
            }
        }
        let (out, _) = p.run(&[]);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unpacking image"), "{kind}: {stderr}");
        let os = p.cat("os").expect("os");
        let etc = p.cat("etc").expect("etc");
        // The whiteout removed the lower layer's file; the upper layer's is there.
        assert_eq!(etc, "added\nos-release\n", "{kind}");
        outputs.push((os, etc));
        // Unpacked once into the store, and reused: nothing is unpacked again.
        let unpacked = store_images(&p);
        assert_eq!(unpacked.len(), 1, "{kind}: {unpacked:?}");
        assert!(unpacked[0].join("rootfs/bin/busybox").is_file());
        // The unpacked image is as private as the rest of the store.
        let doctor = p.grit(&["doctor"]);
        let report = String::from_utf8_lossy(&doctor.stdout);
        assert!(
            report.contains("nothing is open to other users"),
            "{kind}: {report}"
        );
        let (out, json) = p.run(&[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("unpacking image"));
        assert_eq!(executed(&json, "probe"), 0, "{kind}: {json}");
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
    assert_eq!(outputs[0].0, "ID=layered\n");
}

#[test]
fn a_hostile_layer_cannot_write_outside_its_directory() {
    let Some(bb) = busybox() else { return };
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let cases = [
        ("dotdot", Layer::new().raw_file("../../../../../../PWNED")),
        (
            "parent",
            Layer::new().raw_file(&format!("x/../../../../../../..{target}/PWNED")),
        ),
        (
            "absolute-link",
            Layer::new()
                .symlink("escape", &target)
                .file("escape/PWNED", b"pwned\n", 0o644),
        ),
        (
            "relative-link",
            Layer::new()
                .symlink("up", "../../../../../../../../..")
                .file(&format!("up{target}/PWNED"), b"pwned\n", 0o644),
        ),
    ];
    for (name, hostile) in cases {
        let layers = vec![busybox_layer(&bb, "hostile").bytes(), hostile.bytes()];
        let p = Sandboxed::new(&probe_manifest("image-oci"));
        oci_layout(&p.path().join("image-oci"), &layers);
        let (out, _) = p.run(&[]);
        assert!(
            !outside.path().join("PWNED").exists(),
            "{name}: wrote outside"
        );
        assert!(!Path::new("/PWNED").exists(), "{name}: wrote to /");
        assert!(!p.path().join("PWNED").exists(), "{name}");
        assert!(!p.db().join("PWNED").exists(), "{name}");
        match out.status.code() {
            // Refused with a message that names the layer.
            Some(2) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains("refused") || stderr.contains("image"),
                    "{name}: {stderr}"
                );
            }
            // Or followed inside the image, where the link leads when it is `/`.
            Some(0) => {
                let rootfs = store_images(&p)[0].join("rootfs");
                assert!(
                    rootfs
                        .join(target.trim_start_matches('/'))
                        .join("PWNED")
                        .exists(),
                    "{name}"
                );
            }
            other => panic!("{name}: exit {other:?}: {}", describe(&out)),
        }
    }
}

#[test]
fn an_image_with_the_sandbox_off_is_a_located_manifest_error() {
    let p = Sandboxed::new(
        "[[step]]\nname = \"probe\"\nsandbox = \"off\"\nimage = \"rootfs\"\nscript = \"true\"\n",
    );
    std::fs::create_dir(p.path().join("rootfs")).unwrap();
    let (out, _) = p.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline.toml:4:9"), "{stderr}");
    assert!(stderr.contains("sandbox"), "{stderr}");

    let p = Sandboxed::new("[[step]]\nname = \"probe\"\nimage = \"missing\"\nscript = \"true\"\n");
    let (out, _) = p.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pipeline.toml:3:9") && stderr.contains("missing"),
        "{stderr}"
    );
}
