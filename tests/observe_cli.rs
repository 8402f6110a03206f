//! Observability from the outside: the real `grit` binary on real manifests in temp dirs. Logging
//! formats and colour, progress bars on a pseudo-terminal, the run summary, `status`, `log
//! --failed`, `graph`, `why` and `run --dry-run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const DEMO: &str = r#"
[pipeline]
name = "demo"

[[step]]
name = "seed"
once = true
script = '''
for n in 1 2 3 4; do echo "item $n" > "$OUTPUT_DIR/num_$n"; done
'''

[[step]]
name = "check"
inputs = ["num_*"]
script = '''
echo "checking $GRIT_INPUT_NAME"
if grep -q 3 "$INPUT_FILE"; then echo "three is not allowed" >&2; exit 3; fi
cp "$INPUT_FILE" "$OUTPUT_DIR/ok_${GRIT_INPUT_NAME#num_}"
'''

[[step]]
name = "total"
inputs = ["ok_*"]
gather = true
# These tests look at how a failure is reported; the gather runs on what succeeded.
gather_partial = true
script = '''
cat "$INPUT_DIR"/* > "$OUTPUT_DIR/all"
'''
"#;

struct Env {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    db: PathBuf,
}

impl Env {
    fn new(manifest: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, manifest).unwrap();
        let db = dir.path().join("db");
        Env {
            dir,
            manifest: path,
            db,
        }
    }

    fn grit(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_grit"));
        command
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .env_remove("GRIT_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NO_COLOR");
        command
    }

    fn run(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["run", "-m", self.manifest.to_str().unwrap(), "-j", "1"];
        args.extend_from_slice(extra);
        self.grit(&args).output().unwrap()
    }

    fn stdout(&self, args: &[&str]) -> String {
        let output = self.grit(args).output().unwrap();
        assert!(
            output.status.success(),
            "grit {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The id of the task of `step` on input `name`, from `grit log --step`.
    fn task_of(&self, step: &str, input: &str) -> i64 {
        let listing = self.stdout(&["log", "--step", step]);
        let line = listing
            .lines()
            .find(|l| l.contains(&format!("input {input} ")))
            .unwrap_or_else(|| panic!("no task on {input} in {listing}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// Logging, colour, progress

#[test]
fn summary_lists_totals_steps_and_failures_with_their_log() {
    let env = Env::new(DEMO);
    let output = env.run(&[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "run 1 failed: 6 tasks executed (5 succeeded, 1 failed), 8 new resources, 70 B captured, "
        ),
        "{stderr}"
    );
    assert!(stderr.contains(" tasks/s\n"), "{stderr}");
    // Steps table, slowest first: each executed step has a row with its counts.
    let row = |step: &str| {
        stderr
            .lines()
            .find(|l| l.split_whitespace().next() == Some(step))
            .unwrap_or_else(|| panic!("no row for {step} in {stderr}"))
            .split_whitespace()
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("check"), ["4", "3", "1"]);
    assert_eq!(row("seed"), ["1", "1", "0"]);
    assert_eq!(row("total"), ["1", "1", "0"]);
    let task = env.task_of("check", "num_3");
    assert!(
        stderr.contains(&format!(
            "failed: step check, task {task} (input num_3): exited with status 3\n  | checking num_3\n  | three is not allowed\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "full log: grit log {task} --db {}",
            env.db.display()
        )),
        "{stderr}"
    );
    // The warning during the run names the task; no colour when stderr is not a terminal.
    assert!(stderr.contains(&format!("WARN task {task} of check (input num_3) failed")));
    assert!(!stderr.contains('\x1b'), "no escape codes off a terminal");

    // A run with nothing new says so.
    std::fs::write(&env.manifest, DEMO.replace("grep -q 3", "grep -q 9")).unwrap();
    env.run(&[]);
    let output = env.run(&[]);
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("run 3 ok: 0 tasks executed"), "{stderr}");
    assert!(stderr.contains("nothing to do: every task is up to date"));
}

#[test]
fn verbose_shows_tasks_and_script_lines_and_quiet_shows_nothing() {
    let env = Env::new(DEMO);
    let output = env.run(&["-v"]);
    let stderr = text(&output.stderr);
    let task = env.task_of("check", "num_3");
    assert!(
        stderr.contains(&format!("task {task} of check started on num_3")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("  check#{task}| checking num_3")));
    assert!(stderr.contains(&format!("  check#{task}! three is not allowed")));
    assert!(stderr.contains("of check succeeded in"));
    assert!(
        !stderr.contains("grit_step"),
        "grit_* fields stay out of text"
    );

    let env = Env::new(&DEMO.replace("grep -q 3", "grep -q 9"));
    let output = env.run(&["-q"]);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stderr),
        "",
        "-q prints nothing when all is well"
    );
}

#[test]
fn quiet_prints_each_failure_and_the_verdict() {
    let env = Env::new(DEMO);
    let output = env.run(&["-q"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let task = env.task_of("check", "num_3");
    let db = env.db.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per failure, then the verdict: {stderr}"
    );
    assert_eq!(
        lines[0],
        format!(
            "failed: step check, task {task} (input num_3): exited with status 3 (grit log {task} --db {db})"
        )
    );
    assert!(
        lines[1].starts_with("run 1 failed: 6 tasks executed (5 succeeded, 1 failed)"),
        "{stderr}"
    );

    // The same as JSON records, and nothing else.
    let env = Env::new(DEMO);
    let output = env.run(&["-q", "--log-format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let records: Vec<serde_json::Value> = text(&output.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let task = env.task_of("check", "num_3");
    assert_eq!(records[0]["level"], "ERROR");
    assert_eq!(records[0]["grit_step"], "check");
    assert_eq!(records[0]["grit_task"], task);
    assert!(
        records[0]["message"].as_str().is_some_and(
            |m| m.starts_with(&format!("failed: step check, task {task} (input num_3)"))
        ),
        "{records:?}"
    );
    assert!(
        records[1]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("run 1 failed: ")),
        "{records:?}"
    );
}

#[test]
fn json_log_lines_are_json_with_grit_fields() {
    let env = Env::new(DEMO);
    let output = env.run(&["--log-format", "json", "-v"]);
    let stderr = text(&output.stderr);
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let hash = sha256(b"item 3\n");
    let line = records
        .iter()
        .find(|r| r["message"] == "three is not allowed")
        .expect("script stderr line as a record");
    assert_eq!(line["grit_step"], "check");
    assert_eq!(line["grit_resource"], "num_3");
    assert_eq!(line["grit_hash"], hash.as_str());
    assert_eq!(line["grit_stream"], "stderr");
    assert_eq!(line["target"], "grit::script");
    let failed = records
        .iter()
        .find(|r| r["level"] == "WARN" && r["grit_resource"] == "num_3")
        .expect("the failure as a WARN record");
    assert_eq!(failed["grit_run"], 1);
    assert!(
        records.iter().any(|r| r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("run 1 failed: "))),
        "the summary is a record"
    );
}

/// Run `command` on a pseudo-terminal with `script(1)`; returns everything the terminal got.
fn on_terminal(command: &str, env: &[(&str, &str)]) -> Option<String> {
    let mut script = Command::new("script");
    script
        .args(["-qec", command, "/dev/null"])
        .env_remove("GRIT_LOG")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    for (k, v) in env {
        script.env(k, v);
    }
    let output = script.output().ok()?;
    Some(text(&output.stdout))
}

/// The text without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const SLOW: &str = r#"
[[step]]
name = "make"
once = true
script = 'for n in 1 2 3 4 5 6; do echo $n > "$OUTPUT_DIR/n_$n"; done'

[[step]]
name = "slowstep"
inputs = ["n_*"]
script = 'sleep 0.3; cp "$INPUT_FILE" "$OUTPUT_DIR/m_$GRIT_INPUT_NAME"'
"#;

#[test]
fn progress_bars_and_colour_on_a_terminal_only() {
    let env = Env::new(SLOW);
    let grit = PathBuf::from(env!("CARGO_BIN_EXE_grit"));
    let command = format!(
        "{} run -m {} --db {} -j 1",
        grit.display(),
        env.manifest.display(),
        env.db.display()
    );
    let Some(screen) = on_terminal(&command, &[]) else {
        eprintln!("skipped: script(1) is not available");
        return;
    };
    let plain = strip_ansi(&screen);
    assert!(plain.contains("overall ["), "overall line: {plain:?}");
    assert!(
        plain.contains("slowstep ["),
        "a bar for the running step: {plain:?}"
    );
    assert!(
        (1..6).any(|done| plain.contains(&format!("{done:>6}/6 "))),
        "done/total of slowstep while it runs: {plain:?}"
    );
    assert!(plain.contains("7/7      tasks"), "{plain:?}");
    assert!(plain.contains("/s ETA "), "rate and ETA: {plain:?}");
    assert!(
        screen.contains("\x1b[32mok\x1b[0m"),
        "coloured verdict: {screen:?}"
    );

    // NO_COLOR: the same run prints no colour codes in the summary.
    let env = Env::new(SLOW);
    let command = format!(
        "{} run -m {} --db {} -j 1",
        grit.display(),
        env.manifest.display(),
        env.db.display()
    );
    let screen = on_terminal(&command, &[("NO_COLOR", "1")]).unwrap();
    assert!(screen.contains("run 1 ok:"), "{screen:?}");
    assert!(!screen.contains("\x1b[32m"), "{screen:?}");

    // -q on a terminal: no bars.
    let env = Env::new(SLOW);
    let command = format!(
        "{} run -q -m {} --db {} -j 1",
        grit.display(),
        env.manifest.display(),
        env.db.display()
    );
    let screen = on_terminal(&command, &[]).unwrap();
    assert!(!screen.contains("overall"), "{screen:?}");

    // Not a terminal: no bars either.
    let env = Env::new(SLOW);
    let output = env.run(&[]);
    assert!(!text(&output.stderr).contains("overall"));
}

// ---------------------------------------------------------------------------------------------
// Looking at a store

#[test]
fn status_table_and_failed_task_listing() {
    let env = Env::new(DEMO);
    env.run(&[]);
    let status = env.stdout(&["status"]);
    let mut lines = status.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "STEP",
            "KIND",
            "VERSION",
            "PENDING",
            "RUNNING",
            "SUCCEEDED",
            "FAILED",
            "LIVE",
            "OUTPUTS"
        ]
    );
    let row = |step: &str| -> Vec<String> {
        status
            .lines()
            .find(|l| l.starts_with(&format!("{step} ")))
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("check")[1], "map");
    assert_eq!(row("check")[3..], ["0", "0", "3", "1", "3"]);
    assert_eq!(row("seed")[3..], ["0", "0", "1", "0", "4"]);
    assert_eq!(row("total")[3..], ["0", "0", "1", "0", "1"]);
    assert!(
        status.contains(
            "last run 1 of demo: failed, 6 executed (5 succeeded, 1 failed), 8 new resources"
        ),
        "{status}"
    );
    assert!(status.contains(&format!(
        "1 failed task in check: grit log --step check --failed --db {}",
        env.db.display()
    )));

    let task = env.task_of("check", "num_3");
    let failed = env.stdout(&["log", "--step", "check", "--failed"]);
    let hash = sha256(b"item 3\n");
    assert!(
        failed.starts_with(&format!(
            "task {task} check failed input num_3 ({}): exited with status 3\n    | checking num_3\n    | three is not allowed\n",
            &hash[..12]
        )),
        "{failed}"
    );
    assert!(failed.contains(&format!("    full log: grit log {task} --db")));
    assert!(failed.ends_with("1 failed task; `grit run` retries them\n"));
    assert_eq!(
        failed.matches("task ").count(),
        2,
        "only the failed task: {failed}"
    );
    assert_eq!(
        env.stdout(&["log", "--step", "seed", "--failed"]),
        "no failed tasks in step seed\n"
    );
    let unknown = env
        .grit(&["log", "--step", "nope", "--failed"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("help: steps are: seed, check, total"));
}

#[test]
fn graph_shows_steps_and_flows_with_counts() {
    let env = Env::new(DEMO);
    let extra = env.dir.path().join("num_9");
    std::fs::write(&extra, "item 9\n").unwrap();
    assert!(
        env.grit(&["ingest", "--name", "num_9", extra.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success()
    );
    env.run(&[]);
    let dot = env.stdout(&["graph"]);
    assert!(dot.starts_with("digraph grit {\n"), "{dot}");
    assert!(
        dot.contains("n0 [label=\"seed\\nsource · 1 task\"];"),
        "{dot}"
    );
    assert!(
        dot.contains("n1 [label=\"check\\nmap · 5 tasks, 1 failed\"];"),
        "{dot}"
    );
    assert!(
        dot.contains("n2 [label=\"total\\ngather · 1 task\"];"),
        "{dot}"
    );
    assert!(dot.contains("n0 -> n1 [label=\"num_* (4)\"];"), "{dot}");
    assert!(dot.contains("n1 -> n2 [label=\"ok_* (4)\"];"), "{dot}");
    assert!(
        dot.contains("n3 [label=\"ingested files\", shape=folder];"),
        "{dot}"
    );
    assert!(dot.contains("n3 -> n1 [label=\"num_9 (1)\"];"), "{dot}");
    assert!(dot.contains("[label=\"all (1)\", shape=note];"), "{dot}");
    assert!(dot.ends_with("}\n"));

    let mermaid = env.stdout(&["graph", "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(
        mermaid.contains("  n1[\"check<br/>map · 5 tasks, 1 failed\"]"),
        "{mermaid}"
    );
    assert!(mermaid.contains("  n0 -->|\"num_* (4)\"| n1"), "{mermaid}");
    assert!(mermaid.contains("  n1 -->|\"ok_* (4)\"| n2"), "{mermaid}");
    assert!(mermaid.contains("[/\"all (1)\"/]"), "{mermaid}");
}

#[test]
fn why_traces_a_resource_back_to_its_sources() {
    let env = Env::new(DEMO);
    env.run(&[]);
    let ok1 = sha256(b"item 1\n");
    // ok_1 and num_1 share their content: both are listed, each with its own provenance.
    let why = env.stdout(&["why", &ok1[..10]]);
    let check_task = env.task_of("check", "num_1");
    let version = env.stdout(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&version).unwrap();
    let check_version = status["steps"][1]["version"].as_str().unwrap().to_string();
    assert!(
        why.starts_with(&format!("num_1 {} (7 B, live, fact)\n", &ok1[..16])),
        "{why}"
    );
    assert!(
        why.contains("  made by task 1 of step seed (source, version "),
        "{why}"
    );
    assert!(why.contains("  a source step: its outputs are facts\n"));
    assert!(
        why.contains(&format!("ok_1 {} (7 B, live)\n", &ok1[..16])),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "  made by task {check_task} of step check (map, version {check_version}) in run 1"
        )),
        "{why}"
    );
    assert!(why.contains("  from input:\n    num_1 "), "{why}");
    assert!(why.contains("(provenance shown above)"), "{why}");

    // The gather output: the set of inputs, each traced further.
    let all = sha256(b"item 1\nitem 2\nitem 4\n");
    let json: serde_json::Value =
        serde_json::from_str(&env.stdout(&["why", &all, "--json"])).unwrap();
    let made = &json["resources"][0]["made_by"][0];
    assert_eq!(json["resources"][0]["name"], "all");
    assert_eq!(made["step"], "total");
    assert_eq!(made["kind"], "gather");
    assert_eq!(made["inputs_total"], 3);
    let inputs: Vec<&str> = made["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["ok_1", "ok_2", "ok_4"]);
    assert_eq!(made["inputs"][0]["made_by"][0]["step"], "check");
    assert_eq!(
        made["inputs"][0]["made_by"][0]["inputs"][0]["name"],
        "num_1"
    );
    assert_eq!(
        made["inputs"][0]["made_by"][0]["inputs"][0]["made_by"][0]["step"],
        "seed"
    );

    // An ingested file is a fact with no producing task.
    let extra = env.dir.path().join("f");
    std::fs::write(&extra, "from outside\n").unwrap();
    env.grit(&["ingest", "--name", "outside", extra.to_str().unwrap()])
        .output()
        .unwrap();
    let why = env.stdout(&["why", &sha256(b"from outside\n")]);
    assert!(why.contains("ingested with `grit ingest`"), "{why}");

    let missing = env.grit(&["why", "0123456789abcdef"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Dry run

fn store_fingerprint(db: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in walk(db) {
        // The WAL index is shared memory every reader updates (`grit status` too); not store data.
        if entry.to_string_lossy().ends_with("-shm") {
            continue;
        }
        let data = std::fs::read(&entry).unwrap_or_default();
        files.push((entry.display().to_string(), sha256(&data)));
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn dry_run_says_what_would_run_and_why_without_touching_the_store() {
    let env = Env::new(DEMO);
    let manifest = env.manifest.to_str().unwrap().to_string();
    let dry = |extra: &[&str]| {
        let mut args = vec!["run", "-m", manifest.as_str(), "--dry-run"];
        args.extend_from_slice(extra);
        env.stdout(&args)
    };

    // No store yet: everything is new, and nothing is created.
    let plan = dry(&[]);
    assert!(!env.db.exists(), "dry run created the store");
    assert!(plan.contains("(no store at"), "{plan}");
    assert!(plan.contains("seed   source  1 task would run"), "{plan}");
    assert!(plan.contains("reason: new step ×1"), "{plan}");
    assert!(
        plan.contains("check  map     may run after upstream steps"),
        "{plan}"
    );
    assert!(
        plan.contains("then: input updated by another job (seed would run)"),
        "{plan}"
    );
    assert!(
        plan.contains("then: input updated by another job (check, seed would run)"),
        "{plan}"
    );
    assert!(
        plan.ends_with("1 task would run now; their outputs may start more\n"),
        "{plan}"
    );

    env.run(&[]);
    let before = store_fingerprint(&env.db);
    let task = env.task_of("check", "num_3");
    let plan = dry(&[]);
    assert!(
        plan.contains("seed   source  up to date (1 done)"),
        "{plan}"
    );
    assert!(plan.contains("check  map     1 task would run"), "{plan}");
    assert!(
        plan.contains(&format!("reason: failed before ×1: num_3 (task {task})")),
        "{plan}"
    );
    assert!(
        plan.contains("total  gather  may run after upstream steps"),
        "{plan}"
    );
    assert_eq!(store_fingerprint(&env.db), before, "the store changed");

    // A new input and a changed step.
    let extra = env.dir.path().join("num_7");
    std::fs::write(&extra, "item 7\n").unwrap();
    env.grit(&["ingest", "--name", "num_7", extra.to_str().unwrap()])
        .output()
        .unwrap();
    let plan = dry(&[]);
    assert!(plan.contains("check  map     2 tasks would run"), "{plan}");
    assert!(plan.contains("reason: new input ×1: num_7"), "{plan}");
    std::fs::write(&env.manifest, DEMO.replace("grep -q 3", "grep -q 9")).unwrap();
    let before = store_fingerprint(&env.db);
    let plan = dry(&[]);
    assert!(plan.contains("check  map     5 tasks would run"), "{plan}");
    assert!(
        plan.contains("reason: step changed (new version) ×5: num_1, num_2, num_3, … 2 more"),
        "{plan}"
    );
    assert!(plan.contains(" replaces "), "{plan}");
    let json: serde_json::Value =
        serde_json::from_str(&dry(&["--json", "--step", "check"])).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["tasks"], 5);
    assert_eq!(json["steps"][0]["skipped"], true);
    assert_eq!(
        json["steps"][1]["reasons"][0]["reason"],
        "step changed (new version)"
    );
    assert_eq!(store_fingerprint(&env.db), before, "the store changed");

    // What the dry run promised is what the run does.
    let output = env.run(&["--json", "--step", "check"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["executed"], 5);
}
