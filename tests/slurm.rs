//! `--executor slurm` on a real (one-node) Slurm cluster: the same manifests as the local tests
//! give the same live sets; a failing task, a time limit and `scancel` fail tasks with Slurm's
//! reason and retry them per `retries`; `kill -9` of grit leaves jobs running that the next run
//! adopts (each task runs once); SIGINT and SIGTERM of `grit run`, and of `grit serve` (at once,
//! not after its `shutdown_timeout`), cancel the run's jobs and leave no work directory; a later
//! run removes leftovers of jobs that are gone; an element's scripts run one at a time, and a
//! job stopped mid-element fails only its running task;
//! `grit status`, journald, the server's task
//! JSON and its web UI show each task's job and its state; `grit serve` runs a manifest whose
//! `[executor]` is Slurm on the cluster.
//!
//! The cluster comes from `tests/slurm-cluster.sh start` (`.ci/run` starts it). Without one the
//! cluster tests print why and return; with `GRIT_REQUIRE_SLURM=1` (set by `.ci/run`) a missing
//! cluster fails them instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::journal::{FakeJournal, one};
use common::serve::{Gate, Server, poll, store_token, token};
use common::{Project, describe, parse_last_json};
use nix::sys::signal::Signal;
use serde_json::Value;

/// `SLURM_CONF` of a running cluster, or why there is none (then the test is skipped, or fails
/// under `GRIT_REQUIRE_SLURM=1`).
fn cluster() -> Option<PathBuf> {
    let conf = std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir =
                std::env::var_os("GRIT_SLURM_DIR").unwrap_or_else(|| "/tmp/grit-slurm".into());
            Path::new(&dir).join("slurm.conf")
        });
    let why = if !conf.exists() {
        Some(format!("no Slurm configuration at {}", conf.display()))
    } else {
        match StdCommand::new("sinfo")
            .args(["-h", "-o", "%T"])
            .env("SLURM_CONF", &conf)
            .output()
        {
            Err(e) => Some(format!("cannot run sinfo: {e}")),
            Ok(out) => {
                let states = String::from_utf8_lossy(&out.stdout).to_string();
                // A node finishing the last test's job is "completing" for a few seconds: it is
                // up, and the next job waits for it.
                let up = ["idle", "mixed", "allocated", "completing"]
                    .iter()
                    .any(|s| states.lines().any(|l| l.trim().starts_with(s)));
                (!up).then(|| format!("no Slurm node is up (sinfo: {:?})", states.trim()))
            }
        }
    };
    match why {
        None => Some(conf),
        Some(why) => {
            let message = format!(
                "SKIPPED: no Slurm cluster ({why}); start one with tests/slurm-cluster.sh start"
            );
            if std::env::var("GRIT_REQUIRE_SLURM").as_deref() == Ok("1") {
                panic!("{message} (GRIT_REQUIRE_SLURM=1)");
            }
            eprintln!("{message}");
            None
        }
    }
}

/// `grit run -m MANIFEST --db DB --json EXTRA` in the sandbox (as a user would run it).
fn run(p: &Project, conf: Option<&Path>, extra: &[&str]) -> (Output, Value) {
    let output = run_command(p, conf, extra).output().expect("run grit");
    let json = parse_last_json(&output);
    (output, json)
}

fn run_command(p: &Project, conf: Option<&Path>, extra: &[&str]) -> StdCommand {
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("grit"));
    cmd.arg("run")
        .arg("-m")
        .arg(p.manifest())
        .arg("--db")
        .arg(p.db())
        .arg("--json")
        .args(extra)
        .env_remove("GRIT_DB")
        .env("NO_COLOR", "1");
    if let Some(conf) = conf {
        cmd.env("SLURM_CONF", conf);
    }
    cmd
}

fn on_slurm(p: &Project, conf: &Path, extra: &[&str]) -> (Output, Value) {
    let mut all = vec!["--executor", "slurm"];
    all.extend_from_slice(extra);
    run(p, Some(conf), &all)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Jobs of this user still queued or running whose name is `grit-STEP`.
fn queued_jobs(conf: &Path, step: &str) -> Vec<String> {
    let out = StdCommand::new("squeue")
        .args(["-h", "-r", "-o", "%i %j"])
        .env("SLURM_CONF", conf)
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, name)| *name == format!("grit-{step}"))
        .map(|(id, _)| id.to_string())
        .collect()
}

/// `scancel` the one job of `step` in the queue; returns its id (as a one-element list).
fn scancel_the_steps_job(conf: &Path, step: &str) -> Vec<String> {
    let jobs = queued_jobs(conf, step);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let status = StdCommand::new("scancel")
        .args(&jobs)
        .env("SLURM_CONF", conf)
        .status()
        .expect("scancel");
    assert!(status.success());
    jobs
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stored log of the one task of `step`.
fn log_of_step(p: &Project, step: &str) -> String {
    let list = p.grit(&["log", "--step", step]);
    let list = String::from_utf8_lossy(&list.stdout);
    let id = list
        .split_whitespace()
        .skip_while(|w| *w != "task")
        .nth(1)
        .unwrap_or_else(|| panic!("no task of {step} in {list}"))
        .to_string();
    let log = p.grit(&["log", &id]);
    String::from_utf8_lossy(&log.stdout).into_owned()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn read_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn the_same_manifests_give_the_same_live_sets_as_a_local_run() {
    let Some(conf) = cluster() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests = [
        root.join("examples/quickstart.toml"),
        root.join("tests/fixtures/manifests/grit-demos/Fan-out with shared upstream.toml"),
        root.join("tests/fixtures/manifests/grit-demos/Minimal linear pipeline.toml"),
    ];
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        let local = Project::new(&text);
        let slurm = Project::new(&text);
        let (out, _) = run(&local, None, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "local run of {}:\n{}",
            manifest.display(),
            describe(&out)
        );
        let (out, summary) = on_slurm(&slurm, &conf, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "Slurm run of {}:\n{}",
            manifest.display(),
            describe(&out)
        );
        assert!(
            stderr(&out).contains("submitted Slurm job"),
            "the tasks went through Slurm:\n{}",
            describe(&out)
        );
        assert_eq!(summary["capture"], "dir", "{summary}");
        assert_eq!(
            sorted(slurm.live()),
            sorted(local.live()),
            "live sets differ for {}",
            manifest.display()
        );
        // Nothing left behind: no recorded jobs, no work directories.
        assert_eq!(slurm.status()["slurm_jobs"], serde_json::json!([]));
        let work = slurm.db().join("slurm/work");
        let left: Vec<_> = std::fs::read_dir(&work)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "work directories left: {left:?}");
        // A second run memoises exactly as locally: nothing new runs for derived steps.
        let (out, again) = on_slurm(&slurm, &conf, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert_eq!(again["resources_new"], 0, "{again}");
    }
}

#[test]
fn many_tiny_tasks_are_grouped_into_few_jobs() {
    let Some(conf) = cluster() else { return };
    let p = Project::new(
        r#"
[executor]
kind = "slurm"
max_jobs = 4

[[step]]
name = "tinysrc"
script = "for i in $(seq 1 200); do echo $i > $OUTPUT_DIR/n_$i; done"

[[step]]
name = "tinymap"
inputs = ["n_*"]
script = "echo $(( $(cat $INPUT_FILE) * 2 )) > $OUTPUT_DIR/d_${GRIT_INPUT_NAME#n_}"
"#,
    );
    // The manifest's `[executor] kind` alone picks Slurm.
    let (out, summary) = run(&p, Some(&conf), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(common::executed(&summary, "tinymap"), 200);
    let text = stderr(&out);
    let elements: usize = text
        .lines()
        .filter(|l| l.contains("step tinymap: submitted Slurm job"))
        .filter_map(|l| {
            l.split('(')
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        (1..=50).contains(&elements),
        "200 tasks ran in {elements} jobs, expected a few groups:\n{text}"
    );
    assert_eq!(p.contents("d_7"), vec!["14\n".to_string()]);
}

#[test]
fn a_failing_task_fails_with_its_log_and_is_retried_per_retries() {
    let Some(conf) = cluster() else { return };
    let p = Project::new("");
    let marker = p.path().join("flaky-marker");
    p.write_manifest(&format!(
        r#"
[[step]]
name = "flaky"
retries = 1
read_write = ["{dir}"]
script = '''
if [ ! -e {marker} ]; then touch {marker}; echo "first attempt fails" >&2; exit 3; fi
echo fine > $OUTPUT_DIR/flaky_out
'''

[[step]]
name = "broken"
script = "echo 'no luck here' >&2; exit 7"
"#,
        dir = p.path().display(),
        marker = marker.display()
    ));
    let (out, summary) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(p.contents("flaky_out"), vec!["fine\n".to_string()]);
    let failures = summary["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 1, "{summary}");
    assert_eq!(failures[0]["step"], "broken");
    assert_eq!(failures[0]["status"], "exited with status 7");
    let tail = failures[0]["log_tail"].to_string();
    assert!(
        tail.contains("no luck here"),
        "the node's log came back: {tail}"
    );
    let log = log_of_step(&p, "flaky");
    assert!(log.contains("first attempt fails"), "{log}");
    assert!(
        log.contains("attempt 1 failed (exited with status 3); retrying"),
        "{log}"
    );
}

#[test]
fn scancel_fails_the_task_with_slurms_reason_and_it_is_retried() {
    let Some(conf) = cluster() else { return };
    let p = Project::new("");
    let marker = p.path().join("cancel-marker");
    p.write_manifest(&format!(
        r#"
[[step]]
name = "cancelme"
retries = 1
read_write = ["{dir}"]
script = '''
if [ ! -e {marker} ]; then touch {marker}; sleep 60; fi
echo second > $OUTPUT_DIR/after_cancel
'''
"#,
        dir = p.path().display(),
        marker = marker.display()
    ));
    let child = run_command(&p, Some(&conf), &["--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grit");
    wait_for(
        "the first attempt to start",
        Duration::from_secs(30),
        || marker.exists(),
    );
    let jobs = scancel_the_steps_job(&conf, "cancelme");
    let out = child.wait_with_output().expect("grit");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(p.contents("after_cancel"), vec!["second\n".to_string()]);
    let log = log_of_step(&p, "cancelme");
    assert!(
        log.contains(&format!("Slurm job {} ended CANCELLED", jobs[0])),
        "the reason is Slurm's: {log}"
    );
    assert!(log.contains("attempt 1 failed (stopped by Slurm"), "{log}");
}

#[test]
fn a_time_limit_fails_the_task_with_slurms_reason() {
    let Some(conf) = cluster() else { return };
    // Slurm's shortest limit is a minute, enforced every 30 s: this test takes about 90 s.
    let p = Project::new(
        r#"
[[step]]
name = "overtime"
slurm = { time = "1m" }
script = "sleep 600; echo never > $OUTPUT_DIR/late"
"#,
    );
    let started = Instant::now();
    let (out, summary) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let failure = &summary["failures"][0];
    let status = failure["status"].as_str().unwrap_or_default();
    assert!(
        status.starts_with("stopped by Slurm: job ") && status.contains("TIMEOUT"),
        "Slurm's reason: {summary}"
    );
    assert!(started.elapsed() < Duration::from_secs(200));
    assert!(p.live().is_empty());
}

#[test]
fn kill_9_of_grit_leaves_jobs_that_the_next_run_adopts() {
    let Some(conf) = cluster() else { return };
    let p = Project::new("");
    let count = p.path().join("runs-count");
    p.write_manifest(&format!(
        r#"
[[step]]
name = "adoptsrc"
once = true
script = "for i in 1 2 3; do echo $i > $OUTPUT_DIR/a_$i; done"

[[step]]
name = "adoptme"
inputs = ["a_*"]
read_write = ["{dir}"]
script = "sleep 4; echo ran >> {count}; echo x$(cat $INPUT_FILE) > $OUTPUT_DIR/b_${{GRIT_INPUT_NAME#a_}}"
"#,
        dir = p.path().display(),
        count = count.display()
    ));
    let mut child = run_command(&p, Some(&conf), &["--executor", "slurm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("grit");
    // However the executor groups the three tasks into array elements (one probe element of all
    // three, when the step's duration is unknown), each is recorded with its job.
    wait_for("the tasks to be submitted", Duration::from_secs(60), || {
        !queued_jobs(&conf, "adoptme").is_empty()
            && p.status()["slurm_jobs"].as_array().map_or(0, Vec::len) == 3
    });
    // While they run, `grit status` names each task's job and its state.
    let status = p.status();
    let rows = status["slurm_jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 3, "{status}");
    assert!(
        rows.iter()
            .all(|r| r["job_id"].as_str().is_some_and(|j| j.contains('_'))),
        "{status}"
    );
    let text = p.grit(&["status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("3 tasks on Slurm"),
        "{}",
        describe(&text)
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    let jobs = queued_jobs(&conf, "adoptme");
    assert!(!jobs.is_empty(), "the jobs outlive grit");

    let (out, _) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stderr(&out);
    assert_eq!(text.matches("adopting Slurm job").count(), 3, "{text}");
    assert!(
        !text.contains("step adoptme: submitted"),
        "nothing resubmitted:\n{text}"
    );
    assert_eq!(read_count(&count), 3, "each task ran once");
    assert_eq!(p.contents("b_2"), vec!["x2\n".to_string()]);
    assert_eq!(p.status()["slurm_jobs"], serde_json::json!([]));
}

/// `grit run --executor slurm` stopped by `signal` while its job waits: it exits `code`, its
/// job is cancelled and nothing of it is left in the store's directory.
fn a_signal_cancels_the_runs_jobs(signal: Signal, code: i32) {
    let Some(conf) = cluster() else { return };
    let step = format!("interrupted{}", signal as i32);
    let p = Project::new(&format!(
        r#"
[[step]]
name = "{step}"
script = "sleep 120; echo x > $OUTPUT_DIR/never"
"#,
    ));
    let child = run_command(&p, Some(&conf), &["--executor", "slurm"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grit");
    wait_for("the job to be queued", Duration::from_secs(30), || {
        !queued_jobs(&conf, &step).is_empty()
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
        .expect("signal grit");
    let out = child.wait_with_output().expect("grit");
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    wait_for("the job to be cancelled", Duration::from_secs(20), || {
        queued_jobs(&conf, &step).is_empty()
    });
    assert_eq!(p.status()["slurm_jobs"], serde_json::json!([]));
    // The cancelled job's work directory and submission are gone with the run.
    assert_eq!(entries(&p.db().join("slurm/work")), Vec::<String>::new());
    assert_eq!(entries(&p.db().join("slurm/batch")), Vec::<String>::new());
}

#[test]
fn sigint_cancels_the_runs_jobs() {
    a_signal_cancels_the_runs_jobs(Signal::SIGINT, 130);
}

#[test]
fn sigterm_cancels_the_runs_jobs() {
    a_signal_cancels_the_runs_jobs(Signal::SIGTERM, 143);
}

/// `grit serve --config FILE` with the cluster's `SLURM_CONF`.
fn serve_config(config: &Path, conf: &Path) -> Server {
    let mut command = StdCommand::new(assert_cmd::cargo::cargo_bin("grit"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("SLURM_CONF", conf);
    Server::spawn(command)
}

/// A server stopped by `signal` while its run's job waits on the cluster cancels the run at
/// once, not after `shutdown_timeout` (ten minutes here, far beyond the test's patience): the
/// job goes, the run is recorded interrupted and resumes at the next start, and nothing of it is
/// left in the store's directory.
fn a_stopped_server_cancels_its_runs_jobs_at_once(signal: Signal) {
    let Some(conf) = cluster() else { return };
    let step = format!("servestop{}", signal as i32);
    let p = Project::new(&format!(
        r#"
[executor]
kind = "slurm"

[[step]]
name = "{step}"
script = "sleep 120; echo x > $OUTPUT_DIR/never"
"#,
    ));
    let config = p.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nshutdown_timeout = \"10m\"\n[pipelines.stopped]\nmanifest = \"{}\"\ndb = \"{}\"\n",
            p.manifest().display(),
            p.db().display()
        ),
    )
    .expect("server config");
    let server = serve_config(&config, &conf);
    let operator = token("operator", &["--config".as_ref(), config.as_os_str()]);
    let run = server.trigger("stopped", &operator);
    wait_for("the job to be queued", Duration::from_secs(30), || {
        !queued_jobs(&conf, &step).is_empty()
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), signal)
        .expect("signal the server");
    wait_for(
        "the server to cancel the job",
        Duration::from_secs(30),
        || queued_jobs(&conf, &step).is_empty(),
    );
    poll("the run's end in the server's log", || {
        server
            .stderr()
            .lines()
            .any(|l| l.contains("run ended") && l.contains("interrupted"))
            .then_some(())
    });
    // It exits by itself once the run has ended (the second signal only waits for that).
    assert_eq!(server.stop_with(signal).code(), Some(0));
    assert_eq!(p.status()["slurm_jobs"], serde_json::json!([]));
    assert_eq!(entries(&p.db().join("slurm/work")), Vec::<String>::new());
    assert_eq!(entries(&p.db().join("slurm/batch")), Vec::<String>::new());

    // The next start resumes the run, on the cluster again.
    let server = serve_config(&config, &conf);
    wait_for("the resumed run's job", Duration::from_secs(30), || {
        !queued_jobs(&conf, &step).is_empty()
    });
    assert!(
        server
            .stderr()
            .contains(&format!("run {run} was interrupted")),
        "{}",
        server.stderr()
    );
    assert_eq!(server.stop_with(signal).code(), Some(0));
    wait_for(
        "the resumed run's job to go",
        Duration::from_secs(20),
        || queued_jobs(&conf, &step).is_empty(),
    );
    assert_eq!(entries(&p.db().join("slurm/work")), Vec::<String>::new());
}

#[test]
fn sigterm_of_grit_serve_cancels_its_slurm_runs_jobs_at_once() {
    a_stopped_server_cancels_its_runs_jobs_at_once(Signal::SIGTERM);
}

#[test]
fn sigint_of_grit_serve_cancels_its_slurm_runs_jobs_at_once() {
    a_stopped_server_cancels_its_runs_jobs_at_once(Signal::SIGINT);
}

#[test]
fn tasks_of_one_element_do_not_see_each_others_scratch() {
    let Some(conf) = cluster() else { return };
    // Four inputs: the step's first element (its duration probe) runs all four, one after the
    // other, in the element's one scratch directory.
    let p = Project::new(
        r#"
[[step]]
name = "scratchsrc"
script = "for i in 1 2 3 4; do echo $i > $OUTPUT_DIR/s_$i; done"

[[step]]
name = "scratchuse"
inputs = ["s_*"]
script = 'ls -A "$TMPDIR" > $OUTPUT_DIR/seen_${GRIT_INPUT_NAME#s_}; echo left > "$TMPDIR/left_${GRIT_INPUT_NAME#s_}"'
"#,
    );
    let (out, _) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("step scratchuse: submitted Slurm job")
            && stderr(&out).contains("(1 array element, 4 tasks)"),
        "the four tasks shared one element:\n{}",
        describe(&out)
    );
    for i in 1..=4 {
        assert_eq!(
            p.contents(&format!("seen_{i}")),
            vec![String::new()],
            "task {i} saw an earlier task's scratch"
        );
    }
    assert_eq!(entries(&p.db().join("slurm/batch")), Vec::<String>::new());
}

#[test]
fn an_elements_scripts_run_one_at_a_time() {
    let Some(conf) = cluster() else { return };
    // The step's first element (its duration probe) runs all four tasks, whose scripts must
    // never overlap: an element holds one CPU's worth of Slurm's allocation. Each task's
    // duration is its time on the node (about a second), not the time since it was submitted
    // (up to four seconds and the queue for the last one).
    let p = Project::new("");
    let probe = p.path().join("probe");
    std::fs::create_dir(&probe).expect("probe");
    p.write_manifest(&format!(
        r#"
[[step]]
name = "onesrc"
once = true
script = "for i in 1 2 3 4; do echo $i > $OUTPUT_DIR/o_$i; done"

[[step]]
name = "oneatatime"
inputs = ["o_*"]
read_write = ["{probe}"]
script = '''
{script}
'''
"#,
        probe = probe.display(),
        script = common::concurrency_probe_script(&probe, "1")
    ));
    let (out, summary) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("(1 array element, 4 tasks)"),
        "the four tasks shared one element:\n{}",
        describe(&out)
    );
    assert_eq!(common::executed(&summary, "oneatatime"), 4);
    let busy_ms = summary["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "oneatatime"))
        .and_then(|s| s["busy_ms"].as_u64())
        .expect("busy_ms");
    assert!(
        (4000..8000).contains(&busy_ms),
        "four one-second scripts were busy {busy_ms} ms: {summary}"
    );
    assert_eq!(
        common::highest_observed(&probe),
        1,
        "two scripts of one element ran at once"
    );
    assert_eq!(p.contents("done_o_4"), vec!["done\n".to_string()]);
}

#[test]
fn a_job_stopped_mid_element_fails_its_running_task_and_runs_the_next_ones_again() {
    let Some(conf) = cluster() else { return };
    // One element of four tasks; the job is cancelled while task 2's script runs. Task 2 fails
    // with Slurm's reason (no retries); 3 and 4 never started, so they are submitted again and
    // succeed; each script that finished ran once.
    let p = Project::new("");
    let marker = p.path().join("stop-marker");
    let ran = p.path().join("ran");
    p.write_manifest(&format!(
        r#"
[[step]]
name = "stopsrc"
once = true
script = "for i in 1 2 3 4; do echo $i > $OUTPUT_DIR/m_$i; done"

[[step]]
name = "stopmid"
inputs = ["m_*"]
read_write = ["{dir}"]
script = '''
if [ "$GRIT_INPUT_NAME" = m_2 ] && [ ! -e {marker} ]; then touch {marker}; sleep 60; fi
echo "$GRIT_INPUT_NAME" >> {ran}
echo ok > $OUTPUT_DIR/ok_$GRIT_INPUT_NAME
'''
"#,
        dir = p.path().display(),
        marker = marker.display(),
        ran = ran.display()
    ));
    let child = run_command(&p, Some(&conf), &["--executor", "slurm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grit");
    wait_for("task 2's script", Duration::from_secs(60), || {
        marker.exists()
    });
    scancel_the_steps_job(&conf, "stopmid");
    let out = child.wait_with_output().expect("grit");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let summary = parse_last_json(&out);
    assert_eq!(summary["failed"], 1, "only task 2 failed: {summary}");
    for name in ["m_1", "m_3", "m_4"] {
        assert_eq!(
            p.contents(&format!("ok_{name}")),
            vec!["ok\n".to_string()],
            "{name} succeeded"
        );
    }
    assert!(p.contents("ok_m_2").is_empty(), "task 2 failed");
    let mut runs: Vec<String> = std::fs::read_to_string(&ran)
        .expect("ran")
        .lines()
        .map(str::to_string)
        .collect();
    runs.sort();
    assert_eq!(runs, ["m_1", "m_3", "m_4"], "each finished script ran once");
}

/// The names in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_later_run_removes_the_work_directories_of_jobs_that_are_gone() {
    let Some(conf) = cluster() else { return };
    let p = Project::new(
        r#"
[[step]]
name = "sweepsrc"
script = "echo x > $OUTPUT_DIR/swept"
"#,
    );
    let (out, _) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // What a job killed with its grit, or cancelled while its node still wrote, leaves behind:
    // a work directory and a submission no recorded job names.
    let work = p.db().join("slurm/work/t999-r7-p1-b0");
    std::fs::create_dir_all(work.join("out")).expect("work");
    std::fs::write(work.join("out/half"), "half-written").expect("file");
    std::fs::write(work.join("log"), "a log").expect("log");
    let batch = p.db().join("slurm/batch/r7-p1-b0");
    std::fs::create_dir_all(&batch).expect("batch");
    std::fs::write(batch.join("batch.json"), "{}").expect("batch file");
    let (out, _) = on_slurm(&p, &conf, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("removed 1 work director"),
        "{}",
        describe(&out)
    );
    assert_eq!(entries(&p.db().join("slurm/work")), Vec::<String>::new());
    assert_eq!(entries(&p.db().join("slurm/batch")), Vec::<String>::new());
}

#[test]
fn journald_records_name_each_tasks_slurm_job_and_its_states() {
    let Some(conf) = cluster() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the fake journal needs mount namespaces (root)");
        return;
    }
    let p = Project::new(
        r#"
[pipeline]
name = "journaled"

[[step]]
name = "jsrc"
script = "sleep 1; echo x > $OUTPUT_DIR/j_out"
"#,
    );
    let journal = FakeJournal::new();
    let output = journal.run_grit(
        &[
            "run",
            "-m",
            p.manifest().to_str().expect("utf-8"),
            "--db",
            p.db().to_str().expect("utf-8"),
            "--executor",
            "slurm",
            "--log-format",
            "journald",
            "-v",
        ],
        &[("SLURM_CONF", conf.display().to_string())],
        &p.path().join("stderr"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let records = journal.records();
    let placed: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| one(r, "GRIT_SLURM_STATE").is_some())
        .map(|r| {
            (
                one(r, "GRIT_SLURM_JOB").unwrap_or_default(),
                one(r, "GRIT_SLURM_STATE").unwrap_or_default(),
            )
        })
        .collect();
    let job = placed.first().map(|(job, _)| *job).unwrap_or_default();
    assert!(job.contains('_'), "an array element's id: {placed:?}");
    let states: Vec<&str> = placed.iter().map(|(_, state)| *state).collect();
    assert_eq!(states.first(), Some(&"PENDING"), "{placed:?}");
    assert!(states.contains(&"RUNNING"), "{placed:?}");
    for record in records
        .iter()
        .filter(|r| one(r, "GRIT_SLURM_STATE").is_some())
    {
        assert_eq!(one(record, "GRIT_STEP"), Some("jsrc"), "{record:?}");
        assert!(one(record, "GRIT_TASK").is_some(), "{record:?}");
    }
    let done = records
        .iter()
        .find(|r| one(r, "MESSAGE").is_some_and(|m| m.contains("of jsrc succeeded")))
        .unwrap_or_else(|| panic!("no end record: {records:#?}"));
    assert_eq!(one(done, "GRIT_SLURM_JOB"), Some(job), "{done:?}");
    assert!(
        one(done, "MESSAGE").is_some_and(|m| m.contains(&format!("in Slurm job {job}"))),
        "{done:?}"
    );
}

#[test]
fn grit_serve_runs_a_slurm_manifest_on_the_cluster_and_shows_each_tasks_job() {
    let Some(conf) = cluster() else { return };
    let p = Project::new("");
    let gate = Gate(p.path().join("gate"));
    p.write_manifest(&format!(
        r#"
[pipeline]
name = "onslurm"

[executor]
kind = "slurm"

[[step]]
name = "servesrc"
once = true
script = "for i in 1 2; do echo $i > $OUTPUT_DIR/s_$i; done"

[[step]]
name = "servemap"
inputs = ["s_*"]
read_write = ["{dir}"]
script = '''
while [ ! -e {gate} ]; do sleep 0.1; done
echo "doubled $(( $(cat $INPUT_FILE) * 2 ))" > $OUTPUT_DIR/m_${{GRIT_INPUT_NAME#s_}}
'''
"#,
        dir = p.path().display(),
        gate = gate.0.display()
    ));
    let mut command = StdCommand::new(assert_cmd::cargo::cargo_bin("grit"));
    command
        .arg("serve")
        .arg("-m")
        .arg(p.manifest())
        .arg("--db")
        .arg(p.db())
        .args(["--listen", "127.0.0.1:0"])
        .env("SLURM_CONF", &conf);
    let server = Server::spawn(command);
    let token = store_token("operator", &p.db());
    let run = server.trigger("onslurm", &token);

    // While a task waits at the gate, its job runs: the task JSON and its page say which.
    let (task_id, job) = poll("a servemap task running in a Slurm job", || {
        let (status, tasks) = server.get(&format!("/runs/{run}/tasks"), Some(&token));
        assert_eq!(status, 200, "{tasks}");
        tasks["tasks"].as_array()?.iter().find_map(|t| {
            let slurm = &t["slurm"];
            (t["step"] == "servemap" && slurm["state"] == "RUNNING" && slurm["on_cluster"] == true)
                .then(|| {
                    (
                        t["task_id"].as_str().unwrap_or_default().to_string(),
                        slurm["job_id"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
    });
    assert!(job.contains('_'), "an array element: {job}");
    let array = job.split('_').next().unwrap_or_default().to_string();
    assert!(
        queued_jobs(&conf, "servemap")
            .iter()
            .any(|j| j.split('_').next() == Some(array.as_str())),
        "squeue knows job {job}"
    );
    let (status, task) = server.get(&format!("/tasks/{task_id}"), Some(&token));
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["slurm"]["job_id"], job.as_str(), "{task}");
    let page = ureq::get(format!("{}/ui/tasks/{task_id}", server.url))
        .header("Cookie", format!("grit_session={token}"))
        .call()
        .expect("the task page")
        .into_body()
        .read_to_string()
        .expect("page text");
    assert!(page.contains("Slurm job"), "{page}");
    assert!(
        page.contains(&format!("<code>{job}</code> RUNNING")),
        "{page}"
    );

    gate.open();
    let finished = server.wait_finished(&run, &token);
    assert_eq!(
        finished["status"],
        "succeeded",
        "{finished}\n{}",
        server.stderr()
    );
    assert!(
        server
            .stderr()
            .contains("step servemap: submitted Slurm job"),
        "the server's tasks went through Slurm:\n{}",
        server.stderr()
    );
    // Once done, each task keeps the job that ran it, and how it ended there.
    let (_, tasks) = server.get(&format!("/runs/{run}/tasks"), Some(&token));
    let tasks = tasks["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for t in &tasks {
        assert_eq!(t["slurm"]["state"], "COMPLETED", "{t}");
        assert_eq!(t["slurm"]["on_cluster"], false, "{t}");
        assert!(
            t["slurm"]["job_id"]
                .as_str()
                .is_some_and(|j| j.contains('_')),
            "{t}"
        );
    }
    server.stop();
    assert_eq!(p.contents("m_2"), vec!["doubled 4\n".to_string()]);
    assert_eq!(p.status()["slurm_jobs"], serde_json::json!([]));
}

#[test]
fn unknown_executor_keys_are_usage_errors_with_their_position() {
    // No cluster needed: the manifest is checked before anything runs.
    let p = Project::new(
        "[executor]\nkind = \"slurm\"\ngroup_tagret = \"30s\"\n\n[[step]]\nname = \"a\"\nscript = \"true\"\n",
    );
    let out = Command::cargo_bin("grit")
        .expect("grit")
        .args(["validate", "-m"])
        .arg(p.manifest())
        .arg("--db")
        .arg(p.db())
        .output()
        .expect("grit");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let text = stderr(&out);
    assert!(text.contains("pipeline.toml:3:1"), "{text}");
    assert!(
        text.contains("unknown key `group_tagret` in [executor]"),
        "{text}"
    );
    assert!(text.contains("did you mean `group_target`?"), "{text}");
    let p = Project::new("[[step]]\nname = \"a\"\nscript = \"true\"\n[step.slurm]\ncpu = 2\n");
    let out = Command::cargo_bin("grit")
        .expect("grit")
        .args(["run", "-m"])
        .arg(p.manifest())
        .arg("--db")
        .arg(p.db())
        .output()
        .expect("grit");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let text = stderr(&out);
    assert!(text.contains("pipeline.toml:5:1"), "{text}");
    assert!(text.contains("did you mean `cpus`?"), "{text}");
}
