//! Destinations in directories other users can write to (a 1777 `/tmp`, a group's share): what
//! `grit export` and `grit backup` create there never goes through a symbolic link another user
//! planted, and a destination that is a link is refused with exit 2.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use common::{Project, describe};

const TWO: &str = r#"
[[step]]
name = "seed"
once = true
script = 'echo alpha > $OUTPUT_DIR/word'

[[step]]
name = "upper"
inputs = ["word"]
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/shout'
"#;

/// Exit code of a usage error.
const USAGE: i32 = 2;

/// A world-writable sticky directory, as `/tmp`, and a victim directory holding one file that
/// the planted links point at.
struct Shared {
    shared: PathBuf,
    victim: PathBuf,
}

impl Shared {
    fn new(p: &Project) -> Shared {
        let shared = p.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = p.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("victim.txt"), "keep me\n").unwrap();
        Shared { shared, victim }
    }

    fn at(&self, name: &str) -> PathBuf {
        self.shared.join(name)
    }

    /// The victim directory is as it was: only `victim.txt`, unchanged.
    fn assert_untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(&self.victim)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["victim.txt"], "nothing new in the victim directory");
        assert_eq!(
            std::fs::read_to_string(self.victim.join("victim.txt")).unwrap(),
            "keep me\n"
        );
    }

    /// No temporary file is left anywhere under the shared directory.
    fn assert_no_partial_files(&self) {
        let mut stack = vec![self.shared.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(!name.ends_with(".partial"), "left behind: {name}");
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The refusal names the link and says what to do.
fn assert_refused_link(output: &Output, link: &Path) {
    assert_eq!(output.status.code(), Some(USAGE), "{}", describe(output));
    let said = stderr(output);
    assert!(
        said.contains(&format!(
            "refusing to write to {}: it is a symbolic link",
            link.display()
        )),
        "{said}"
    );
    assert!(said.contains("help: remove the link"), "{said}");
}

#[test]
fn export_to_a_directory_never_writes_through_a_planted_link() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let s = Shared::new(&p);

    // The destination itself is a link.
    let linked = s.at("linked");
    symlink(&s.victim, &linked).unwrap();
    let out = p.grit(&["export", "shout", "--to", linked.to_str().unwrap()]);
    assert_refused_link(&out, &linked);
    // With a trailing slash too.
    let slashed = format!("{}/", linked.display());
    let out = p.grit(&["export", "shout", "--to", &slashed]);
    assert_refused_link(&out, &linked);

    // A `<name>` directory below the destination is a link.
    let dir = s.at("out");
    std::fs::create_dir(&dir).unwrap();
    symlink(&s.victim, dir.join("shout")).unwrap();
    let out = p.grit(&["export", "shout", "--to", dir.to_str().unwrap()]);
    assert_refused_link(&out, &dir.join("shout"));

    // A link where an exported file goes is replaced, not written through.
    let flat = s.at("flat");
    std::fs::create_dir(&flat).unwrap();
    symlink(s.victim.join("victim.txt"), flat.join("shout")).unwrap();
    let out = p.grit(&["export", "shout", "--flat", "--to", flat.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let file = flat.join("shout");
    assert!(!file.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "ALPHA\n");

    // And a new destination in the shared directory is created and written as before.
    let fresh = s.at("fresh/nested");
    let out = p.grit(&["export", "shout", "--to", fresh.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let hash = p.hash_of("shout");
    assert_eq!(
        std::fs::read_to_string(fresh.join("shout").join(hash)).unwrap(),
        "ALPHA\n"
    );

    s.assert_untouched();
    s.assert_no_partial_files();
}

#[test]
fn export_to_a_tar_file_refuses_a_planted_link_and_replaces_a_hard_link() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let s = Shared::new(&p);

    let tar = s.at("out.tar");
    symlink(s.victim.join("victim.txt"), &tar).unwrap();
    let out = p.grit(&["export", "shout", "--tar", tar.to_str().unwrap()]);
    assert_refused_link(&out, &tar);
    assert!(tar.symlink_metadata().unwrap().file_type().is_symlink());

    // A hard link to someone else's file is replaced by the new tar, the file left as it was.
    let linked = s.at("linked.tar");
    std::fs::hard_link(s.victim.join("victim.txt"), &linked).unwrap();
    let out = p.grit(&["export", "shout", "--tar", linked.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&linked)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        format!("shout/{}", p.hash_of("shout"))
    );

    s.assert_untouched();
    s.assert_no_partial_files();
}

#[test]
fn backup_refuses_a_planted_link_and_still_backs_up_into_a_shared_directory() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let s = Shared::new(&p);
    // An empty directory the link points at: the backup once went right into it.
    let empty_victim = p.path().join("empty-victim");
    std::fs::create_dir(&empty_victim).unwrap();

    let bk = s.at("bk3");
    symlink(&empty_victim, &bk).unwrap();
    let out = p.grit(&["backup", bk.to_str().unwrap()]);
    assert_refused_link(&out, &bk);
    assert_eq!(std::fs::read_dir(&empty_victim).unwrap().count(), 0);
    let file_link = s.at("bk-file");
    symlink(s.victim.join("victim.txt"), &file_link).unwrap();
    let out = p.grit(&["backup", file_link.to_str().unwrap()]);
    assert_refused_link(&out, &file_link);

    // A new directory, and an existing empty one, in the shared directory work as before (an
    // existing one keeps its mode: this one is made private for `grit verify`).
    let existing = s.at("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o700)).unwrap();
    for dest in [s.at("new/bk"), existing] {
        let out = p.grit(&["backup", dest.to_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
        let verify = Command::cargo_bin("grit")
            .unwrap()
            .args(["verify", "--db"])
            .arg(&dest)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", describe(&verify));
    }
    let new = s.at("new/bk");
    let mode = std::fs::metadata(&new).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "a new backup is private");
    let mode = std::fs::metadata(new.join("grit.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "its database too");

    s.assert_untouched();
    s.assert_no_partial_files();
}
