//! task-pipeline's manifests and command lines, as its users wrote them (issue 15, items 1–2):
//! `[[step]]` + `start = true` routed by file name, `[[task]]` tables, `-start`, no `-run`,
//! `-migrate-tainted`, and `grit migrate-manifest` giving the same resources.

mod common;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use common::{Project, describe};

/// `grit ARGS` run from `dir`, as a task-pipeline user typed it (no `--db` added).
fn grit_in(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("grit")
        .expect("grit binary")
        .current_dir(dir)
        .args(args)
        .env_remove("GRIT_DB")
        .env("NO_COLOR", "1")
        .output()
        .expect("run grit")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Live resources of the store at `db` as sorted (name, content) pairs.
fn live_contents(dir: &Path, db: &str) -> Vec<(String, String)> {
    let listing = grit_in(dir, &["resources", "--json", "--db", db]);
    assert!(listing.status.success(), "{}", describe(&listing));
    let json: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let mut out: Vec<(String, String)> = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["live"].as_bool() == Some(true))
        .map(|r| {
            let hash = r["hash"].as_str().unwrap();
            let cat = grit_in(dir, &["cat", hash, "--db", db]);
            (
                r["name"].as_str().unwrap().to_string(),
                String::from_utf8_lossy(&cat.stdout).into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

const QUICKSTART: &str = include_str!("fixtures/manifests/legacy/task-pipeline-quickstart.toml");

#[test]
fn task_pipeline_quickstart_runs_with_its_own_command_line() {
    let p = Project::new(QUICKSTART);
    let out = grit_in(
        p.path(),
        &[
            "-manifest",
            "pipeline.toml",
            "-db",
            "./my-pipeline-db",
            "-run",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let live = live_contents(p.path(), "my-pipeline-db");
    assert_eq!(
        live,
        [
            ("next".into(), "INPUT DATA\n".into()),
            ("next".into(), "More data\n".into()),
            ("process".into(), "Input data\n".into()),
            ("transform".into(), "More data\n".into()),
        ]
    );
    // `next` routes to no step: kept, and said once.
    let err = stderr(&out);
    assert_eq!(err.matches("routed to no step").count(), 1, "{err}");
    assert!(err.contains(": next"), "{err}");
    // The rerun does nothing.
    let again = grit_in(
        p.path(),
        &[
            "-manifest",
            "pipeline.toml",
            "-db",
            "./my-pipeline-db",
            "-run",
            "-quiet",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    let status = grit_in(p.path(), &["status", "--json", "--db", "my-pipeline-db"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["last_run"]["executed"], 0, "{json}");
}

#[test]
fn files_are_routed_by_the_text_before_the_first_underscore_and_the_last_dot() {
    let p = Project::new(
        r#"
[[step]]
name = "start"
start = true
script = '''
for i in 1 2 3; do echo "$i" > "$OUTPUT_DIR/process_$i.txt"; done
echo x > $OUTPUT_DIR/final_report.csv
echo y > $OUTPUT_DIR/done
echo z > $OUTPUT_DIR/process.tar.gz
echo w > $OUTPUT_DIR/by_hand.txt
'''

[[step]]
name = "process"
script = 'echo "p$(cat $INPUT_FILE)" > $OUTPUT_DIR/report.csv'

# task-pipeline routes no file to a name with `_` (the rule keeps the text before the first `_`).
[[step]]
name = "by_hand"
script = 'cp $INPUT_FILE $OUTPUT_DIR/never'

[[step]]
name = "report"
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/summary_$GRIT_INPUT_HASH'
"#,
    );
    let (out, json) = p.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let steps = json["steps"].as_array().unwrap();
    let tasks = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["executed"].as_u64().unwrap())
            .unwrap_or(0)
    };
    // process_1.txt, process_2.txt, process_3.txt → process; report.csv (×3, one content each)
    // → report. `final_report.csv` routes to `final`, `done` to `done`, `process.tar.gz` to
    // `process.tar`, `by_hand.txt` to `by`: no such steps.
    assert_eq!(tasks("process"), 3, "{json}");
    assert_eq!(tasks("report"), 3, "{json}");
    assert_eq!(tasks("by_hand"), 0, "{json}");
    let err = stderr(&out);
    assert!(
        err.contains("routed to no step")
            && err.contains("done")
            && err.contains("final_report.csv")
            && err.contains("process.tar.gz")
            && err.contains("by_hand.txt")
            && err.contains("summary_"),
        "{err}"
    );
    assert!(!p.contents("done").is_empty(), "unrouted files are kept");
}

#[test]
fn dash_start_chooses_the_start_step() {
    let p = Project::new(
        r#"
[[step]]
name = "a"
start = true
script = 'echo from-a > $OUTPUT_DIR/b'

[[step]]
name = "b"
script = 'echo "b saw [$(cat $INPUT_FILE 2>/dev/null)]" > $OUTPUT_DIR/c'

[[step]]
name = "c"
script = 'cat $INPUT_FILE > $OUTPUT_DIR/done'
"#,
    );
    let out = grit_in(
        p.path(),
        &[
            "-manifest",
            "pipeline.toml",
            "-db",
            "db",
            "-run",
            "-start",
            "b",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let names: Vec<String> = live_contents(p.path(), "db")
        .into_iter()
        .map(|(n, c)| format!("{n}={}", c.trim()))
        .collect();
    // `a` never ran: `b` is the start step (a source with no input), and `c` follows it.
    assert_eq!(names, ["c=b saw []", "done=b saw []"], "{}", describe(&out));

    let unknown = grit_in(
        p.path(),
        &[
            "-manifest",
            "pipeline.toml",
            "-db",
            "db",
            "-run",
            "-start",
            "bb",
        ],
    );
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    assert!(
        stderr(&unknown).contains("did you mean `b`?"),
        "{}",
        describe(&unknown)
    );
}

#[test]
fn task_tables_chain_in_file_order_and_run_without_dash_run() {
    let p = Project::new(
        r#"
[[task]]
name = "fetch"
script = "printf '3\n1\n2\n' > $OUTPUT_DIR/data.txt"

[[task]]
name = "process"
script = "sort < $INPUT_FILE > $OUTPUT_DIR/sorted.txt"

[[task]]
name = "count"
script = "wc -l < $INPUT_FILE > $OUTPUT_DIR/count"
"#,
    );
    let out = grit_in(p.path(), &["-manifest", "pipeline.toml", "-db", "./db"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("running the pipeline"),
        "one line says the run was implied: {}",
        describe(&out)
    );
    let live = live_contents(p.path(), "db");
    let get = |name: &str| {
        live.iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.trim().to_string())
    };
    assert_eq!(get("sorted.txt").as_deref(), Some("1\n2\n3"));
    assert_eq!(get("count").as_deref(), Some("3"));
}

#[test]
fn migrate_tainted_reports_changed_steps_and_what_they_redo_then_runs() {
    let p = Project::new(QUICKSTART);
    let first = grit_in(
        p.path(),
        &["-manifest", "pipeline.toml", "-db", "db", "-run"],
    );
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let changed = QUICKSTART.replace("sort > $OUTPUT_DIR/next", "sort -r > $OUTPUT_DIR/next");
    assert_ne!(changed, QUICKSTART);
    p.write_manifest(&changed);
    let out = grit_in(
        p.path(),
        &[
            "-manifest",
            "pipeline.toml",
            "-db",
            "db",
            "-run",
            "-migrate-tainted",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("step `transform` changed") && err.contains("1 task will run again"),
        "{err}"
    );
    assert!(!err.contains("step `process` changed"), "{err}");
    let status = grit_in(p.path(), &["status", "--json", "--db", "db"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["last_run"]["executed"], 1, "{json}");
}

#[test]
fn migrate_manifest_prints_grit_form_that_gives_the_same_resources() {
    for (legacy, fixture) in [
        ("quickstart", QUICKSTART),
        (
            "tasks",
            "# first form\n[[task]]\nname = \"fetch\"\nscript = \"echo 2 > $OUTPUT_DIR/data.json\"\n\n[[task]]\nname = \"process\"\nscript = \"cat $INPUT_FILE $INPUT_FILE > $OUTPUT_DIR/processed.json\"\n",
        ),
    ] {
        let p = Project::new(fixture);
        let migrated = grit_in(p.path(), &["migrate-manifest", "pipeline.toml"]);
        assert_eq!(migrated.status.code(), Some(0), "{}", describe(&migrated));
        let text = String::from_utf8(migrated.stdout.clone()).unwrap();
        assert!(
            !text.contains("start =") && !text.contains("[[task]]"),
            "{text}"
        );
        std::fs::write(p.path().join("grit.toml"), &text).unwrap();
        // The rewrite is grit's own form: no note that it was read as another.
        let check = grit_in(p.path(), &["validate", "-m", "grit.toml"]);
        assert!(check.status.success(), "{}", describe(&check));
        assert!(
            !stderr(&check).contains("is read as"),
            "{legacy}: {}",
            describe(&check)
        );

        let old = grit_in(p.path(), &["run", "-m", "pipeline.toml", "--db", "old"]);
        let new = grit_in(p.path(), &["run", "-m", "grit.toml", "--db", "new"]);
        assert!(old.status.success(), "{}", describe(&old));
        assert!(new.status.success(), "{}", describe(&new));
        assert_eq!(
            live_contents(p.path(), "old"),
            live_contents(p.path(), "new"),
            "{legacy}: {text}"
        );
        assert!(!live_contents(p.path(), "new").is_empty());
    }
}

#[test]
fn every_legacy_manifest_of_the_notes_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests/legacy");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = grit_in(&dir, &["validate", "-m", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            describe(&out)
        );
    }
}
