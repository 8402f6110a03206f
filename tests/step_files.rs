//! Files of the manifest's directory a step uses (issue 19 item 2): `files = [...]` folds their
//! content into the step version, so editing one re-runs the step and `touch` does not; a script
//! naming a file it does not declare gets a warning from `validate` and `run --dry-run`.

mod common;

use assert_cmd::Command;
use common::{Project, describe, executed};

fn validate(p: &Project) -> std::process::Output {
    Command::cargo_bin("grit")
        .expect("grit binary")
        .args(["validate", "-m"])
        .arg(p.manifest())
        .env("NO_COLOR", "1")
        .output()
        .expect("run grit validate")
}

const DECLARED: &str = r#"
[[step]]
name = "seed"
once = true
script = 'printf "The Cat\nthe dog\n" > "$OUTPUT_DIR/raw"'

[[step]]
name = "norm"
inputs = ["raw"]
files = ["tools/*.sh", "stopwords.txt"]
script = 'sh tools/norm.sh < "$INPUT_FILE" | grep -v -f stopwords.txt > "$OUTPUT_DIR/clean"'

[[step]]
name = "count"
inputs = ["clean"]
script = 'wc -l < "$INPUT_FILE" | tr -d " " > "$OUTPUT_DIR/lines"'
"#;

fn project(manifest: &str) -> Project {
    let p = Project::new(manifest);
    std::fs::create_dir(p.path().join("tools")).expect("mkdir");
    std::fs::write(p.path().join("tools/norm.sh"), "tr A-Z a-z\n").expect("write");
    std::fs::write(p.path().join("stopwords.txt"), "dog\n").expect("write");
    p
}

#[test]
fn editing_a_declared_file_reruns_the_step_and_touch_does_not() {
    let p = project(DECLARED);
    p.run_ok(&[]);
    assert_eq!(p.contents("clean"), ["the cat\n"]);

    // Only the mtime changes: same content, same version, nothing runs.
    let stopwords = p.path().join("stopwords.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&stopwords)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    assert_eq!(p.run_ok(&[])["executed"], 0);

    // An edited file is a new version of the step: it and what depends on it re-run.
    std::fs::write(&stopwords, "cat\n").expect("edit");
    let edited = p.run_ok(&[]);
    assert_eq!(executed(&edited, "norm"), 1, "{edited}");
    assert_eq!(p.contents("clean"), ["the dog\n"]);
    assert_eq!(executed(&edited, "count"), 1);
    // A new file matching the glob changes the version too.
    std::fs::write(p.path().join("tools/extra.sh"), "true\n").expect("write");
    assert_eq!(executed(&p.run_ok(&[]), "norm"), 1);
}

#[test]
fn a_declared_file_that_does_not_exist_is_a_located_error() {
    let p = project(&DECLARED.replace("\"stopwords.txt\"", "\"stop/words.txt\""));
    let out = validate(&p);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pipeline.toml:10:24")
            && stderr.contains("`files` entry \"stop/words.txt\" matches no file"),
        "{stderr}"
    );
}

#[test]
fn validate_and_dry_run_warn_about_files_a_script_uses_but_does_not_declare() {
    let p = project(&DECLARED.replace("files = [\"tools/*.sh\", \"stopwords.txt\"]\n", ""));
    let warning = "step `norm` uses `tools/norm.sh`, `stopwords.txt`, files of the manifest's directory that it does not declare: editing them re-runs nothing";
    let help = "help: add files = [\"tools/norm.sh\", \"stopwords.txt\"] to the step";
    let out = validate(&p);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(warning) && stderr.contains(help),
        "{stderr}"
    );
    assert!(stderr.contains("pipeline.toml:7:1"), "{stderr}");

    let (dry, _) = p.run(&["--dry-run"]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(stderr.contains(warning), "{stderr}");

    // Declared, the warning is gone.
    let declared = project(DECLARED);
    let out = validate(&declared);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("does not declare"),
        "{}",
        describe(&out)
    );
}

#[test]
fn status_with_a_manifest_shows_what_it_would_change() {
    let p = project(DECLARED);
    p.run_ok(&[]);
    let status = |p: &Project| {
        let out = p.grit(&["status", "-m", p.manifest().to_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        status(&p).contains("no step changes; every step version is current"),
        "{}",
        status(&p)
    );

    // An edited declared file: a new version of `norm`, whose task runs, and `count` after it.
    std::fs::write(p.path().join("stopwords.txt"), "cat\n").expect("edit");
    let full = status(&p);
    let text = full.split_once("would change:").map_or("", |(_, c)| c);
    assert!(!text.is_empty(), "{full}");
    let norm = text
        .lines()
        .find(|l| l.trim_start().starts_with("norm"))
        .unwrap_or("");
    assert!(
        norm.contains("new version (version ")
            && norm.contains(" replaces ")
            && norm.ends_with("1 task would run"),
        "{text}"
    );
    assert!(text.contains("count  may run after norm"), "{text}");
    assert!(!text.contains("seed "), "seed is unchanged: {text}");

    // The JSON form, and a step the manifest drops.
    p.write_manifest(&DECLARED.replace("[[step]]\nname = \"count\"", "[[step]]\nname = \"tally\""));
    let out = p.grit(&["status", "--json", "-m", p.manifest().to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let changes = &json["changes"];
    assert_eq!(changes["removed"][0], "count", "{json}");
    let names: Vec<&str> = changes["changed"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["step"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["norm", "tally"], "{json}");
    assert_eq!(changes["changed"][1]["change"], "new step");
}

/// task-sync's file trigger (issue 15 item 3): a source with `files` runs when one of them
/// changes, and never otherwise; `**` reaches any depth; `once = false` runs it every time.
#[test]
fn a_file_source_runs_when_a_file_changes_and_never_otherwise() {
    let p = Project::new(
        r#"
[[step]]
name = "build"
files = ["src/**/*.go", "go.mod"]
script = 'cat src/*.go src/*/*.go go.mod | wc -l > "$OUTPUT_DIR/lines"'

[[step]]
name = "every"
files = ["go.mod"]
once = false
script = 'date +%N > "$OUTPUT_DIR/stamp"'
"#,
    );
    std::fs::create_dir_all(p.path().join("src/pkg")).unwrap();
    std::fs::write(p.path().join("src/main.go"), "package main\n").unwrap();
    std::fs::write(p.path().join("src/pkg/util.go"), "package pkg\n").unwrap();
    std::fs::write(p.path().join("go.mod"), "module x\n").unwrap();
    let first = p.run_ok(&[]);
    assert_eq!(executed(&first, "build"), 1, "{first}");
    assert_eq!(p.contents("lines"), ["3\n"]);

    let same = p.run_ok(&[]);
    assert_eq!(executed(&same, "build"), 0, "unchanged files: {same}");
    assert_eq!(executed(&same, "every"), 1, "once = false: {same}");

    // A file two directories down is one of its inputs.
    std::fs::write(p.path().join("src/pkg/util.go"), "package pkg\n// more\n").unwrap();
    let changed = p.run_ok(&[]);
    assert_eq!(executed(&changed, "build"), 1, "{changed}");
    assert_eq!(p.contents("lines"), ["4\n"]);

    std::fs::remove_file(p.path().join("go.mod")).unwrap();
    let (missing, _) = p.run(&[]);
    assert_eq!(missing.status.code(), Some(2), "{}", describe(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("\"go.mod\" matches no file"),
        "{}",
        describe(&missing)
    );
}
