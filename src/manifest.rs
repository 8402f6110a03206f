//! The TOML manifest: model, parsing, validation and the step version hash.
//!
//! TEMPORARY minimal implementation with the agreed public API; the full module (located errors,
//! suggestions, warnings, graph) replaces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum SandboxMode {
    #[default]
    Strict,
    Off,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Policy {
    pub sandbox: SandboxMode,
    pub network: bool,
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub open_files: Option<u64>,
    pub cpu: Option<Duration>,
    pub max_output: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub script: String,
    pub inputs: Vec<String>,
    pub parallel: Option<usize>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub env: BTreeMap<String, String>,
    pub once: bool,
    pub gather: bool,
    pub shell: Vec<String>,
    pub policy: Policy,
    pub line: usize,
}

impl Step {
    pub fn is_source(&self) -> bool {
        self.inputs.is_empty()
    }
    pub fn matches(&self, resource_name: &str) -> bool {
        self.inputs.iter().any(|p| glob_match(p, resource_name))
    }
    pub fn canonical_definition(&self) -> String {
        let mut inputs = self.inputs.clone();
        inputs.sort();
        serde_json::json!({
            "script": self.script, "inputs": inputs, "shell": self.shell, "env": self.env,
            "once": self.once, "gather": self.gather, "policy": self.policy,
        })
        .to_string()
    }
    pub fn version_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_definition().as_bytes()))
    }
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub text: String,
    pub pipeline_name: Option<String>,
    pub steps: Vec<Step>,
}

impl Manifest {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
    pub fn render_graph(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&format!("{} <- {:?}\n", s.name, s.inputs));
        }
        out
    }
}

pub struct Warning {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub struct Loaded {
    pub manifest: Manifest,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    step: Vec<RawStep>,
}

#[derive(Deserialize)]
struct RawStep {
    name: String,
    script: String,
    #[serde(default)]
    inputs: Vec<String>,
    input: Option<String>,
    parallel: Option<usize>,
    timeout: Option<String>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    once: bool,
    #[serde(default)]
    gather: bool,
    shell: Option<Vec<String>>,
    sandbox: Option<String>,
}

pub fn load(path: &Path) -> Result<Loaded, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ManifestError(format!(
            "{}: error: cannot read manifest: {e}",
            path.display()
        ))
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Loaded, ManifestError> {
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| ManifestError(format!("{}:1:1: error: {e}", path.display())))?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(|e| ManifestError(format!("{}: error: {e}", path.display())))?;
    let steps = raw
        .step
        .into_iter()
        .map(|s| {
            let mut inputs = s.inputs;
            if let Some(i) = s.input.filter(|i| !i.is_empty()) {
                inputs.push(i);
            }
            Step {
                name: s.name,
                script: s.script,
                inputs,
                parallel: s.parallel,
                timeout: s.timeout.and_then(|t| humantime::parse_duration(&t).ok()),
                retries: s.retries,
                env: s.env,
                once: s.once,
                gather: s.gather,
                shell: s.shell.unwrap_or_else(|| vec!["sh".into(), "-ec".into()]),
                policy: Policy {
                    sandbox: if s.sandbox.as_deref() == Some("off") {
                        SandboxMode::Off
                    } else {
                        SandboxMode::Strict
                    },
                    ..Policy::default()
                },
                line: 1,
            }
        })
        .collect();
    Ok(Loaded {
        manifest: Manifest {
            path: path.to_path_buf(),
            dir,
            text: text.to_string(),
            pipeline_name: None,
            steps,
        },
        warnings: Vec::new(),
    })
}

/// SQLite GLOB semantics (subset: `*` and `?`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}
