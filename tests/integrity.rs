//! Store integrity (issue 13): damaged or missing objects are never served, never fed to a task,
//! and never pass silently; `grit verify` finds every kind of damage and `--repair` fixes what
//! provenance can re-create.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Project, describe, executed};

const PIPELINE: &str = r#"
[[step]]
name = "seed"
once = true
script = 'printf "alpha\nbeta\n" > $OUTPUT_DIR/word'

[[step]]
name = "upper"
inputs = ["word"]
script = 'echo converting >&2; tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/shout'

[[step]]
name = "count"
inputs = ["shout"]
script = 'wc -c < $INPUT_FILE > $OUTPUT_DIR/n'
"#;

/// Exit code for a damaged store.
const DAMAGED: i32 = 4;

fn object_path(p: &Project, hash: &str) -> PathBuf {
    p.db()
        .join("objects")
        .join(&hash[0..2])
        .join(&hash[2..4])
        .join(&hash[4..])
}

fn hash_of(p: &Project, name: &str) -> String {
    p.live()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("no live resource {name}"))
}

/// Make an object writable and apply `change` to its bytes.
fn rewrite(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o440)).unwrap();
}

fn flip_byte(path: &Path) {
    rewrite(path, |bytes| bytes[0] ^= 0x20);
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_damage_message(output: &std::process::Output, name: &str, hash: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(DAMAGED), "{}", describe(output));
    assert!(text.contains(name), "names the resource: {text}");
    assert!(text.contains(hash), "names the hash: {text}");
    assert!(
        text.contains("grit verify --repair"),
        "says what to do: {text}"
    );
}

#[test]
fn cat_and_export_refuse_a_flipped_byte_and_print_nothing() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let hash = hash_of(&p, "shout");
    let path = object_path(&p, &hash);
    flip_byte(&path);

    let cat = p.grit(&["cat", &hash]);
    assert_damage_message(&cat, "shout", &hash);
    assert!(cat.stdout.is_empty(), "no damaged byte printed");
    assert!(
        stderr(&cat).contains(path.to_str().unwrap()),
        "names the path"
    );

    let out = p.path().join("out");
    let export = p.grit(&["export", "shout", "--to", out.to_str().unwrap()]);
    assert_damage_message(&export, "shout", &hash);
    let dir = out.join("shout");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no partial copy left: {left:?}");

    let tar = p.path().join("out.tar");
    let export = p.grit(&["export", "shout", "--tar", tar.to_str().unwrap()]);
    assert_damage_message(&export, "shout", &hash);
    assert!(!tar.exists(), "no tar file with damaged bytes");

    // Healthy objects are still served.
    assert_eq!(p.cat(&hash_of(&p, "word")), "alpha\nbeta\n");
}

#[test]
fn truncated_and_deleted_objects_are_reported_not_served() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let hash = hash_of(&p, "word");
    let path = object_path(&p, &hash);
    rewrite(&path, |bytes| bytes.truncate(3));
    let cat = p.grit(&["cat", &hash]);
    assert_damage_message(&cat, "word", &hash);
    assert!(stderr(&cat).contains("3 bytes instead of the recorded 11"));
    assert!(cat.stdout.is_empty());

    std::fs::remove_file(&path).unwrap();
    let cat = p.grit(&["cat", &hash]);
    assert_damage_message(&cat, "word", &hash);
    assert!(stderr(&cat).contains("missing"));
}

#[test]
fn a_task_never_runs_on_a_damaged_input_and_nothing_downstream_runs() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let word = hash_of(&p, "word");
    flip_byte(&object_path(&p, &word));
    // A new version of `upper` must read `word` again; a gather step reads it too.
    let marker = p.path().join("ran");
    let map = PIPELINE.replace(
        "tr a-z A-Z < $INPUT_FILE",
        &format!("touch {}; tr a-z A-Z < $INPUT_FILE", marker.display()),
    );
    let gather = format!(
        "[[step]]\nname = \"all\"\ngather = true\ninputs = [\"word\"]\nscript = 'touch {}.all; cat $INPUT_DIR/* > $OUTPUT_DIR/joined'\n",
        marker.display()
    );
    p.write_manifest(&format!("{map}\n{gather}"));
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(DAMAGED), "{}", describe(&output));
    assert!(!marker.exists(), "the map task did not run");
    assert!(
        !p.path().join("ran.all").exists(),
        "the gather task did not run"
    );
    assert_eq!(executed(&summary, "count"), 0, "nothing downstream ran");
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{summary}");
    for failure in failures {
        assert_eq!(failure["store_damaged"], true);
        let error = failure["error"].as_str().unwrap();
        assert!(
            error.contains("input word") && error.contains(&word),
            "{error}"
        );
        assert!(error.contains("grit verify --repair"), "{error}");
    }
    // The task log says why, and so does `grit log`.
    let task = failures[0]["task"].as_i64().unwrap().to_string();
    let log = p.grit(&["log", &task]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("not started"));
}

#[test]
fn a_damaged_log_is_not_printed() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let tasks = p.grit(&["log", "--step", "upper"]);
    let listing = String::from_utf8_lossy(&tasks.stdout).into_owned();
    let id = listing
        .split_whitespace()
        .nth(1)
        .expect("a task id")
        .to_string();
    let info = p.grit(&["log", &id]);
    assert!(info.status.success(), "{}", describe(&info));
    // The log object is the one the store records for the task.
    let log = common::sha256_hex(b"converting\n");
    assert!(object_path(&p, &log).is_file());
    flip_byte(&object_path(&p, &log));
    let info = p.grit(&["log", &id]);
    assert_damage_message(&info, &format!("the log of task {id}"), &log);
    assert!(!String::from_utf8_lossy(&info.stdout).contains("converting"));
}

#[test]
fn a_deleted_object_fails_the_next_run_and_shows_in_status() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let shout = hash_of(&p, "shout");
    std::fs::remove_file(object_path(&p, &shout)).unwrap();
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(DAMAGED), "{}", describe(&output));
    assert!(
        stderr(&output).contains("store damaged: 1 live object is missing"),
        "{}",
        describe(&output)
    );
    assert!(!stderr(&output).contains("nothing to do"));
    assert_eq!(summary["missing_objects"][0]["hash"], shout.as_str());
    assert_eq!(summary["missing_objects"][0]["name"], "shout");

    let status = p.grit(&["status"]);
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("store damaged: 1 live object is missing — run `grit verify"),
        "{text}"
    );
    let json = p.status();
    assert_eq!(json["store_damaged"], true);
    assert_eq!(json["missing_objects"][0]["name"], "shout");
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// One way of damaging an object file.
    #[derive(Debug, Clone)]
    enum Damage {
        Flip {
            offset: usize,
            mask: u8,
        },
        Truncate {
            keep: usize,
        },
        Append(Vec<u8>),
        Replace(Vec<u8>),
        /// Put another object's (valid) content in its place.
        Swap,
        Delete,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(offset, mask)| Damage::Flip { offset, mask }),
            any::<usize>().prop_map(|keep| Damage::Truncate { keep }),
            proptest::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Damage::Replace),
            Just(Damage::Swap),
            Just(Damage::Delete),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Random damage to a random store never makes `cat` print bytes whose hash differs from
        /// the recorded one: it prints the recorded bytes (exit 0) or nothing (exit 4).
        #[test]
        fn cat_never_prints_bytes_that_differ_from_the_record(
            contents in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 2..6),
            damages in proptest::collection::vec((any::<usize>(), damage()), 1..4),
        ) {
            let p = Project::new("");
            let mut files = Vec::new();
            for (i, content) in contents.iter().enumerate() {
                let file = p.path().join(format!("f{i}"));
                std::fs::write(&file, content).unwrap();
                files.push(file.to_str().unwrap().to_string());
            }
            let mut args = vec!["ingest", "--name", "blob"];
            args.extend(files.iter().map(String::as_str));
            let ingest = p.grit(&args);
            prop_assert!(ingest.status.success(), "{}", describe(&ingest));
            let hashes: Vec<String> = p.live().into_iter().map(|(_, h)| h).collect();
            for (pick, damage) in &damages {
                let hash = &hashes[pick % hashes.len()];
                let path = object_path(&p, hash);
                if !path.exists() {
                    continue;
                }
                match damage {
                    Damage::Flip { offset, mask } => rewrite(&path, |b| {
                        let at = offset % b.len().max(1);
                        if let Some(byte) = b.get_mut(at) { *byte ^= mask; }
                    }),
                    Damage::Truncate { keep } => rewrite(&path, |b| {
                        let keep = keep % b.len().max(1);
                        b.truncate(keep);
                    }),
                    Damage::Append(extra) => rewrite(&path, |b| b.extend_from_slice(extra)),
                    Damage::Replace(new) => rewrite(&path, |b| *b = new.clone()),
                    Damage::Swap => {
                        let other = hashes.iter().find(|h| *h != hash && object_path(&p, h).exists());
                        if let Some(other) = other {
                            let bytes = std::fs::read(object_path(&p, other)).unwrap();
                            rewrite(&path, |b| *b = bytes);
                        }
                    }
                    Damage::Delete => std::fs::remove_file(&path).unwrap(),
                }
            }
            for hash in &hashes {
                let cat = p.grit(&["cat", hash]);
                if cat.status.code() == Some(0) {
                    prop_assert_eq!(&common::sha256_hex(&cat.stdout), hash);
                } else {
                    prop_assert_eq!(cat.status.code(), Some(DAMAGED), "{}", describe(&cat));
                    prop_assert!(cat.stdout.is_empty(), "printed {} bytes", cat.stdout.len());
                }
            }
        }
    }
}
