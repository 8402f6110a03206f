//! Helpers for the sandbox integration tests: a temporary project run by the real `grit`
//! binary WITH the sandbox, observation files read back through `grit cat`, and a scan of the
//! host's processes for survivors.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

/// A manifest directory (`pipeline.toml`) with its store at `./db`, as users lay it out.
pub struct Sandboxed {
    pub dir: tempfile::TempDir,
}

impl Sandboxed {
    pub fn new(manifest: &str) -> Sandboxed {
        let dir = tempfile::tempdir().expect("tempdir");
        // An unprivileged rerun of this suite uses fixtures a root run never sees; still, keep
        // the project usable by whoever runs grit.
        open_up(dir.path());
        std::fs::write(dir.path().join("pipeline.toml"), manifest).expect("write manifest");
        Sandboxed { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("grit").expect("grit binary");
        cmd.arg("run")
            .arg("-m")
            .arg(self.path().join("pipeline.toml"))
            .arg("--db")
            .arg(self.db())
            .arg("--json")
            .args(extra)
            .env_remove("GRIT_DB")
            .env("NO_COLOR", "1");
        cmd
    }

    /// `grit run --json` with the sandbox on; returns the output and the summary.
    pub fn run(&self, extra: &[&str]) -> (Output, Value) {
        let output = self.command(extra).output().expect("run grit");
        let json = String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        (output, json)
    }

    pub fn grit(&self, args: &[&str]) -> Output {
        let mut cmd = Command::cargo_bin("grit").expect("grit binary");
        cmd.args(args)
            .arg("--db")
            .arg(self.db())
            .env_remove("GRIT_DB")
            .env("NO_COLOR", "1");
        cmd.output().expect("run grit")
    }

    /// The live resources: name → hash.
    pub fn resources(&self) -> Vec<(String, String)> {
        let out = self.grit(&["resources", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["name"].as_str().unwrap_or("").to_string(),
                            r["hash"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The content of the live resource `name`, through `grit cat`.
    pub fn cat(&self, name: &str) -> Option<String> {
        let hash = self
            .resources()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h)?;
        let out = self.grit(&["cat", &hash]);
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `grit log TASK` text of the first task of `step`.
    pub fn log_of_step(&self, step: &str) -> String {
        let out = self.grit(&["log", "--step", step]);
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let task = listing
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .unwrap_or("1")
            .to_string();
        let out = self.grit(&["log", &task]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Gives everyone access to a test directory, for the unprivileged rerun.
pub fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777));
}

/// Host pids whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut cmdline = Vec::new();
        if let Ok(mut f) = std::fs::File::open(entry.path().join("cmdline")) {
            let _ = f.read_to_end(&mut cmdline);
        }
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no host process carries `marker`; returns the survivors.
pub fn survivors(marker: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits (bounded) until some host process carries `marker`.
pub fn wait_for_process(marker: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !processes_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A marker unique to this test process and call site, used as a `sleep` argument.
pub fn marker(n: u32) -> String {
    format!("{}{:03}", 7_000_000 + std::process::id() % 1_000_000, n)
}
