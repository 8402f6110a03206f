//! DESIGN §2, rule by rule, through the real binary. Each test fails if its rule breaks.

mod common;

use common::{Project, describe, executed};

const LINEAR: &str = r#"
[[step]]
name = "seed"
once = true
script = '''
echo "hello world" > $OUTPUT_DIR/greeting
'''

[[step]]
name = "upper"
inputs = ["greeting"]
script = '''
tr '[:lower:]' '[:upper:]' < $INPUT_FILE > $OUTPUT_DIR/loud
'''

[[step]]
name = "count"
inputs = ["loud"]
script = '''
wc -c < $INPUT_FILE | tr -d ' ' > $OUTPUT_DIR/length
'''
"#;

#[test]
fn memoisation_second_run_executes_nothing() {
    let p = Project::new(LINEAR);
    let first = p.run_ok(&[]);
    assert_eq!(first["executed"], 3);
    assert_eq!(first["succeeded"], 3);
    assert_eq!(first["resources_new"], 3);
    assert_eq!(p.contents("loud"), ["HELLO WORLD\n"]);
    assert_eq!(p.contents("length"), ["12\n"]);
    let second = p.run_ok(&[]);
    assert_eq!(second["executed"], 0, "{second}");
    assert_eq!(second["resources_new"], 0);
}

#[test]
fn sources_run_every_run_and_once_sources_once_per_version() {
    let p = Project::new(
        r#"
[[step]]
name = "poll"
script = 'date +%s%N > $OUTPUT_DIR/tick'

[[step]]
name = "seed"
once = true
script = 'echo seed > $OUTPUT_DIR/seeded'
"#,
    );
    let first = p.run_ok(&[]);
    assert_eq!(executed(&first, "poll"), 1);
    assert_eq!(executed(&first, "seed"), 1);
    let second = p.run_ok(&[]);
    assert_eq!(executed(&second, "poll"), 1, "a source runs every run");
    assert_eq!(
        executed(&second, "seed"),
        0,
        "a once source runs once per version"
    );
    // A source's newest output of a name replaces the older one (DESIGN §2.3).
    assert_eq!(p.contents("tick").len(), 1);
    assert_eq!(
        p.resources(true)
            .iter()
            .filter(|r| r["name"] == "tick")
            .count(),
        2
    );
    // A new version of the once source runs again.
    p.write_manifest(
        r#"
[[step]]
name = "poll"
script = 'date +%s%N > $OUTPUT_DIR/tick'

[[step]]
name = "seed"
once = true
script = 'echo seed v2 > $OUTPUT_DIR/seeded'
"#,
    );
    let third = p.run_ok(&[]);
    assert_eq!(executed(&third, "seed"), 1);
    // The new version's output replaces the old one, as for every-run sources (DESIGN §2.3).
    assert_eq!(p.contents("seeded"), ["seed v2\n"]);
}

/// What a source published stops being live when the source leaves the manifest (removed,
/// renamed, or made a derived step), as on a fresh run of the new manifest; it comes back with
/// the source. Before, a gather counted a removed source's output next to its successor's, with
/// exit 0, for good.
#[test]
fn a_source_removed_or_renamed_no_longer_feeds_the_pipeline() {
    let sum = r#"
[[step]]
name = "sum"
inputs = ["num"]
gather = true
script = '''
cat $INPUT_DIR/* | awk '{ s += $1 } END { print s }' > $OUTPUT_DIR/total
'''
"#;
    let old = "[[step]]\nname = \"old_feed\"\nscript = 'echo 5 > $OUTPUT_DIR/num'\n";
    let new = "[[step]]\nname = \"new_feed\"\nscript = 'echo 7 > $OUTPUT_DIR/num'\n";
    let p = Project::new(&format!("{old}\n{new}\n{sum}"));
    p.run_ok(&[]);
    assert_eq!(p.contents("total"), ["12\n"]);
    // Removed.
    p.write_manifest(&format!("{new}\n{sum}"));
    p.run_ok(&[]);
    assert_eq!(p.contents("total"), ["7\n"]);
    assert_eq!(p.contents("num"), ["7\n"]);
    // Back again.
    p.write_manifest(&format!("{old}\n{new}\n{sum}"));
    p.run_ok(&[]);
    assert_eq!(p.contents("total"), ["12\n"]);
    // Renamed, with new content: only the new name's output is live.
    let renamed = "[[step]]\nname = \"feed\"\nscript = 'echo 6 > $OUTPUT_DIR/num'\n";
    p.write_manifest(&format!("{renamed}\n{new}\n{sum}"));
    p.run_ok(&[]);
    assert_eq!(p.contents("total"), ["13\n"]);
    let live_nums = p
        .resources(false)
        .into_iter()
        .filter(|r| r["name"] == "num" && r["live"].as_bool() == Some(true))
        .count();
    assert_eq!(live_nums, 2, "one num per current source");
}

#[test]
fn identical_output_from_a_changed_step_stops_early() {
    let p = Project::new(LINEAR);
    p.run_ok(&[]);
    // Same output bytes, different script text: a new version of `upper` only.
    p.write_manifest(&LINEAR.replace(
        "tr '[:lower:]' '[:upper:]' < $INPUT_FILE > $OUTPUT_DIR/loud",
        "tr 'a-z' 'A-Z' < $INPUT_FILE > $OUTPUT_DIR/loud",
    ));
    let run = p.run_ok(&[]);
    assert_eq!(executed(&run, "upper"), 1);
    assert_eq!(
        executed(&run, "count"),
        0,
        "early cutoff: downstream must not run"
    );
    assert_eq!(executed(&run, "seed"), 0);
    assert_eq!(
        p.contents("length"),
        ["12\n"],
        "downstream output stays live"
    );
}

#[test]
fn changed_output_reruns_downstream_and_old_outputs_become_history() {
    let p = Project::new(LINEAR);
    p.run_ok(&[]);
    let old_loud = p
        .live()
        .into_iter()
        .find(|(n, _)| n == "loud")
        .map(|(_, h)| h);
    p.write_manifest(&LINEAR.replace(
        "tr '[:lower:]' '[:upper:]' < $INPUT_FILE > $OUTPUT_DIR/loud",
        "tr '[:lower:]' '[:upper:]' < $INPUT_FILE | tr -d ' ' > $OUTPUT_DIR/loud",
    ));
    let run = p.run_ok(&[]);
    assert_eq!(executed(&run, "upper"), 1);
    assert_eq!(executed(&run, "count"), 1);
    assert_eq!(p.contents("loud"), ["HELLOWORLD\n"]);
    assert_eq!(p.contents("length"), ["11\n"]);
    // History keeps the old derived resources, not live.
    let all = p.resources(true);
    let old = all
        .iter()
        .find(|r| Some(r["hash"].as_str().unwrap_or("").to_string()) == old_loud)
        .expect("old loud kept in history");
    assert_eq!(old["live"], false);
    assert!(
        all.iter()
            .any(|r| r["name"] == "length" && r["live"] == false)
    );
    // Reverting the text returns to the old version: nothing runs, old outputs live again.
    p.write_manifest(LINEAR);
    let revert = p.run_ok(&[]);
    assert_eq!(revert["executed"], 0, "{revert}");
    assert_eq!(p.contents("loud"), ["HELLO WORLD\n"]);
    assert_eq!(p.contents("length"), ["12\n"]);
}

#[test]
fn a_failed_task_publishes_nothing_and_exits_1() {
    let p = Project::new(
        r#"
[[step]]
name = "seed"
once = true
script = 'echo a > $OUTPUT_DIR/item_a; echo b > $OUTPUT_DIR/item_b'

[[step]]
name = "work"
inputs = ["item_*"]
script = '''
echo partial > $OUTPUT_DIR/out_$GRIT_INPUT_NAME
if [ "$GRIT_INPUT_NAME" = item_b ]; then echo "boom on b" >&2; exit 7; fi
'''
"#,
    );
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(summary["failed"], 1);
    assert_eq!(
        summary["succeeded"], 2,
        "keep-going: the other task still ran"
    );
    let names: Vec<String> = p.live().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"out_item_a".to_string()));
    assert!(
        !names.contains(&"out_item_b".to_string()),
        "a failed task publishes nothing"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("boom on b"),
        "the summary shows the log tail:\n{stderr}"
    );
    assert!(
        stderr.contains("grit log"),
        "the summary says how to see the log:\n{stderr}"
    );
    let status = p.step_status("work");
    assert_eq!(status["failed"], 1);
    assert_eq!(status["succeeded"], 1);
    // Each new run retries failed tasks, and only them.
    let (again, summary) = p.run(&[]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(summary["executed"], 1);
}

#[test]
fn retries_reattempt_within_a_run() {
    let p = Project::new(
        r#"
[[step]]
name = "flaky"
once = true
retries = 2
script = '''
n=$(cat "$GRIT_STATE" 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > "$GRIT_STATE"
[ $n -ge 3 ] || { echo "attempt $n fails" >&2; exit 1; }
echo "made it on attempt $n" > $OUTPUT_DIR/result
'''
"#,
    );
    let state = p.path().join("state");
    let (output, _) = p.run_with_env(&[], &[("GRIT_STATE", state.as_os_str())]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(p.contents("result"), ["made it on attempt 3\n"]);
    let task = p.grit(&["log", "1"]);
    let log = String::from_utf8_lossy(&task.stdout);
    assert!(log.contains("attempts: 3"), "{log}");
    assert!(
        log.contains("attempt 1 fails") && log.contains("attempt 2 fails"),
        "{log}"
    );
}

#[test]
fn timeout_kills_the_task_and_its_children() {
    let p = Project::new(
        r#"
[[step]]
name = "slow"
once = true
timeout = "300ms"
script = '''
sleep 30 &
echo $! > "$MARKER_DIR/child.pid"
sleep 30
echo late > $OUTPUT_DIR/late
'''
"#,
    );
    let (output, _) = p.run_with_env(&[], &[("MARKER_DIR", p.path().as_os_str())]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("timed out"));
    let pid: i32 = std::fs::read_to_string(p.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background child was in the task's process group: it must be gone (or a zombie being reaped).
    std::thread::sleep(std::time::Duration::from_millis(200));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.split_whitespace()
                .nth(2)
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false);
    assert!(!alive, "background child {pid} survived the timeout");
    assert!(p.live().is_empty());
}

#[test]
fn script_environment_follows_the_contract() {
    let p = Project::new(
        r#"
[pipeline]
env = { FROM_PIPELINE = "p", SHARED = "pipeline" }

[[step]]
name = "seed"
once = true
env = { SHARED = "step" }
script = '''
{
  echo "input_file=[$INPUT_FILE]"
  echo "step=$GRIT_STEP run=$GRIT_RUN task=$GRIT_TASK"
  echo "pipeline=$FROM_PIPELINE shared=$SHARED"
  echo "pwd=$(pwd)"
  [ -d "$TMPDIR" ] && [ -w "$TMPDIR" ] && echo tmp-ok
  [ "$HOME" = "$TMPDIR" ] && echo home-ok
} > $OUTPUT_DIR/env
echo data > $OUTPUT_DIR/thing
'''

[[step]]
name = "reader"
inputs = ["thing"]
script = '''
{
  echo "name=$GRIT_INPUT_NAME hash=$GRIT_INPUT_HASH"
  sha256sum < "$INPUT_FILE" | cut -d' ' -f1
  [ -w "$INPUT_FILE" ] && echo input-writable || echo input-read-only
} > $OUTPUT_DIR/seen
'''
"#,
    );
    p.run_ok(&[]);
    let env = &p.contents("env")[0];
    assert!(env.contains("input_file=[]"), "{env}");
    assert!(env.contains("step=seed run=1 task="), "{env}");
    assert!(
        env.contains("pipeline=p shared=step"),
        "step env overrides pipeline env: {env}"
    );
    let dir = p.path().canonicalize().unwrap();
    assert!(
        env.contains(&format!("pwd={}", dir.display())),
        "cwd is the manifest dir: {env}"
    );
    assert!(env.contains("tmp-ok") && env.contains("home-ok"), "{env}");
    let hash = common::sha256_hex(b"data\n");
    let seen = &p.contents("seen")[0];
    assert!(seen.contains(&format!("name=thing hash={hash}")), "{seen}");
    assert!(
        seen.contains(&format!("\n{hash}\n")),
        "INPUT_FILE holds the content: {seen}"
    );
}

#[test]
fn output_rules_fail_the_task_with_a_named_file() {
    for (script, phrase) in [
        (
            "mkdir $OUTPUT_DIR/sub; echo x > $OUTPUT_DIR/sub/f",
            "OUTPUT_DIR/sub: is a directory",
        ),
        (
            "ln -s /etc/passwd $OUTPUT_DIR/link",
            "OUTPUT_DIR/link: is a symbolic link",
        ),
        (
            "echo x > $OUTPUT_DIR/.hidden",
            "OUTPUT_DIR/.hidden: an output name must not start with '.'",
        ),
        (
            "echo x > $TMPDIR/f; ln $TMPDIR/f $OUTPUT_DIR/hard",
            "OUTPUT_DIR/hard: is a hard link",
        ),
    ] {
        let p = Project::new(&format!(
            "[[step]]\nname = \"bad\"\nonce = true\nscript = '''\necho ok > $OUTPUT_DIR/fine\n{script}\n'''\n"
        ));
        // These are the plain directory's after-the-fact checks; the FUSE capture refuses the
        // same operations as they happen (tests/capture_modes.rs).
        let (output, summary) = p.run(&["--capture", "dir"]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{script}: {}",
            describe(&output)
        );
        assert_eq!(summary["failed"], 1);
        assert!(p.live().is_empty(), "{script}: nothing is published");
        let log = p.grit(&["log", "1"]);
        let text = String::from_utf8_lossy(&log.stdout);
        assert!(
            text.contains(phrase),
            "{script}: log lacks {phrase:?}:\n{text}"
        );
    }
}

#[test]
fn rewriting_a_file_keeps_its_final_content() {
    let p = Project::new(
        r#"
[[step]]
name = "gen"
once = true
script = '''
for i in $(seq 1 8); do echo "$i" > $OUTPUT_DIR/work; done
'''
"#,
    );
    p.run_ok(&[]);
    assert_eq!(p.contents("work"), ["8\n"]);
}
