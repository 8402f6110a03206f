//! The engine's seams, driven as an embedding client would: an executor of the test's own that
//! runs no shell, and two runs on two stores in one process (one after the other, then at
//! once), each with its own process executor, sandbox zygote and FUSE capture.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::events::{Event, Observer};
use super::{CancelReason, CancelToken, RunInputs, RunOptions, RunReport};
use crate::capture::Capture;
use crate::capture::dir::DirCapture;
use crate::capture::fuse::FuseCapture;
use crate::executor::process::ProcessExecutor;
use crate::executor::{ExecFuture, Executor, Exit, TaskControl, TaskInput, TaskSpec};

fn options(no_sandbox: bool) -> RunOptions {
    RunOptions {
        jobs: 2,
        only_steps: Vec::new(),
        force_steps: Vec::new(),
        max_tasks: None,
        no_sandbox,
        params: Default::default(),
    }
}

struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event<'_>) {}
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `manifest_path` on the store `db` through `executor` and `capture` (made for the store).
fn run_with(
    manifest_path: &Path,
    db: &Path,
    executor: Arc<dyn Executor>,
    capture: &dyn Fn(&Path) -> Arc<dyn Capture>,
    no_sandbox: bool,
    observer: &dyn Observer,
    cancel: &CancelToken,
) -> RunReport {
    let manifest = crate::manifest::load(manifest_path).unwrap().manifest;
    let (paths, _lock, writer) = crate::store::open_for_write(db).unwrap();
    let inputs = RunInputs {
        manifest,
        capture: capture(&paths.tmp),
        executor,
        paths,
        writer,
        lines: None,
        options: options(no_sandbox),
    };
    runtime()
        .block_on(super::run(inputs, observer, cancel))
        .unwrap()
}

fn dir_capture(tmp: &Path) -> Arc<dyn Capture> {
    Arc::new(DirCapture::new(tmp))
}

/// The live resources of a store with their content, sorted by name.
fn live(db: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db.join("grit.sqlite")).unwrap();
    let objects = crate::store::objects::Objects::new(db.join("objects"));
    let mut stmt = conn
        .prepare("SELECT name, hash FROM resources WHERE live = 1 ORDER BY name")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.into_iter()
        .map(|(name, hash)| {
            let content = std::fs::read_to_string(objects.path(&hash)).unwrap();
            (name, content)
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// An executor with no processes at all: it writes a task's outputs itself. A source writes
/// `hello_1` and `hello_2`; a map task writes its input upper-cased to `loud_<input name>`.
/// With `block`, every task waits for the run's cancellation instead.
#[derive(Default)]
struct InProcess {
    executed: AtomicU64,
    runs_ended: AtomicU64,
    block: bool,
}

impl InProcess {
    async fn attempt(&self, spec: &TaskSpec, control: &TaskControl) -> Exit {
        self.executed.fetch_add(1, Ordering::SeqCst);
        if self.block {
            control.cancel.cancelled().await;
            return Exit::Cancelled;
        }
        let written = match &spec.input {
            TaskInput::None => ["hello_1", "hello_2"].iter().try_for_each(|name| {
                std::fs::write(spec.output_dir.join(name), format!("hello from {name}\n"))
            }),
            TaskInput::File { path, name, .. } => std::fs::read_to_string(path).and_then(|text| {
                std::fs::write(
                    spec.output_dir.join(format!("loud_{name}")),
                    text.to_uppercase(),
                )
            }),
            TaskInput::Dir { .. } => Ok(()),
        };
        match written {
            Ok(()) => Exit::Code(0),
            Err(e) => Exit::SpawnFailed(e.to_string()),
        }
    }
}

impl Executor for InProcess {
    fn execute<'a>(&'a self, spec: &'a TaskSpec, control: &'a TaskControl) -> ExecFuture<'a> {
        Box::pin(self.attempt(spec, control))
    }

    fn run_ended(&self) {
        self.runs_ended.fetch_add(1, Ordering::SeqCst);
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

/// A manifest whose scripts would fail if a shell ran them.
fn shell_free_manifest(dir: &Path) -> PathBuf {
    let path = dir.join("grit.toml");
    std::fs::write(
        &path,
        r#"[[step]]
name = "greet"
script = "exit 7"

[[step]]
name = "shout"
inputs = ["hello_*"]
script = "exit 7"
"#,
    )
    .unwrap();
    path
}

#[test]
fn an_executor_of_the_embedders_own_runs_the_pipeline_without_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shell_free_manifest(dir.path());
    let db = dir.path().join("db");
    let executor = Arc::new(InProcess::default());
    let cancel = CancelToken::new();

    let report = run_with(
        &manifest,
        &db,
        executor.clone(),
        &dir_capture,
        false,
        &Quiet,
        &cancel,
    );
    assert_eq!(
        (report.totals.executed, report.totals.failed),
        (3, 0),
        "{report:?}"
    );
    assert_eq!(executor.executed.load(Ordering::SeqCst), 3);
    assert_eq!(executor.runs_ended.load(Ordering::SeqCst), 1);
    let expected = pairs(&[
        ("hello_1", "hello from hello_1\n"),
        ("hello_2", "hello from hello_2\n"),
        ("loud_hello_1", "HELLO FROM HELLO_1\n"),
        ("loud_hello_2", "HELLO FROM HELLO_2\n"),
    ]);
    assert_eq!(live(&db), expected);

    // The same executor serves the next run: the source polls again, its identical outputs start
    // no new work (DESIGN §2.2).
    let report = run_with(
        &manifest,
        &db,
        executor.clone(),
        &dir_capture,
        false,
        &Quiet,
        &cancel,
    );
    assert_eq!(report.totals.executed, 1, "{report:?}");
    assert_eq!(executor.executed.load(Ordering::SeqCst), 4);
    assert_eq!(executor.runs_ended.load(Ordering::SeqCst), 2);
    assert_eq!(live(&db), expected);
}

/// Cancels the run as soon as the engine starts a task.
struct CancelOnTaskStart(CancelToken);

impl Observer for CancelOnTaskStart {
    fn event(&self, event: &Event<'_>) {
        if let Event::TaskStarted { .. } = event {
            self.0.cancel(CancelReason::Requested);
        }
    }
}

#[test]
fn the_runs_cancellation_reaches_the_executor_with_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = shell_free_manifest(dir.path());
    let db = dir.path().join("db");
    let executor = Arc::new(InProcess {
        block: true,
        ..InProcess::default()
    });
    let cancel = CancelToken::new();
    // The executor's task only ends through the token: a run that returns was cancelled through
    // the executor, not by killing a process.
    let report = run_with(
        &manifest,
        &db,
        executor.clone(),
        &dir_capture,
        false,
        &CancelOnTaskStart(cancel.clone()),
        &cancel,
    );
    assert!(report.cancelled, "{report:?}");
    assert_eq!(report.totals.executed, 0, "{report:?}");
    assert_eq!(executor.executed.load(Ordering::SeqCst), 1);
    assert_eq!(executor.runs_ended.load(Ordering::SeqCst), 1);
    assert!(live(&db).is_empty());
}

/// A pipeline of sandboxed steps whose outputs name the store they ran for.
fn sandboxed_manifest(dir: &Path, label: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("grit.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[step]]
name = "items"
script = 'for i in 1 2 3; do echo "{label} $i" > "$OUTPUT_DIR/item_$i"; done'

[[step]]
name = "upper"
inputs = ["item_*"]
script = '''
# The sandbox hides the store from its own tasks.
test ! -e "$GRIT_STORE_PROBE"
tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/up_$GRIT_INPUT_NAME"
'''
env = {{ GRIT_STORE_PROBE = "{db}/grit.sqlite" }}
"#,
            db = dir.join("db").display()
        ),
    )
    .unwrap();
    path
}

fn expected_live(label: &str) -> Vec<(String, String)> {
    let upper = label.to_uppercase();
    let mut v = Vec::new();
    for i in 1..=3 {
        v.push((format!("item_{i}"), format!("{label} {i}\n")));
    }
    for i in 1..=3 {
        v.push((format!("up_item_{i}"), format!("{upper} {i}\n")));
    }
    v.sort();
    v
}

/// The FUSE capture when this machine can mount it, else the plain directory (saying so).
fn best_capture(tmp: &Path) -> Arc<dyn Capture> {
    match FuseCapture::mount(tmp) {
        Ok(fuse) => Arc::new(fuse),
        Err(e) => {
            eprintln!("FUSE capture unavailable ({e}); using the plain directory");
            Arc::new(DirCapture::new(tmp))
        }
    }
}

/// Notes the zygote pids of one executor while its tasks finish.
struct ZygoteWatch {
    executor: Arc<ProcessExecutor>,
    seen: Mutex<Vec<i32>>,
}

impl Observer for ZygoteWatch {
    fn event(&self, event: &Event<'_>) {
        if let Event::TaskFinished { .. } = event {
            let mut seen = self.seen.lock().unwrap();
            for pid in self.executor.running_zygote() {
                if !seen.contains(&pid) {
                    seen.push(pid);
                }
            }
        }
    }
}

fn sandbox_unavailable() -> Option<String> {
    if let Err(errno) = crate::sandbox::landlock_abi() {
        return Some(format!("no landlock (errno {errno})"));
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    (userns.trim() == "0").then(|| "user namespaces are off".into())
}

/// Runs the sandboxed pipeline of `label` in `dir` with an executor of its own; returns the report
/// and the zygote pids its tasks saw.
fn sandboxed_run(dir: &Path, label: &str) -> (RunReport, Vec<i32>, Arc<ProcessExecutor>) {
    let manifest = sandboxed_manifest(dir, label);
    let executor = Arc::new(ProcessExecutor::new());
    let watch = ZygoteWatch {
        executor: executor.clone(),
        seen: Mutex::new(Vec::new()),
    };
    let report = run_with(
        &manifest,
        &dir.join("db"),
        executor.clone(),
        &best_capture,
        false,
        &watch,
        &CancelToken::new(),
    );
    let seen = watch.seen.into_inner().unwrap();
    (report, seen, executor)
}

#[test]
fn two_runs_on_two_stores_in_one_process_one_after_the_other_and_at_once() {
    if let Some(reason) = sandbox_unavailable() {
        eprintln!("skipped: the sandbox is unavailable here: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));

    // One after the other: each run's executor starts its own zygote and ends it with the run.
    for (store, label) in [(&a, "alpha"), (&b, "beta")] {
        let (report, zygotes, executor) = sandboxed_run(store, label);
        assert_eq!(
            (report.totals.executed, report.totals.failed),
            (4, 0),
            "{report:?}"
        );
        assert!(report.refused_accesses.is_empty(), "{report:?}");
        assert!(!zygotes.is_empty(), "the sandboxed tasks had no zygote");
        assert_eq!(
            executor.running_zygote(),
            Vec::<i32>::new(),
            "outlived its run"
        );
        assert_eq!(live(&store.join("db")), expected_live(label));
    }

    // At once, on two new stores: two engines, two executors, two zygotes, two captures.
    let (c, d) = (dir.path().join("c"), dir.path().join("d"));
    let (left, right) = std::thread::scope(|scope| {
        let left = scope.spawn(|| sandboxed_run(&c, "gamma"));
        let right = scope.spawn(|| sandboxed_run(&d, "delta"));
        (left.join().unwrap(), right.join().unwrap())
    });
    for ((report, zygotes, executor), store, label) in [(&left, &c, "gamma"), (&right, &d, "delta")]
    {
        assert_eq!(
            (report.totals.executed, report.totals.failed),
            (4, 0),
            "{label}: {report:?}"
        );
        assert!(report.refused_accesses.is_empty(), "{report:?}");
        assert!(!zygotes.is_empty(), "{label}: no zygote");
        assert_eq!(executor.running_zygote(), Vec::<i32>::new());
        assert_eq!(live(&store.join("db")), expected_live(label));
    }
    assert!(
        left.1.iter().all(|pid| !right.1.contains(pid)),
        "the two runs shared a zygote: {:?} {:?}",
        left.1,
        right.1
    );
}
