//! Dataflow: fan-out, fan-in (gather), cycles, the per-step parallel cap, --step and --max-tasks.

mod common;

use common::{Project, describe, executed, highest_observed};

fn fan(items: usize) -> String {
    format!(
        r#"
[[step]]
name = "items"
script = '''
for i in $(seq 1 {items}); do echo "$i" > $OUTPUT_DIR/item_$i; done
[ -f "${{EXTRA_ITEM:-}}" ] && cp "$EXTRA_ITEM" $OUTPUT_DIR/item_extra || true
'''

[[step]]
name = "square"
inputs = ["item_*"]
script = '''
n=$(cat $INPUT_FILE)
echo $((n * n)) > $OUTPUT_DIR/sq_$GRIT_INPUT_NAME
'''

[[step]]
name = "total"
inputs = ["sq_*"]
gather = true
script = '''
ls "$INPUT_DIR" | wc -l | tr -d ' ' > $OUTPUT_DIR/count
cat "$INPUT_DIR"/* | awk '{{ s += $1 }} END {{ print s }}' > $OUTPUT_DIR/sum
'''
"#
    )
}

#[test]
fn fan_out_then_fan_in_and_adding_one_item() {
    let p = Project::new(&fan(100));
    let first = p.run_ok(&["-j", "4"]);
    assert_eq!(executed(&first, "square"), 100);
    assert_eq!(
        executed(&first, "total"),
        1,
        "the gather step runs once, on the complete set"
    );
    assert_eq!(p.contents("count"), ["100\n"]);
    // 1² + … + 100² = 338350
    assert_eq!(p.contents("sum"), ["338350\n"]);

    // The source runs again (every run) and adds one new item.
    std::fs::write(p.path().join("extra"), "1000\n").unwrap();
    let extra = p.path().join("extra");
    let (output, second) = p.run_with_env(&[], &[("EXTRA_ITEM", extra.as_os_str())]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        executed(&second, "square"),
        1,
        "only the new item is squared"
    );
    assert_eq!(
        executed(&second, "total"),
        1,
        "the gather step runs once on the new set"
    );
    assert_eq!(
        p.contents("count"),
        ["101\n"],
        "the old gather output is no longer live"
    );
    assert_eq!(p.contents("sum"), ["1338350\n"]);
    assert_eq!(
        p.resources(true)
            .iter()
            .filter(|r| r["name"] == "sum")
            .count(),
        2,
        "history keeps the old sum"
    );

    let third = p.run_ok(&[]);
    assert_eq!(
        executed(&third, "total"),
        0,
        "same set: the gather step is memoised"
    );
    assert_eq!(executed(&third, "square"), 0);
}

#[test]
fn gather_input_dir_disambiguates_repeated_names() {
    let p = Project::new(
        r#"
[[step]]
name = "a"
once = true
script = 'echo one > $OUTPUT_DIR/part; echo solo > $OUTPUT_DIR/other'

[[step]]
name = "b"
once = true
script = 'echo two > $OUTPUT_DIR/part'

[[step]]
name = "all"
inputs = ["part", "other"]
gather = true
script = 'ls "$INPUT_DIR" > $OUTPUT_DIR/listing; [ ! -w "$INPUT_DIR/other" ] || true'
"#,
    );
    p.run_ok(&[]);
    let listing = &p.contents("listing")[0];
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names.len(), 3, "{listing}");
    assert!(names.contains(&"other"));
    let one = common::sha256_hex(b"one\n");
    let two = common::sha256_hex(b"two\n");
    assert!(
        names.contains(&format!("part.{}", &one[..12]).as_str()),
        "{listing}"
    );
    assert!(
        names.contains(&format!("part.{}", &two[..12]).as_str()),
        "{listing}"
    );
}

#[test]
fn a_cycle_ends_through_content_dedup() {
    // A crawler: each number n < 20 emits n+1 and n+2 under the same name; duplicates dedup.
    let p = Project::new(
        r#"
[[step]]
name = "start"
once = true
script = 'echo 1 > $OUTPUT_DIR/num'

[[step]]
name = "next"
inputs = ["num"]
script = '''
n=$(cat $INPUT_FILE)
if [ $n -lt 20 ]; then
  echo $((n + 1)) > $OUTPUT_DIR/num
fi
'''
"#,
    );
    let run = p.run_ok(&[]);
    assert_eq!(p.contents("num").len(), 20, "1..=20, each once");
    assert_eq!(executed(&run, "next"), 20);
    assert_eq!(p.run_ok(&[])["executed"], 0);
}

#[test]
fn max_tasks_bounds_a_run_and_the_next_run_continues() {
    let p = Project::new(
        r#"
[[step]]
name = "start"
once = true
script = 'echo 1 > $OUTPUT_DIR/num'

[[step]]
name = "forever"
inputs = ["num"]
script = 'echo $(( $(cat $INPUT_FILE) + 1 )) > $OUTPUT_DIR/num'
"#,
    );
    let run = p.run_ok(&["--max-tasks", "5"]);
    assert_eq!(run["executed"], 5);
    assert_eq!(p.contents("num").len(), 5);
    let status = p.step_status("forever");
    assert_eq!(status["pending"], 1, "the next task waits for the next run");
    let again = p.run_ok(&["--max-tasks", "3"]);
    assert_eq!(again["executed"], 3);
    assert_eq!(p.contents("num").len(), 8);
}

#[test]
fn per_step_parallel_cap_holds() {
    // Each task records how many tasks of its step run at once, using a lock-free directory count.
    let p = Project::new(
        r#"
[[step]]
name = "items"
once = true
script = 'for i in $(seq 1 12); do echo $i > $OUTPUT_DIR/item_$i; done'

[[step]]
name = "capped"
inputs = ["item_*"]
parallel = 2
script = '''
touch "$PROBE/running.$GRIT_TASK"
ls "$PROBE" | grep -c '^running\.' >> "$PROBE/observed.$GRIT_TASK"
sleep 0.2
ls "$PROBE" | grep -c '^running\.' >> "$PROBE/observed.$GRIT_TASK"
rm "$PROBE/running.$GRIT_TASK"
echo done > $OUTPUT_DIR/done_$GRIT_INPUT_NAME
'''
"#,
    );
    let probe = p.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let (output, _) = p.run_with_env(&["-j", "8"], &[("PROBE", probe.as_os_str())]);
    assert!(output.status.success(), "{}", describe(&output));
    let highest = highest_observed(&probe);
    assert!(
        highest <= 2,
        "observed {highest} concurrent tasks with parallel = 2"
    );
    assert_eq!(highest, 2, "with -j 8 the cap itself should be reached");
    assert_eq!(
        p.live()
            .iter()
            .filter(|(n, _)| n.starts_with("done_"))
            .count(),
        12
    );
}

#[test]
fn global_jobs_limit_holds() {
    let p = Project::new(
        r#"
[[step]]
name = "items"
once = true
script = 'for i in $(seq 1 9); do echo $i > $OUTPUT_DIR/item_$i; done'

[[step]]
name = "work"
inputs = ["item_*"]
script = '''
touch "$PROBE/running.$GRIT_TASK"
sleep 0.15
ls "$PROBE" | grep -c '^running\.' >> "$PROBE/observed.$GRIT_TASK"
rm "$PROBE/running.$GRIT_TASK"
'''
"#,
    );
    let probe = p.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let (output, _) = p.run_with_env(&["-j", "3"], &[("PROBE", probe.as_os_str())]);
    assert!(output.status.success(), "{}", describe(&output));
    let highest = highest_observed(&probe);
    assert!(highest <= 3, "observed {highest} with -j 3");
}

#[test]
fn step_filter_limits_what_runs() {
    let p = Project::new(
        r#"
[[step]]
name = "seed"
once = true
script = 'echo x > $OUTPUT_DIR/x'

[[step]]
name = "next"
inputs = ["x"]
script = 'cp $INPUT_FILE $OUTPUT_DIR/y'
"#,
    );
    let first = p.run_ok(&["--step", "seed"]);
    assert_eq!(executed(&first, "seed"), 1);
    assert_eq!(executed(&first, "next"), 0);
    assert_eq!(p.step_status("next")["pending"], 1);
    let second = p.run_ok(&["--step", "next"]);
    assert_eq!(executed(&second, "next"), 1);
    let (bad, _) = p.run(&["--step", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no such step"));
}

#[test]
fn an_exclusion_in_inputs_leaves_out_matching_names_for_map_and_gather_steps() {
    let p = Project::new(
        r#"
[[step]]
name = "src"
script = '''
echo 1 > $OUTPUT_DIR/a.csv
echo 2 > $OUTPUT_DIR/b.csv
echo 9 > $OUTPUT_DIR/tmp_c.csv
'''

[[step]]
name = "each"
inputs = ["*.csv", "!tmp_*"]
script = 'cp $INPUT_FILE $OUTPUT_DIR/seen_$GRIT_INPUT_NAME.txt'

[[step]]
name = "all"
inputs = ["*.csv", "!tmp_*"]
gather = true
script = 'ls $INPUT_DIR | sort | tr "\n" " " > $OUTPUT_DIR/members'
"#,
    );
    let summary = p.run_ok(&[]);
    assert_eq!(executed(&summary, "each"), 2, "{summary}");
    assert_eq!(p.contents("members"), ["a.csv b.csv "]);
    assert!(p.contents("seen_tmp_c.csv.txt").is_empty());
    // A new excluded name starts nothing; a new selected one starts its task and the gather.
    p.write_manifest(&std::fs::read_to_string(p.manifest()).unwrap().replace(
        "echo 9 > $OUTPUT_DIR/tmp_c.csv",
        "echo 9 > $OUTPUT_DIR/tmp_c.csv; echo 8 > $OUTPUT_DIR/tmp_d.csv",
    ));
    let summary = p.run_ok(&[]);
    assert_eq!(executed(&summary, "each"), 0, "{summary}");
    assert_eq!(executed(&summary, "all"), 0, "{summary}");
}
