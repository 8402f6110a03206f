//! The read and maintenance commands: cat, export, ingest, log, gc, delete, prune, completions,
//! man, and GRIT's command-line spelling.

mod common;

use assert_cmd::Command;
use common::{Project, describe, executed};

const TWO: &str = r#"
[[step]]
name = "seed"
once = true
script = 'echo alpha > $OUTPUT_DIR/word; echo beta > $OUTPUT_DIR/other'

[[step]]
name = "upper"
inputs = ["word"]
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/shout'
"#;

#[test]
fn cat_accepts_unique_prefixes_and_rejects_bad_ones() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let hash = p.hash_of("shout");
    assert_eq!(hash, common::sha256_hex(b"ALPHA\n"));
    assert_eq!(p.cat(&hash[..8]), "ALPHA\n");
    assert_eq!(p.cat(&hash.to_uppercase()), "ALPHA\n");
    let short = p.grit(&["cat", &hash[..7]]);
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 hex"));
    let unknown = p.grit(&["cat", "00000000"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no object"));
    let missing = Command::cargo_bin("grit")
        .unwrap()
        .args(["status", "--db", "/nonexistent/db"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no grit store"));
}

#[test]
fn resources_json_has_the_documented_fields() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let all = p.resources(false);
    let shout = all.iter().find(|r| r["name"] == "shout").unwrap();
    assert_eq!(shout["step"], "upper");
    assert_eq!(shout["size"], 6);
    assert_eq!(shout["live"], true);
    assert!(shout["created_at"].as_str().unwrap().ends_with('Z'));
    let only = p.grit(&["resources", "word", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&only.stdout).unwrap();
    assert_eq!(v["resources"].as_array().unwrap().len(), 1);
}

#[test]
fn export_writes_name_slash_hash_to_a_directory_and_a_tar() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let out = p.path().join("out");
    let result = p.grit(&["export", "shout", "word", "--to", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", describe(&result));
    let shout = p.hash_of("shout");
    assert_eq!(
        std::fs::read_to_string(out.join("shout").join(&shout)).unwrap(),
        "ALPHA\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("word").join(p.hash_of("word"))).unwrap(),
        "alpha\n"
    );

    let tar = p.path().join("x.tar");
    let result = p.grit(&["export", "shout", "--tar", tar.to_str().unwrap()]);
    assert!(result.status.success(), "{}", describe(&result));
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        format!("shout/{shout}")
    );
}

#[test]
fn ingested_files_are_facts_that_start_a_pipeline() {
    let p = Project::new(
        r#"
[[step]]
name = "measure"
inputs = ["*.txt"]
script = 'wc -l < $INPUT_FILE | tr -d " " > $OUTPUT_DIR/lines_$GRIT_INPUT_HASH'
"#,
    );
    let a = p.path().join("a.txt");
    let b = p.path().join("b.txt");
    std::fs::write(&a, "1\n2\n").unwrap();
    std::fs::write(&b, "1\n2\n3\n").unwrap();
    // --name renames one file; it cannot name several.
    let out = p.grit(&[
        "ingest",
        "--name",
        "doc",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--name doc names one file, but 2 were given")
    );
    assert_eq!(
        p.grit(&["status"]).status.code(),
        Some(2),
        "nothing was ingested, no store made"
    );
    // Several files are named after themselves.
    let out = p.grit(&["ingest", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let docs = p.resources(false);
    let mut names: Vec<&str> = docs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt"]);
    assert!(
        docs.iter().all(|r| r["step"].is_null()),
        "ingested files have no step"
    );
    let run = p.run_ok(&[]);
    assert_eq!(executed(&run, "measure"), 2);
    let mut counts: Vec<String> = p
        .live()
        .into_iter()
        .filter(|(n, _)| n.starts_with("lines_"))
        .map(|(_, h)| p.cat(&h))
        .collect();
    counts.sort();
    assert_eq!(counts, ["2\n", "3\n"]);
    // Ingesting the same content again adds nothing.
    let again = p.grit(&["ingest", a.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("(0 new)"));
    assert_eq!(p.run_ok(&[])["executed"], 0);
}

#[test]
fn log_shows_output_status_and_error() {
    let p = Project::new(
        r#"
[[step]]
name = "noisy"
once = true
script = 'echo to-stdout; echo to-stderr >&2; exit 3'
"#,
    );
    let (run, _) = p.run(&[]);
    assert_eq!(run.status.code(), Some(1));
    let log = p.grit(&["log", "1"]);
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(text.contains("step noisy"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("error: exited with status 3"), "{text}");
    assert!(
        text.contains("to-stdout") && text.contains("to-stderr"),
        "{text}"
    );
    let failed = p.grit(&["log", "--step", "noisy", "--failed"]);
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(text.contains("task 1 noisy failed"), "{text}");
    assert!(text.contains("| to-stderr"), "{text}");
    assert_eq!(p.grit(&["log", "99"]).status.code(), Some(2));
}

#[test]
fn gc_removes_history_and_reports_bytes_but_keeps_live_objects() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    // A new version of `upper` makes the old `shout` history.
    p.write_manifest(&TWO.replace("tr a-z A-Z", "rev"));
    p.run_ok(&[]);
    assert_eq!(p.resources(true).len(), 4);
    let dry = p.grit(&["gc", "--dry-run"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("would remove 1 resource(s)"), "{text}");
    assert_eq!(p.resources(true).len(), 4, "a dry run changes nothing");
    let gc = p.grit(&["gc"]);
    let text = String::from_utf8_lossy(&gc.stdout);
    assert!(gc.status.success(), "{}", describe(&gc));
    assert!(
        text.contains("removed 1 resource(s)") && text.contains("6 B freed"),
        "{text}"
    );
    assert_eq!(p.resources(true).len(), 3);
    // Everything live is still readable, and a rerun does nothing.
    for (_, hash) in p.live() {
        assert!(!p.cat(&hash).is_empty());
    }
    assert_eq!(p.run_ok(&[])["executed"], 0);
}

#[test]
fn delete_and_prune_keep_objects_that_live_resources_share() {
    let p = Project::new(
        r#"
[[step]]
name = "snap"
keep = "all"
script = 'date +%s%N > $OUTPUT_DIR/snapshot; echo same > $OUTPUT_DIR/copy_a; echo same > $OUTPUT_DIR/copy_b'
"#,
    );
    for _ in 0..3 {
        p.run_ok(&[]);
    }
    assert_eq!(p.contents("snapshot").len(), 3);
    let prune = p.grit(&["prune", "--keep", "1", "--name", "snapshot"]);
    assert!(prune.status.success(), "{}", describe(&prune));
    assert!(String::from_utf8_lossy(&prune.stdout).contains("removed 2 resource(s)"));
    assert_eq!(p.contents("snapshot").len(), 1);
    // copy_a and copy_b share one object: deleting one must keep the other readable.
    let delete = p.grit(&["delete", "--name", "copy_a"]);
    assert!(delete.status.success(), "{}", describe(&delete));
    assert!(String::from_utf8_lossy(&delete.stdout).contains("0 object(s)"));
    assert_eq!(p.contents("copy_b"), ["same\n"]);
    assert_eq!(
        p.grit(&["delete", "--name", "nothing"]).status.code(),
        Some(2)
    );
}

#[test]
fn grit_spelling_runs_and_exports() {
    let p = Project::new(TWO);
    let run = Command::cargo_bin("grit")
        .unwrap()
        .args([
            "-manifest",
            p.manifest().to_str().unwrap(),
            "-db",
            p.db().to_str().unwrap(),
            "-run",
            "-parallel",
            "2",
        ])
        .env("GRIT_LOG", "error")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", describe(&run));
    let hashes = Command::cargo_bin("grit")
        .unwrap()
        .args([
            "-manifest",
            p.manifest().to_str().unwrap(),
            "-db",
            p.db().to_str().unwrap(),
            "-export",
            "shout",
        ])
        .output()
        .unwrap();
    let shout = common::sha256_hex(b"ALPHA\n");
    assert_eq!(
        String::from_utf8_lossy(&hashes.stdout),
        format!("{shout}\n")
    );
    let content = Command::cargo_bin("grit")
        .unwrap()
        .args(["-db", p.db().to_str().unwrap(), "-export-hash", &shout])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&content.stdout), "ALPHA\n");
    let bad = Command::cargo_bin("grit")
        .unwrap()
        .args(["-db", "x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn db_defaults_to_grit_db_then_dot_grit_beside_the_manifest() {
    let p = Project::new(TWO);
    let out = Command::cargo_bin("grit")
        .unwrap()
        .args(["run", "--no-sandbox", "-q", "-m", "pipeline.toml"])
        .current_dir(p.path())
        .env_remove("GRIT_DB")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        p.path().join(".grit/grit.sqlite").is_file(),
        ".grit/ beside the manifest is the default"
    );
    let elsewhere = p.path().join("elsewhere");
    let out = Command::cargo_bin("grit")
        .unwrap()
        .args(["status", "--json"])
        .env("GRIT_DB", &elsewhere)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "GRIT_DB is honoured (and missing): {}",
        describe(&out)
    );
}

#[test]
fn help_has_examples_and_completions_and_man_render() {
    for sub in [
        "run",
        "status",
        "resources",
        "cat",
        "export",
        "log",
        "ingest",
        "gc",
        "delete",
        "prune",
        "validate",
    ] {
        let out = Command::cargo_bin("grit")
            .unwrap()
            .args([sub, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example"),
            "`grit {sub} --help` lacks an example:\n{text}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::cargo_bin("grit")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("resources"),
            "{shell} completions"
        );
    }
    let man = Command::cargo_bin("grit")
        .unwrap()
        .arg("man")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH grit"));
}

#[test]
fn doctor_reports_each_feature_as_a_table_and_json() {
    let table = Command::cargo_bin("grit")
        .unwrap()
        .arg("doctor")
        .output()
        .unwrap();
    assert!(table.status.success(), "{}", describe(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    for feature in [
        "landlock",
        "user namespaces",
        "/dev/fuse",
        "cgroup v2",
        "sandbox",
    ] {
        assert!(text.contains(feature), "doctor lacks {feature}:\n{text}");
    }
    let json = Command::cargo_bin("grit")
        .unwrap()
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("doctor JSON");
    for key in [
        "landlock",
        "user_namespaces",
        "dev_fuse",
        "cgroup_v2",
        "sandbox",
    ] {
        assert!(v[key]["ok"].is_boolean(), "{key} in {v}");
        assert!(v[key]["detail"].is_string(), "{key} in {v}");
    }
    // The landlock verdict agrees with the ABI the kernel reports.
    let abi = v["landlock_abi"].as_u64().unwrap_or(0);
    assert_eq!(v["landlock"]["ok"].as_bool(), Some(abi > 0), "{v}");
}

/// The pid the kernel hands out next (roughly: other processes may take some first), and the
/// highest one.
fn next_pid() -> (u32, u32) {
    let read = |f: &str| -> u32 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    (
        read("/proc/sys/kernel/ns_last_pid") + 1,
        read("/proc/sys/kernel/pid_max"),
    )
}

#[test]
fn doctor_uses_a_private_directory_whose_name_is_not_its_pid() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let p = Project::new(TWO);
    // A world-writable sticky temp directory, as /tmp, and a directory the links point at.
    let shared = p.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = p.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    // Another user sprays `grit-doctor-<pid>/db -> victim` over the pids to come, in the temp
    // directory doctor uses.
    let (first, pid_max) = next_pid();
    let pids: Vec<u32> = (0..2000).map(|i| (first + i - 1) % pid_max + 1).collect();
    for pid in &pids {
        let planted = shared.join(format!("grit-doctor-{pid}"));
        std::fs::create_dir(&planted).unwrap();
        symlink(&victim, planted.join("db")).unwrap();
        symlink(&victim, planted.join("manifest")).unwrap();
    }
    let mut doctor = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"));
    doctor
        .args(["doctor", "--json"])
        .env("TMPDIR", &shared)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = doctor.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        pids.contains(&pid),
        "doctor's pid {pid} is not among those planted (from {first}): too many processes started meanwhile"
    );
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert!(v["sandbox"]["ok"].is_boolean(), "{v}");
    let detail = v["sandbox"]["detail"].as_str().unwrap();
    assert!(!detail.contains("grit-doctor-"), "{detail}");

    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing created where the planted links point"
    );
    // The planted directories are as they were, and doctor left nothing of its own behind.
    for entry in std::fs::read_dir(&shared).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let planted: u32 = name
            .strip_prefix("grit-doctor-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("doctor left {name} behind"));
        assert!(pids.contains(&planted), "{name}");
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 2, "{name}");
    }
}

/// Every directory of the store with its mode, objects and other files apart.
fn modes(db: &std::path::Path) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    use std::os::unix::fs::MetadataExt;
    let (mut dirs, mut objects, mut files) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![db.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            dirs.push(mode);
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if path.starts_with(db.join("objects")) {
            objects.push(mode);
        } else {
            files.push(mode);
        }
    }
    (dirs, objects, files)
}

#[test]
fn an_open_store_is_left_alone_and_doctor_prints_the_commands_that_close_it() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let (dirs, objects, files) = modes(&p.db());
    assert!(dirs.iter().all(|m| *m == 0o700), "{dirs:?}");
    assert!(objects.iter().all(|m| *m == 0o400), "{objects:?}");
    assert!(files.iter().all(|m| *m == 0o600), "{files:?}");
    let doctor = |p: &Project| {
        let out = Command::cargo_bin("grit")
            .unwrap()
            .args(["doctor", "--db"])
            .arg(p.db())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(doctor(&p).contains("ok, nothing is open to other users"));

    // A store as earlier versions made it: open to everyone.
    let open = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(&p.db(), 0o755);
    open(&p.db().join("objects"), 0o755);
    open(&p.db().join("grit.sqlite"), 0o644);
    // A new run neither closes it nor opens anything new.
    p.write_manifest(&TWO.replace("alpha", "gamma").replace("once = true", ""));
    p.run_ok(&[]);
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().mode() & 0o7777
    };
    assert_eq!(mode(&p.db()), 0o755, "not re-permissioned");
    assert_eq!(
        mode(&p.db().join("grit.sqlite")),
        0o644,
        "not re-permissioned"
    );
    let (_, objects, _) = modes(&p.db());
    assert!(objects.iter().all(|m| *m == 0o400), "{objects:?}");

    let said = doctor(&p);
    let db = p.db().display().to_string();
    assert!(
        said.contains("path(s) can be reached by users other than the owner:")
            && said.contains(&format!("  0755  {db}\n"))
            && said.contains(&format!("  0644  {db}/grit.sqlite\n")),
        "{said}"
    );
    let commands: Vec<&str> = said
        .lines()
        .skip_while(|l| !l.starts_with("grit does not change"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(commands.len(), 3, "{said}");
    assert!(said.contains(&format!("  chgrp -R GROUP {db}\n")), "{said}");
    // The printed commands close it.
    for c in commands {
        let ran = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .status()
            .unwrap();
        assert!(ran.success(), "{c}");
    }
    assert!(doctor(&p).contains("ok, nothing is open to other users"));
}
