//! Shared helpers for the integration tests: a temporary project (manifest directory + store)
//! driven through the real `grit` binary.
#![allow(dead_code)]

pub mod journal;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// A temporary directory holding a manifest and a store.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(manifest: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pipeline.toml"), manifest).expect("write manifest");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifest(&self) -> PathBuf {
        self.dir.path().join("pipeline.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    pub fn write_manifest(&self, manifest: &str) {
        std::fs::write(self.manifest(), manifest).expect("write manifest");
    }

    /// `grit ARGS --db DB` (no manifest).
    pub fn grit(&self, args: &[&str]) -> Output {
        let mut cmd = Command::cargo_bin("grit").expect("grit binary");
        cmd.args(args)
            .arg("--db")
            .arg(self.db())
            .env_remove("GRIT_DB")
            .env("NO_COLOR", "1");
        cmd.output().expect("run grit")
    }

    /// `grit run -m MANIFEST --db DB --json EXTRA`, returning the output and the parsed summary.
    pub fn run(&self, extra: &[&str]) -> (Output, Value) {
        self.run_with_env(extra, &[])
    }

    /// [`Project::run`] with extra environment variables for the scripts.
    pub fn run_with_env(
        &self,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> (Output, Value) {
        let mut cmd = self.run_command(&[]);
        cmd.arg("--no-sandbox")
            .args(extra)
            .envs(env.iter().copied());
        let output = cmd.output().expect("run grit");
        let json = parse_last_json(&output);
        (output, json)
    }

    /// `grit run -m MANIFEST --db DB --json EXTRA` as a user would type it (the sandbox on), to
    /// spawn or run.
    pub fn run_command(&self, extra: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"));
        cmd.arg("run")
            .arg("-m")
            .arg(self.manifest())
            .arg("--db")
            .arg(self.db())
            .arg("--json")
            .args(extra)
            .env_remove("GRIT_DB")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Run and assert success; returns the summary.
    pub fn run_ok(&self, extra: &[&str]) -> Value {
        let (output, json) = self.run(extra);
        assert_eq!(
            output.status.code(),
            Some(0),
            "grit run failed:\n{}",
            describe(&output)
        );
        json
    }

    /// Live resources as (name, hash) → content.
    pub fn live(&self) -> Vec<(String, String)> {
        self.resources(false)
            .into_iter()
            .filter(|r| r["live"].as_bool() == Some(true))
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["hash"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub fn resources(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["resources", "--json"];
        if all {
            args.push("--all");
        }
        let output = self.grit(&args);
        assert!(
            output.status.success(),
            "grit resources failed:\n{}",
            describe(&output)
        );
        let value: Value = serde_json::from_slice(&output.stdout).expect("resources JSON");
        value["resources"].as_array().cloned().unwrap_or_default()
    }

    /// The hash of the live resource `name` (the first listed, if several share the name).
    pub fn hash_of(&self, name: &str) -> String {
        self.live()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h)
            .unwrap_or_else(|| panic!("no live resource {name}"))
    }

    /// The object file of `hash` in the store (`<db>/objects/ab/cd/<rest>`).
    pub fn object_path(&self, hash: &str) -> PathBuf {
        self.db()
            .join("objects")
            .join(&hash[0..2])
            .join(&hash[2..4])
            .join(&hash[4..])
    }

    /// Content of the live resource(s) with this name, sorted.
    pub fn contents(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .live()
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, hash)| self.cat(&hash))
            .collect();
        out.sort();
        out
    }

    pub fn cat(&self, hash: &str) -> String {
        let output = self.grit(&["cat", hash]);
        assert!(
            output.status.success(),
            "grit cat failed:\n{}",
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn status(&self) -> Value {
        let output = self.grit(&["status", "--json"]);
        assert!(
            output.status.success(),
            "grit status failed:\n{}",
            describe(&output)
        );
        serde_json::from_slice(&output.stdout).expect("status JSON")
    }

    /// The status row of one step.
    pub fn step_status(&self, name: &str) -> Value {
        self.status()["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no step {name} in status"))
    }
}

/// A step script that records how many of the step's scripts run at once, at its start and
/// after `pause` seconds, in `probe` (which the step must list in `read_write`), then writes
/// `done_<input name>`. [`highest_observed`] reads the most seen.
pub fn concurrency_probe_script(probe: &Path, pause: &str) -> String {
    let probe = probe.display();
    format!(
        r#"touch "{probe}/running.$GRIT_TASK"
ls "{probe}" | grep -c '^running\.' >> "{probe}/observed.$GRIT_TASK"
sleep {pause}
ls "{probe}" | grep -c '^running\.' >> "{probe}/observed.$GRIT_TASK"
rm "{probe}/running.$GRIT_TASK"
echo done > $OUTPUT_DIR/done_$GRIT_INPUT_NAME"#
    )
}

/// The highest number of running tasks any task recorded in the probe directory's
/// `observed.*` files (the `running.*` markers are gone by then).
pub fn highest_observed(probe: &Path) -> u32 {
    let mut highest = 0;
    for entry in std::fs::read_dir(probe).expect("read the probe directory") {
        let path = entry.expect("probe entry").path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("observed."))
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).expect("probe file").lines() {
            highest = highest.max(line.trim().parse::<u32>().expect("a count"));
        }
    }
    highest
}

/// Executed task count per step from a run summary.
pub fn executed(summary: &Value, step: &str) -> u64 {
    summary["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == step))
        .and_then(|s| s["executed"].as_u64())
        .unwrap_or_else(|| panic!("no step {step} in summary {summary}"))
}

pub fn parse_last_json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null)
}

pub fn describe(output: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}
