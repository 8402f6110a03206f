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
    let hash = p.hash_of("shout");
    let path = p.object_path(&hash);
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
    assert_eq!(p.cat(&p.hash_of("word")), "alpha\nbeta\n");
}

#[test]
fn truncated_and_deleted_objects_are_reported_not_served() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let hash = p.hash_of("word");
    let path = p.object_path(&hash);
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
    let word = p.hash_of("word");
    flip_byte(&p.object_path(&word));
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
    assert!(p.object_path(&log).is_file());
    flip_byte(&p.object_path(&log));
    let info = p.grit(&["log", &id]);
    assert_damage_message(&info, &format!("the log of task {id}"), &log);
    assert!(!String::from_utf8_lossy(&info.stdout).contains("converting"));
}

#[test]
fn a_deleted_object_fails_the_next_run_and_shows_in_status() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let shout = p.hash_of("shout");
    std::fs::remove_file(p.object_path(&shout)).unwrap();
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
    assert!(
        stderr(&output).contains(" store damaged: "),
        "the verdict says it, not ok: {}",
        describe(&output)
    );

    // Under cron (-q), the damage is printed: an exit status without a line sends no mail.
    let manifest = p.manifest();
    let quiet = p.grit(&[
        "run",
        "-q",
        "--no-sandbox",
        "-m",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(quiet.status.code(), Some(DAMAGED), "{}", describe(&quiet));
    let said = stderr(&quiet);
    assert!(
        said.contains(&format!(
            "store damaged: live object shout {shout} is missing"
        )),
        "{said}"
    );
    assert!(said.contains(" store damaged: "), "{said}");

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
            let mut args = vec!["ingest"];
            args.extend(files.iter().map(String::as_str));
            let ingest = p.grit(&args);
            prop_assert!(ingest.status.success(), "{}", describe(&ingest));
            let hashes: Vec<String> = p.live().into_iter().map(|(_, h)| h).collect();
            for (pick, damage) in &damages {
                let hash = &hashes[pick % hashes.len()];
                let path = p.object_path(hash);
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
                        let other = hashes.iter().find(|h| *h != hash && p.object_path(h).exists());
                        if let Some(other) = other {
                            let bytes = std::fs::read(p.object_path(other)).unwrap();
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

fn verify_json(db: &Path) -> (Option<i32>, serde_json::Value) {
    let output = assert_cmd::Command::cargo_bin("grit")
        .unwrap()
        .args(["verify", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("verify JSON: {}", describe(&output)));
    (output.status.code(), json)
}

fn sqlite(p: &Project) -> rusqlite::Connection {
    rusqlite::Connection::open(p.db().join("grit.sqlite")).unwrap()
}

#[test]
fn verify_is_clean_after_a_run_and_reports_permissions() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let plain = p.grit(&["verify"]);
    assert_eq!(plain.status.code(), Some(0), "{}", describe(&plain));
    assert!(String::from_utf8_lossy(&plain.stdout).contains(": clean"));
    let (code, json) = verify_json(&p.db());
    assert_eq!(code, Some(0));
    assert_eq!(json["clean"], true);
    assert_eq!(
        json["report"]["objects_checked"], 5,
        "3 resources, 2 logs: {json}"
    );

    let shout = p.object_path(&p.hash_of("shout"));
    std::fs::set_permissions(&shout, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(p.db(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, json) = verify_json(&p.db());
    assert_eq!(code, Some(DAMAGED));
    let modes = json["report"]["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2, "{json}");
    assert!(modes.iter().any(
        |m| m["path"] == shout.to_str().unwrap() && m["problem"] == "writable, open to others"
    ));
    assert!(
        modes
            .iter()
            .any(|m| m["problem"] == "open to others" && m["mode"] == "0755")
    );
    let text = p.grit(&["verify"]);
    assert_eq!(text.status.code(), Some(DAMAGED));
    assert!(String::from_utf8_lossy(&text.stdout).contains("permissions (2):"));

    // The database open to others, and an object open to the group of a private store, are
    // reported too; repair closes everything to the owner alone, never opening it to the group.
    let database = p.db().join("grit.sqlite");
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let word = p.object_path(&p.hash_of("word"));
    std::fs::set_permissions(&word, std::fs::Permissions::from_mode(0o440)).unwrap();
    let (_, json) = verify_json(&p.db());
    let modes = json["report"]["modes"].as_array().unwrap();
    assert!(
        modes
            .iter()
            .any(|m| m["path"] == database.to_str().unwrap()),
        "{json}"
    );
    assert!(
        modes.iter().any(|m| m["path"] == word.to_str().unwrap()
            && m["problem"] == "open to its group (the store is private)"),
        "{json}"
    );
    let repair = p.grit(&["verify", "--repair"]);
    assert_eq!(repair.status.code(), Some(0), "{}", describe(&repair));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&p.db()), 0o700);
    assert_eq!(mode(&shout), 0o400);
    assert_eq!(mode(&word), 0o400);
    assert_eq!(mode(&database), 0o600);
    assert_eq!(verify_json(&p.db()).0, Some(0));
}

#[test]
fn verify_reports_a_deleted_row_and_the_object_left_without_one() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let word = p.hash_of("word");
    sqlite(&p)
        .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM resources WHERE name = 'word'")
        .unwrap();
    let (code, json) = verify_json(&p.db());
    assert_eq!(code, Some(DAMAGED), "{json}");
    let keys = json["report"]["foreign_keys"].as_array().unwrap();
    assert!(!keys.is_empty(), "{json}");
    assert!(
        keys.iter()
            .all(|k| k.as_str().unwrap().contains("resources"))
    );
    let unreferenced = json["report"]["unreferenced"].as_array().unwrap();
    assert_eq!(unreferenced.len(), 1, "{json}");
    assert!(
        unreferenced[0]["path"]
            .as_str()
            .unwrap()
            .ends_with(&word[4..])
    );
}

fn file_of(p: &Project) -> std::path::PathBuf {
    p.db().join("grit.sqlite")
}

#[test]
fn verify_reports_a_corrupt_database_page() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let file = p.db().join("grit.sqlite");
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() >= 4 * 4096,
        "the main file holds the data after a run"
    );
    // An invalid b-tree page type on every page after the schema's.
    for page in bytes.chunks_mut(4096).skip(1) {
        page[0] = 0xA5;
    }
    std::fs::write(&file, bytes).unwrap();
    let (code, json) = verify_json(&p.db());
    assert_eq!(code, Some(DAMAGED), "{json}");
    assert!(
        !json["report"]["database"].as_array().unwrap().is_empty(),
        "{json}"
    );
    // Damage inside the pages (the header and page types intact): a run on it ends as damage,
    // not as "a task failed", and a backup of it is no good one.
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let mut bytes = std::fs::read(file_of(&p)).unwrap();
    // Cells sit at the end of a page: overwrite them, keeping each page's header.
    for page in bytes.chunks_mut(4096).skip(2) {
        if page.len() == 4096 {
            page[3000..4096].fill(0x37);
        }
    }
    std::fs::write(file_of(&p), bytes).unwrap();
    let (run, _) = p.run(&[]);
    assert_eq!(run.status.code(), Some(DAMAGED), "{}", describe(&run));
    let copy = p.path().join("backup");
    let backup = p.grit(&["backup", copy.to_str().unwrap()]);
    assert_eq!(backup.status.code(), Some(DAMAGED), "{}", describe(&backup));
    assert!(
        stderr(&backup).contains("is damaged"),
        "{}",
        describe(&backup)
    );
}

#[test]
fn the_main_database_file_alone_is_complete_after_grit_exits() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let before = p.resources(true);
    let copy = p.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(p.db().join("grit.sqlite"), copy.join("grit.sqlite")).unwrap();
    let output = assert_cmd::Command::cargo_bin("grit")
        .unwrap()
        .args(["resources", "--all", "--json", "--db"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let after: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(after["resources"].as_array().unwrap(), &before);
    // Without its objects the copy is a damaged store, and says so.
    let (code, json) = verify_json(&copy);
    assert_eq!(code, Some(DAMAGED));
    assert_eq!(json["report"]["missing"].as_array().unwrap().len(), 5);
}

const SLOW: &str = r#"
[[step]]
name = "items"
once = true
script = 'for i in $(seq 1 40); do echo $i > $OUTPUT_DIR/item_$i; done'

[[step]]
name = "work"
inputs = ["item_*"]
parallel = 2
script = 'sleep 0.02; cat $INPUT_FILE $INPUT_FILE > $OUTPUT_DIR/done_$GRIT_INPUT_NAME'
"#;

#[test]
fn backup_while_a_run_writes_is_consistent_and_verifies_clean() {
    let p = Project::new(SLOW);
    let mut run = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["run", "-q", "--no-sandbox", "-m"])
        .arg(p.manifest())
        .arg("--db")
        .arg(p.db())
        .spawn()
        .unwrap();
    // Wait until the run has published something, then back up while it goes on.
    let started = std::time::Instant::now();
    while !p.db().join("grit.sqlite").exists()
        || p.grit(&["resources", "--json"]).status.code() != Some(0)
        || p.resources(false).len() < 10
    {
        assert!(started.elapsed().as_secs() < 60, "the run never got going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let during = p.path().join("during");
    let backup = p.grit(&["backup", during.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", describe(&backup));
    assert!(run.wait().unwrap().success());
    let (code, json) = verify_json(&during);
    assert_eq!(code, Some(0), "{json}");

    // After the run, a backup holds exactly the store's objects; hard links work too.
    let objects = verify_json(&p.db()).1["report"]["objects_checked"].clone();
    for (dir, extra) in [("after", None), ("linked", Some("--link"))] {
        let target = p.path().join(dir);
        let mut args = vec!["backup", target.to_str().unwrap()];
        args.extend(extra);
        let output = p.grit(&args);
        assert!(output.status.success(), "{}", describe(&output));
        let (code, json) = verify_json(&target);
        assert_eq!(code, Some(0), "{json}");
        assert_eq!(json["report"]["objects_checked"], objects, "{json}");
    }
    let refused = p.grit(&["backup", p.path().join("after").to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "a backup never overwrites");
}

#[test]
fn repair_recreates_damaged_derived_objects() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let live_before = p.live();
    let shout = p.hash_of("shout");
    let n = p.hash_of("n");
    flip_byte(&p.object_path(&shout));
    std::fs::remove_file(p.object_path(&n)).unwrap();
    let word = p.object_path(&p.hash_of("word"));
    std::fs::set_permissions(&word, std::fs::Permissions::from_mode(0o664)).unwrap();
    assert_eq!(verify_json(&p.db()).0, Some(DAMAGED));

    let repair = p.grit(&["verify", "--repair", "--no-sandbox"]);
    assert_eq!(repair.status.code(), Some(0), "{}", describe(&repair));
    let text = String::from_utf8_lossy(&repair.stdout);
    assert!(text.contains("1 object quarantined"), "{text}");
    assert!(p.db().join("quarantine").join(&shout).is_file());
    let (code, json) = verify_json(&p.db());
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(p.live(), live_before, "the same live set");
    assert_eq!(p.cat(&shout), "ALPHA\nBETA\n");
    assert_eq!(p.cat(&n).trim(), "11");
}

#[test]
fn repair_lists_lost_source_data_and_what_depends_on_it() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let word = p.hash_of("word");
    std::fs::remove_file(p.object_path(&word)).unwrap();
    let repair = p.grit(&["verify", "--repair", "--no-sandbox"]);
    assert_eq!(repair.status.code(), Some(DAMAGED), "{}", describe(&repair));
    let text = String::from_utf8_lossy(&repair.stdout);
    assert!(
        text.contains(&format!("LOST source data: word {word}"))
            && text.contains("steps count, upper"),
        "{text}"
    );
}

#[test]
fn never_starts_a_store_on_top_of_other_data() {
    let p = Project::new(PIPELINE);
    let run_at = |db: &Path| {
        assert_cmd::Command::cargo_bin("grit")
            .unwrap()
            .args(["run", "--no-sandbox", "-m"])
            .arg(p.manifest())
            .arg("--db")
            .arg(db)
            .output()
            .unwrap()
    };
    let refused = |output: &std::process::Output, what: &str| {
        assert_eq!(output.status.code(), Some(2), "{}", describe(output));
        let text = stderr(output);
        assert!(
            text.contains("is not a grit store") && text.contains(what),
            "{text}"
        );
        assert!(text.contains("restore grit.sqlite from a backup"), "{text}");
    };
    // A directory of someone's files.
    let junk = p.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), "mine").unwrap();
    refused(&run_at(&junk), "notes.txt");
    assert!(!junk.join("lock").exists() && !junk.join("grit.sqlite").exists());

    // Another program's SQLite database.
    let other = p.path().join("other");
    std::fs::create_dir(&other).unwrap();
    rusqlite::Connection::open(other.join("grit.sqlite"))
        .unwrap()
        .execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (x);")
        .unwrap();
    refused(&run_at(&other), "another program");
    let status = assert_cmd::Command::cargo_bin("grit")
        .unwrap()
        .args(["status", "--db"])
        .arg(&other)
        .output()
        .unwrap();
    refused(&status, "another program");

    // A store whose database is gone: objects but no database.
    p.run_ok(&[]);
    let db = p.db();
    std::fs::remove_file(db.join("grit.sqlite")).unwrap();
    let _ = std::fs::remove_file(db.join("grit.sqlite-wal"));
    let _ = std::fs::remove_file(db.join("grit.sqlite-shm"));
    refused(&run_at(&db), "objects/ with object files");
}

#[test]
fn refuses_a_newer_schema() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    sqlite(&p)
        .execute_batch("PRAGMA user_version = 999")
        .unwrap();
    let (output, _) = p.run(&[]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(stderr(&output).contains("schema version 999, newer than this grit supports"));
    assert_eq!(p.grit(&["status"]).status.code(), Some(2));
}

/// Every earlier released schema (a dump per version under tests/fixtures/stores/) opens,
/// migrates and reads with today's grit.
#[test]
fn opens_and_migrates_every_earlier_schema() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stores");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("dump.sql").is_file())
        .collect();
    versions.sort();
    assert!(!versions.is_empty());
    for fixture in versions {
        let p = Project::new(&std::fs::read_to_string(fixture.join("pipeline.toml")).unwrap());
        copy_tree(&fixture.join("objects"), &p.db().join("objects"));
        std::fs::set_permissions(p.db(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let dump = std::fs::read_to_string(fixture.join("dump.sql")).unwrap();
        let old: i64 = {
            let conn = sqlite(&p);
            // A dump lists tables alphabetically, children before parents.
            conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
            conn.execute_batch(&dump).unwrap();
            conn.query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        // The store is shared with its group (0750, above): its database is 0640, as grit makes it.
        std::fs::set_permissions(
            p.db().join("grit.sqlite"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let live = p.live();
        assert_eq!(
            live.len(),
            3,
            "{}: reads before migrating",
            fixture.display()
        );
        let summary = p.run_ok(&[]);
        assert_eq!(
            summary["executed"],
            0,
            "{}: nothing to redo",
            fixture.display()
        );
        let conn = sqlite(&p);
        let (version, app): (i64, i64) = conn
            .query_row(
                "SELECT * FROM pragma_user_version, pragma_application_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(version >= old, "{}: migrated", fixture.display());
        assert_eq!(app, 0x6772_6974, "marked as grit's");
        assert_eq!(p.live(), live);
        assert_eq!(p.contents("shout"), ["ALPHA\nBETA\n"]);
        let (code, json) = verify_json(&p.db());
        assert_eq!(code, Some(0), "{}: {json}", fixture.display());
    }
}

fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(to)
        .unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o750)).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o440)).unwrap();
        }
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (as `mount -o size=`), or say why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Tmpfs { dir })
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

const FILLS_THE_DISK: &str = r#"
[[step]]
name = "big"
script = 'echo small > $OUTPUT_DIR/note; head -c 3000000 /dev/zero > $OUTPUT_DIR/blob'

[[step]]
name = "use"
inputs = ["blob"]
script = 'wc -c < $INPUT_FILE > $OUTPUT_DIR/size'
"#;

#[test]
fn a_full_disk_fails_the_task_cleanly_and_the_next_run_completes() {
    let p = Project::new(FILLS_THE_DISK);
    let fuse = Path::new("/dev/fuse").exists();
    for mode in ["dir", "fuse"] {
        if mode == "fuse" && !fuse {
            eprintln!("skipped the FUSE capture: no /dev/fuse");
            continue;
        }
        // A fresh 2 MiB filesystem per capture mode, holding the store.
        let tmpfs = match Tmpfs::mount("2m") {
            Ok(tmpfs) => tmpfs,
            Err(reason) => {
                eprintln!("skipped: {reason}");
                return;
            }
        };
        let db = tmpfs.dir.path().join(format!("db-{mode}"));
        let run = || {
            let output = assert_cmd::Command::cargo_bin("grit")
                .unwrap()
                .args(["run", "--json", "--no-sandbox", "--capture", mode, "-m"])
                .arg(p.manifest())
                .arg("--db")
                .arg(&db)
                .output()
                .unwrap();
            let json = common::parse_last_json(&output);
            (output, json)
        };
        let (output, summary) = run();
        // The task fails (1), or, when the disk fills before the run has recorded the task's
        // start (the writer runs beside the script, and a loaded machine delays it), the store
        // cannot be written and the run stops with an environment error (5). Either way the
        // store must hold nothing partial and the next run must complete.
        match output.status.code() {
            Some(1) => {
                let error = summary["failures"][0]["error"]
                    .as_str()
                    .unwrap()
                    .to_lowercase();
                assert!(error.contains("no space left on device"), "{mode}: {error}");
            }
            Some(5) => {
                let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
                assert!(
                    stderr.contains("disk is full") || stderr.contains("no space left"),
                    "{mode}: {}",
                    describe(&output)
                );
            }
            _ => panic!("{mode}: {}", describe(&output)),
        }
        let resources = assert_cmd::Command::cargo_bin("grit")
            .unwrap()
            .args(["resources", "--all", "--json", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&resources.stdout).unwrap();
        assert_eq!(
            listed["resources"],
            serde_json::json!([]),
            "{mode}: nothing partial"
        );

        tmpfs.resize("32m");
        let (output, summary) = run();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{mode}: {}",
            describe(&output)
        );
        assert_eq!(executed(&summary, "use"), 1, "{mode}: {summary}");
        let verify = verify_json(&db);
        assert_eq!(verify.0, Some(0), "{mode}: {}", verify.1);
    }
}

/// A run stopped by a full disk (the store itself could not be written) left its tasks' staged
/// outputs behind, and on the same disk they kept the next run from opening the store at all.
#[test]
fn leftovers_of_a_run_stopped_by_a_full_disk_do_not_stop_the_next_run() {
    // `late` ends first, on a full disk: its failure cannot be recorded, and the run stops while
    // `big`'s 2 MiB are staged.
    let first = r#"
[[step]]
name = "big"
script = 'echo small > $OUTPUT_DIR/note; head -c 3000000 /dev/zero > $OUTPUT_DIR/blob || true; sleep 1; exit 1'

[[step]]
name = "late"
script = 'sleep 0.3; echo hi > $OUTPUT_DIR/late'
"#;
    let p = Project::new(first);
    let tmpfs = match Tmpfs::mount("2m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let db = tmpfs.dir.path().join("db");
    let run = || {
        assert_cmd::Command::cargo_bin("grit")
            .unwrap()
            .args([
                "run",
                "--json",
                "--no-sandbox",
                "--capture",
                "dir",
                "-j",
                "2",
                "-m",
            ])
            .arg(p.manifest())
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    let output = run();
    assert!(
        matches!(output.status.code(), Some(1 | 5)),
        "{}",
        describe(&output)
    );
    // The same disk; the big step now fits.
    p.write_manifest(&first.replace(
        "head -c 3000000 /dev/zero > $OUTPUT_DIR/blob || true; sleep 1; exit 1",
        "head -c 300000 /dev/zero > $OUTPUT_DIR/blob",
    ));
    let output = run();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let verify = verify_json(&db);
    assert_eq!(verify.0, Some(0), "{}", verify.1);
}

/// A task that produces the bytes of an object which was damaged in a way that changed its size
/// (truncated) puts the good bytes back: an existing object is kept only when its size matches.
#[test]
fn rerunning_a_task_restores_its_truncated_output() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let shout = p.hash_of("shout");
    let path = p.object_path(&shout);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_mode(0o600);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, b"ALP").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(p.grit(&["cat", &shout]).status.code(), Some(DAMAGED));
    // The rerun of `upper` re-creates shout; `count` reads it, verified, and is unchanged.
    let run = p.run_ok(&["--force-step", "upper"]);
    assert_eq!(run["failed"], 0, "{run}");
    let cat = p.grit(&["cat", &shout]);
    assert_eq!(cat.status.code(), Some(0), "{}", describe(&cat));
    assert_eq!(cat.stdout, b"ALPHA\nBETA\n");
    assert_eq!(verify_json(&p.db()).0, Some(0));
}

/// A script that swallows its ENOSPC (`|| true`) still fails under the FUSE capture, which saw
/// the refused write, and the failure's one line says why instead of "exited with status 0".
#[test]
fn a_swallowed_full_disk_is_named_in_the_failure_line() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: no /dev/fuse");
        return;
    }
    let tmpfs = match Tmpfs::mount("2m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let p = Project::new(
        r#"
[[step]]
name = "big"
script = 'head -c 3000000 /dev/zero > $OUTPUT_DIR/blob || true'
"#,
    );
    let output = assert_cmd::Command::cargo_bin("grit")
        .unwrap()
        .args(["run", "--json", "--no-sandbox", "--capture", "fuse", "-m"])
        .arg(p.manifest())
        .arg("--db")
        .arg(tmpfs.dir.path().join("db"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let summary = common::parse_last_json(&output);
    let status = summary["failures"][0]["status"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        status.contains("no space left on device") || status.contains("enospc"),
        "{summary}"
    );
}
