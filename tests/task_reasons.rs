//! Why each task ran, as the store records it (issue 14): the run that decides to run a task
//! writes the reason in the dry run's words, and `grit log TASK` (like the server's task page and
//! API) reads it back: a new step, a new input, a failure retried with its attempt, a step
//! changed, `--force-step`.

mod common;

use std::collections::BTreeMap;

use common::{Project, describe};

/// An every-run source copying the files of `inbox/`, and a map step that fails for `item_2`
/// while `fail` exists. `{comment}` changes the step's version without changing what it does.
fn manifest(p: &Project, comment: &str) -> String {
    let dir = p.path().display();
    format!(
        r#"
[[step]]
name = "seed"
script = 'cp "{dir}"/inbox/* "$OUTPUT_DIR"/'

[[step]]
name = "shout"
inputs = ["item_*"]
script = '''
# {comment}
if [ "$GRIT_INPUT_NAME" = item_2 ] && [ -e "{dir}/fail" ]; then echo "told to fail" >&2; exit 3; fi
tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/loud_$GRIT_INPUT_NAME"
'''
"#
    )
}

fn put(p: &Project, name: &str, content: &str) {
    std::fs::create_dir_all(p.path().join("inbox")).unwrap();
    std::fs::write(p.path().join("inbox").join(name), content).unwrap();
}

/// `grit log TASK`'s `reason:` line.
fn reason(p: &Project, task: &str) -> String {
    let out = p.grit(&["log", task]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("reason: "))
        .unwrap_or_else(|| panic!("no reason line:\n{text}"))
        .to_string()
}

/// The current tasks of `step`, by input name (the source's by id), with their reason.
fn reasons(p: &Project, step: &str) -> BTreeMap<String, String> {
    let out = p.grit(&["log", "--step", step]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("task "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let key = match words.iter().position(|w| *w == "input") {
                Some(i) => words[i + 1].trim_end_matches(':').to_string(),
                None => words[0].to_string(),
            };
            (key, reason(p, words[0]))
        })
        .collect()
}

/// Runs and returns `grit run`'s exit code.
fn run(p: &Project, extra: &[&str]) -> Option<i32> {
    p.run(extra).0.status.code()
}

#[test]
fn each_task_records_why_it_ran_new_step_new_input_retry_forced_and_changed() {
    let p = Project::new("");
    p.write_manifest(&manifest(&p, "v1"));
    put(&p, "item_1", "one");
    put(&p, "item_2", "two");
    std::fs::write(p.path().join("fail"), "").unwrap();

    // First run: everything is new; item_2 fails.
    assert_eq!(run(&p, &[]), Some(1));
    let shout = reasons(&p, "shout");
    assert_eq!(shout["item_1"], "new step", "{shout:?}");
    assert_eq!(shout["item_2"], "new step", "{shout:?}");
    let seed = reasons(&p, "seed");
    assert_eq!(
        seed.values().collect::<Vec<_>>(),
        ["source: runs every run"],
        "{seed:?}"
    );

    // Second run: the failure is retried (its second attempt), and a new file is a new input;
    // the task that succeeded does not run and keeps its reason.
    put(&p, "item_3", "three");
    assert_eq!(run(&p, &[]), Some(1));
    let shout = reasons(&p, "shout");
    assert_eq!(shout["item_1"], "new step", "{shout:?}");
    assert_eq!(shout["item_2"], "failed before (attempt 2)", "{shout:?}");
    assert_eq!(shout["item_3"], "new input", "{shout:?}");

    // Third run: the retry succeeds, at its third attempt.
    std::fs::remove_file(p.path().join("fail")).unwrap();
    assert_eq!(run(&p, &[]), Some(0));
    let shout = reasons(&p, "shout");
    assert_eq!(shout["item_2"], "failed before (attempt 3)", "{shout:?}");

    // `--force-step`: every task of the step runs again, forced.
    assert_eq!(run(&p, &["--force-step", "shout"]), Some(0));
    let shout = reasons(&p, "shout");
    assert!(
        shout.values().all(|r| r == "forced with --force-step") && shout.len() == 3,
        "{shout:?}"
    );

    // A changed step: a new version whose tasks all say so.
    p.write_manifest(&manifest(&p, "v2"));
    let (out, summary) = p.run(&[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(common::executed(&summary, "shout"), 3, "{summary}");
    let shout = reasons(&p, "shout");
    assert!(
        shout.values().all(|r| r == "step changed (new version)") && shout.len() == 3,
        "{shout:?}"
    );
}

#[test]
fn a_task_an_interrupted_run_left_pending_says_so_when_a_later_run_runs_it() {
    // A run stopped by --max-tasks 1 leaves the step's other task pending: the next run runs it
    // for the reason the first run recorded, and says which run decided it.
    let p = Project::new("");
    p.write_manifest(&manifest(&p, "v1"));
    put(&p, "item_1", "one");
    put(&p, "item_2", "two");
    assert_eq!(run(&p, &["--max-tasks", "2"]), Some(0));
    let pending = reasons(&p, "shout");
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending.values().all(|r| r == "new step"), "{pending:?}");
    assert_eq!(run(&p, &[]), Some(0));
    let shout = reasons(&p, "shout");
    let later: Vec<&String> = shout
        .values()
        .filter(|r| r.starts_with("pending from an earlier run (run 1): new step"))
        .collect();
    assert_eq!(later.len(), 1, "{shout:?}");
}
