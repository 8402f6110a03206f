//! The engine driven as a library, the way an embedding client (a server) drives it: a manifest,
//! an opened store, the plain-directory capture, no sandbox, and a cancellation token.

use std::path::Path;
use std::sync::Arc;

use super::events::{Event, Observer};
use super::{CancelReason, CancelToken, RunInputs, RunOptions};
use crate::capture::dir::DirCapture;

/// Cancels the run as soon as the engine starts a task.
struct CancelOnTaskStart(CancelToken);

impl Observer for CancelOnTaskStart {
    fn event(&self, event: &Event<'_>) {
        if let Event::TaskStarted { .. } = event {
            self.0.cancel(CancelReason::Requested);
        }
    }
}

fn options() -> RunOptions {
    RunOptions {
        jobs: 2,
        only_steps: Vec::new(),
        force_steps: Vec::new(),
        max_tasks: None,
        no_sandbox: true,
        params: Default::default(),
    }
}

fn write_manifest(dir: &Path, marker: &Path) -> std::path::PathBuf {
    let path = dir.join("grit.toml");
    let text = format!(
        r#"[pipeline]
name = "cancel"

[[step]]
name = "slow"
script = '''
echo early > "$OUTPUT_DIR/early"
sleep 3
touch {marker}
echo late > "$OUTPUT_DIR/late"
'''
"#,
        marker = marker.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn sql_count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db.join("grit.sqlite")).unwrap();
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn cancelling_the_token_kills_the_running_task_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("finished");
    let manifest_path = write_manifest(dir.path(), &marker);
    let db = dir.path().join("db");
    let manifest = crate::manifest::load(&manifest_path).unwrap().manifest;
    let (paths, _lock, writer) = crate::store::open_for_write(&db).unwrap();
    let inputs = RunInputs {
        manifest,
        capture: Arc::new(DirCapture::new(&paths.tmp)),
        executor: Arc::new(crate::executor::process::ProcessExecutor::new()),
        paths,
        writer,
        lines: None,
        options: options(),
    };
    let cancel = CancelToken::new();
    let observer = CancelOnTaskStart(cancel.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(super::run(inputs, &observer, &cancel))
        .unwrap();

    assert!(report.cancelled, "{report:?}");
    assert_eq!(report.interrupted, None, "no signal was involved");
    assert_eq!(report.totals.executed, 0, "{report:?}");
    assert!(
        !marker.exists(),
        "the task ran to its end instead of being killed"
    );
    assert_eq!(sql_count(&db, "SELECT count(*) FROM resources"), 0);
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM runs WHERE status = 'interrupted'"
        ),
        1
    );
    assert_eq!(
        sql_count(&db, "SELECT count(*) FROM tasks WHERE state = 'pending'"),
        1,
        "the task goes back to pending, so the next run resumes it"
    );
    // The task it stopped is pending again, recorded as interrupted by that run, for whichever
    // run comes next.
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM tasks WHERE state = 'pending' AND reason_run IS NULL
               AND reason = 'interrupted: a run stopped during it (run 1)'"
        ),
        1
    );
}

#[test]
fn a_token_cancelled_before_the_run_records_an_interrupted_run_that_does_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("finished");
    let manifest_path = write_manifest(dir.path(), &marker);
    let db = dir.path().join("db");
    let manifest = crate::manifest::load(&manifest_path).unwrap().manifest;
    let (paths, _lock, writer) = crate::store::open_for_write(&db).unwrap();
    let inputs = RunInputs {
        manifest,
        capture: Arc::new(DirCapture::new(&paths.tmp)),
        executor: Arc::new(crate::executor::process::ProcessExecutor::new()),
        paths,
        writer,
        lines: None,
        options: options(),
    };
    let cancel = CancelToken::new();
    cancel.cancel(CancelReason::Signal(libc::SIGTERM));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(super::run(
            inputs,
            &CancelOnTaskStart(cancel.clone()),
            &cancel,
        ))
        .unwrap();

    assert!(report.cancelled);
    assert_eq!(report.interrupted, Some(libc::SIGTERM));
    assert_eq!(report.totals.executed, 0);
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM runs WHERE status = 'interrupted'"
        ),
        1
    );
    assert_eq!(
        sql_count(&db, "SELECT count(*) FROM tasks WHERE state = 'running'"),
        0
    );
}

#[test]
fn a_run_with_nothing_to_do_leaves_the_dataflow_generation_as_it_was() {
    // The server's cached step models are kept while the generation stays: a run of the same
    // steps that runs nothing must not move it, and one that runs a task must.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("grit.toml");
    let write = |text: &str| {
        std::fs::write(
            &manifest,
            format!(
                r#"
[[step]]
name = "seed"
once = true
script = 'echo {text} > "$OUTPUT_DIR/item_1"'

[[step]]
name = "copy"
inputs = ["item_*"]
script = 'cp "$INPUT_FILE" "$OUTPUT_DIR/out_$GRIT_INPUT_NAME"'
"#
            ),
        )
        .unwrap()
    };
    write("one");
    let db = dir.path().join("db");
    let generation = || sql_count(&db, "SELECT n FROM dataflow_generation");
    run_once(&manifest, &db);
    let after_first = generation();
    assert!(after_first > 0);
    run_once(&manifest, &db);
    assert_eq!(generation(), after_first, "nothing ran: nothing changed");
    write("two");
    run_once(&manifest, &db);
    assert!(generation() > after_first, "a new version ran");
}

/// Runs `manifest` once through the engine (no sandbox, dir capture) and returns the tasks each
/// step executed.
fn run_once(manifest_path: &Path, db: &Path) -> Vec<(String, u64)> {
    run_forcing(manifest_path, db, &[])
}

/// [`run_once`] with `--force-step` for `forced`.
fn run_forcing(manifest_path: &Path, db: &Path, forced: &[&str]) -> Vec<(String, u64)> {
    let manifest = crate::manifest::load(manifest_path).unwrap().manifest;
    let (paths, _lock, writer) = crate::store::open_for_write(db).unwrap();
    let inputs = RunInputs {
        manifest,
        capture: Arc::new(DirCapture::new(&paths.tmp)),
        executor: Arc::new(crate::executor::process::ProcessExecutor::new()),
        paths,
        writer,
        lines: None,
        options: RunOptions {
            force_steps: forced.iter().map(|s| s.to_string()).collect(),
            ..options()
        },
    };
    let cancel = CancelToken::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(super::run(inputs, &Quiet, &cancel))
        .unwrap();
    report
        .steps
        .into_iter()
        .map(|s| (s.name, s.executed))
        .collect()
}

struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event<'_>) {}
}

/// What `store::plan` (the dry run) says each step would run now.
fn planned(manifest_path: &Path, db: &Path) -> Vec<(String, u64)> {
    planned_forcing(manifest_path, db, &[])
}

/// [`planned`] with `--force-step` for `forced`.
fn planned_forcing(manifest_path: &Path, db: &Path, forced: &[&str]) -> Vec<(String, u64)> {
    let manifest = crate::manifest::load(manifest_path).unwrap().manifest;
    let (_, conn) = crate::store::open_read(db).unwrap();
    let forced: Vec<String> = forced.iter().map(|s| s.to_string()).collect();
    crate::store::plan::plan(Some(&conn), &manifest, &[], &forced)
        .unwrap()
        .into_iter()
        .map(|p| (p.step, p.tasks))
        .collect()
}

#[test]
fn the_plan_predicts_what_the_engine_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let manifest_path = dir.path().join("grit.toml");
    let manifest = |upper_version: &str| {
        format!(
            r#"[[step]]
name = "split"
once = true
script = 'for x in a b c; do echo $x > "$OUTPUT_DIR/in_$x"; done'

[[step]]
name = "upper"
inputs = ["in_*"]
script = '''
# {upper_version}
case "$GRIT_INPUT_NAME" in *b) exit 1;; esac
tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/up_${{GRIT_INPUT_NAME#in_}}"
'''
"#
        )
    };
    std::fs::write(&manifest_path, manifest("v1")).unwrap();
    let steps = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    };

    assert_eq!(
        run_once(&manifest_path, &db),
        steps(&[("split", 1), ("upper", 3)])
    );
    // A failure runs again; the rest is up to date.
    let plan = planned(&manifest_path, &db);
    assert_eq!(plan, steps(&[("split", 0), ("upper", 1)]));
    assert_eq!(run_once(&manifest_path, &db), plan);
    // A new version of a step runs all of its tasks again.
    std::fs::write(&manifest_path, manifest("v2")).unwrap();
    let plan = planned(&manifest_path, &db);
    assert_eq!(plan, steps(&[("split", 0), ("upper", 3)]));
    assert_eq!(run_once(&manifest_path, &db), plan);
}

/// Ignores every event.
struct Silent;

impl Observer for Silent {
    fn event(&self, _: &Event<'_>) {}
}

#[test]
fn run_parameters_are_checked_before_anything_runs_and_recorded_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grit.toml");
    std::fs::write(
        &path,
        r#"[pipeline.params]
region = { default = "eu" }

[[step]]
name = "where"
once = true
params = ["region"]
script = 'echo "$GRIT_PARAM_REGION" > "$OUTPUT_DIR/where"'
"#,
    )
    .unwrap();
    let db = dir.path().join("db");
    let (paths, _lock, writer) = crate::store::open_for_write(&db).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |params: &[(&str, &str)]| {
        let inputs = RunInputs {
            manifest: crate::manifest::load(&path).unwrap().manifest,
            capture: Arc::new(DirCapture::new(&paths.tmp)),
            executor: Arc::new(crate::executor::process::ProcessExecutor::new()),
            paths: paths.clone(),
            writer: writer.clone(),
            lines: None,
            options: RunOptions {
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..options()
            },
        };
        runtime.block_on(super::run(inputs, &Silent, &CancelToken::new()))
    };

    let unknown = run(&[("regoin", "us")]);
    assert!(
        matches!(
            unknown,
            Err(super::EngineError::Params(
                crate::manifest::ParamError::Unknown { .. }
            ))
        ),
        "{unknown:?}"
    );
    assert_eq!(
        sql_count(&db, "SELECT count(*) FROM runs"),
        0,
        "no run was recorded"
    );

    let report = run(&[("region", "us")]).unwrap();
    assert_eq!(report.totals.executed, 1);
    assert_eq!(report.params["region"], "us");
    let conn = rusqlite::Connection::open(db.join("grit.sqlite")).unwrap();
    let recorded: String = conn
        .query_row("SELECT params FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recorded, r#"{"region":"us"}"#);
    let report = run(&[]).unwrap();
    assert_eq!(report.params["region"], "eu", "the default fills in");
    assert_eq!(report.totals.executed, 1, "a new value runs");
    assert_eq!(
        run(&[("region", "us")]).unwrap().totals.executed,
        0,
        "a value seen before is memoised"
    );
}

#[test]
fn the_plan_predicts_what_the_engine_runs_for_gather_once_and_forced_steps() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let manifest_path = dir.path().join("grit.toml");
    std::fs::write(
        &manifest_path,
        r#"[[step]]
name = "seed"
once = true
script = 'for x in a b; do echo $x > "$OUTPUT_DIR/in_$x"; done'

[[step]]
name = "upper"
inputs = ["in_*"]
script = 'tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/up_${GRIT_INPUT_NAME#in_}"'

[[step]]
name = "count"
inputs = ["in_*"]
gather = true
script = 'ls "$INPUT_DIR" | wc -l > "$OUTPUT_DIR/count"'
"#,
    )
    .unwrap();
    let steps = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    };
    assert_eq!(
        run_once(&manifest_path, &db),
        steps(&[("seed", 1), ("upper", 2), ("count", 1)])
    );
    assert_eq!(
        planned(&manifest_path, &db),
        steps(&[("seed", 0), ("upper", 0), ("count", 0)])
    );
    // Forced map and gather steps run their current tasks again.
    let forced = ["upper", "count"];
    let plan = planned_forcing(&manifest_path, &db, &forced);
    assert_eq!(plan, steps(&[("seed", 0), ("upper", 2), ("count", 1)]));
    assert_eq!(run_forcing(&manifest_path, &db, &forced), plan);
    // A forced `once` source runs again; its identical outputs start nothing downstream.
    let plan = planned_forcing(&manifest_path, &db, &["seed"]);
    assert_eq!(plan, steps(&[("seed", 1), ("upper", 0), ("count", 0)]));
    assert_eq!(run_forcing(&manifest_path, &db, &["seed"]), plan);
}
