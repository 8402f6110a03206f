//! Tasks set up ahead: in the sandbox, grit prepares up to `-j` more tasks than may run scripts
//! (their sandboxes are ready when a script ends). These tests hold it to what `-j` and
//! `parallel` promise: the scripts running at once never exceed them, and a task counts as
//! running (in `grit status`, and for a run that stops) only once its script may start.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Project, concurrency_probe_script, describe, highest_observed, parse_last_json};

/// A manifest whose `work` step (over `items` inputs) records, at its start and after a pause,
/// how many of its scripts run at once, in `probe` (writable from the sandbox).
fn counting_manifest(items: u32, probe: &Path, parallel: Option<u32>) -> String {
    let script = concurrency_probe_script(probe, "0.2");
    let probe = probe.display();
    let parallel = parallel.map_or(String::new(), |n| format!("parallel = {n}\n"));
    format!(
        r#"
[[step]]
name = "items"
once = true
script = 'for i in $(seq 1 {items}); do echo $i > $OUTPUT_DIR/item_$i; done'

[[step]]
name = "work"
inputs = ["item_*"]
read_write = ["{probe}"]
{parallel}script = '''
{script}
'''
"#
    )
}

#[test]
fn sandboxed_scripts_stay_within_jobs_while_the_next_tasks_are_set_up() {
    let p = Project::new("");
    let probe = p.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    p.write_manifest(&counting_manifest(10, &probe, None));
    let output = p.run_command(&["-j", "3"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let summary = parse_last_json(&output);
    assert_eq!(summary["executed"], 11, "{summary}");
    let highest = highest_observed(&probe);
    assert!(highest <= 3, "observed {highest} scripts at once with -j 3");
    assert_eq!(
        highest, 3,
        "with 10 tasks and -j 3 the limit itself is reached"
    );
}

#[test]
fn sandboxed_scripts_stay_within_the_steps_parallel() {
    let p = Project::new("");
    let probe = p.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    p.write_manifest(&counting_manifest(8, &probe, Some(1)));
    let output = p.run_command(&["-j", "4"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        highest_observed(&probe),
        1,
        "parallel = 1 runs one script at a time, whatever -j allows"
    );
    let done = p
        .live()
        .iter()
        .filter(|(n, _)| n.starts_with("done_"))
        .count();
    assert_eq!(done, 8);
}

#[test]
fn a_task_set_up_ahead_is_running_only_once_its_script_may_start() {
    // -j 1 and four one-second tasks: grit sets up the next task while one runs, and `grit
    // status` must never show more than one running. Each task's output is 32 MiB, so storing
    // it (after the script ended and the next script started) takes a while: the next task must
    // not show as running before the previous one is published.
    let p = Project::new(
        r#"
[[step]]
name = "items"
once = true
script = 'for i in 1 2 3 4; do echo $i > $OUTPUT_DIR/item_$i; done'

[[step]]
name = "slow"
inputs = ["item_*"]
script = 'sleep 1; head -c 32M /dev/urandom > "$OUTPUT_DIR/out_$GRIT_INPUT_NAME"'
"#,
    );
    let mut run = p
        .run_command(&["-j", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_running = 0;
    let mut seen_pending_beside_one_running = false;
    while run.try_wait().unwrap().is_none() && Instant::now() < deadline {
        let status = p.grit(&["status", "--json"]);
        if status.status.success()
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&status.stdout)
            && let Some(step) = json["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "slow"))
        {
            let running = step["running"].as_u64().unwrap_or(0);
            assert!(
                running <= 1,
                "status showed {running} running with -j 1: {step}"
            );
            seen_running = seen_running.max(running);
            if running == 1 && step["pending"].as_u64().unwrap_or(0) >= 1 {
                seen_pending_beside_one_running = true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = run.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(seen_running, 1, "the status never showed the running task");
    assert!(
        seen_pending_beside_one_running,
        "the tasks waiting for their turn (one set up ahead) should show as pending"
    );
    assert_eq!(p.step_status("slow")["succeeded"], 4);
}

#[test]
fn a_run_interrupted_while_tasks_wait_for_their_turn_finishes_them_next_time() {
    // SIGINT while one script runs and the next task's sandbox is ready: the waiting task never
    // ran, so it is pending (not failed, not running), and the next run completes the step.
    let p = Project::new(
        r#"
[[step]]
name = "items"
once = true
script = 'for i in 1 2 3; do echo $i > $OUTPUT_DIR/item_$i; done'

[[step]]
name = "slow"
inputs = ["item_*"]
script = 'sleep 2; cp "$INPUT_FILE" "$OUTPUT_DIR/out_$GRIT_INPUT_NAME"'
"#,
    );
    let run = p
        .run_command(&["-j", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first `slow` script is running.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = p.grit(&["status", "--json"]);
        let running = serde_json::from_slice::<serde_json::Value>(&status.stdout)
            .ok()
            .and_then(|json| {
                json["steps"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["name"] == "slow"))
                    .and_then(|s| s["running"].as_u64())
            })
            .unwrap_or(0);
        if running == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill on the pid of our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let output = run.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", describe(&output));
    let slow = p.step_status("slow");
    assert_eq!(slow["running"], 0, "{slow}");
    assert_eq!(slow["failed"], 0, "{slow}");
    assert_eq!(slow["succeeded"], 0, "{slow}");
    assert_eq!(slow["pending"], 3, "{slow}");

    let output = p.run_command(&["-j", "2"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let outs: Vec<String> = p
        .live()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("out_"))
        .collect();
    assert_eq!(outs.len(), 3, "{outs:?}");
}
