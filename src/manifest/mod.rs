//! The grit manifest: a TOML file of `[[step]]` tables with optional `[pipeline]` defaults.
//!
//! This module owns everything between the user's file and the engine: parsing with exact
//! `FILE:LINE:COL` diagnostics ([`parse`], [`load`]), validation, defaults, the step version
//! hash ([`Step::version_hash`]), resource-name globs with SQLite semantics ([`glob_match`]),
//! and the static step graph read from scripts ([`Manifest::edges`], [`Manifest::render_graph`]).
//!
//! Layout: `parse` walks the TOML tree and validates; `error` renders diagnostics; `units`
//! reads durations and sizes; `glob` matches and compares name patterns; `writes` reads what a
//! script writes; `graph` builds edges, cycles and warnings; `version` hashes a step.

pub mod cluster;
mod dialect;
mod error;
mod files;
mod glob;
mod graph;
mod image;
pub mod params;
mod parse;
#[cfg(test)]
mod prop_tests;
mod units;
mod version;
mod writes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

// Re-exported as the module's public API; the engine and CLI use them once wired.
#[allow(unused_imports)]
pub use dialect::{Dialect, TableLayout, routes_to};
pub use error::{ManifestError, Position, Warning};
#[allow(unused_imports)]
pub use glob::{WritePart, exclusion, glob_match, inputs_match, inputs_sql};
#[allow(unused_imports)]
pub use graph::Edge;
pub use params::{Param, ParamError};
#[allow(unused_imports)]
pub use units::{parse_duration, parse_size};
#[allow(unused_imports)]
pub use writes::{Writes, display_pattern};

/// A parsed, validated manifest with pipeline defaults applied to every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The path as the user gave it (used in diagnostics).
    pub path: PathBuf,
    /// Absolute directory containing the manifest: the scripts' working directory.
    pub dir: PathBuf,
    /// The raw TOML text (stored in the database with each run).
    pub text: String,
    /// `[pipeline] name`, if given.
    pub pipeline_name: Option<String>,
    /// Steps in file order.
    pub steps: Vec<Step>,
    /// The form it was written in (grit's, or one of task-pipeline's).
    pub dialect: Dialect,
    /// Where each step's table is written, in file order (for `grit migrate-manifest`).
    pub layout: Vec<TableLayout>,
    /// `[pipeline.params]`, in file order.
    pub params: Vec<Param>,
    /// The values of this run's parameters (every declared one), once bound with
    /// [`Manifest::bind_params`]; empty before.
    pub param_values: BTreeMap<String, String>,
    /// `[executor]`: where the tasks run (this machine, or a Slurm cluster) and how.
    pub executor: cluster::ExecutorConfig,
}

/// One `[[step]]`, with `[pipeline]` defaults already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub script: String,
    /// Names or globs as written; GRIT's `input = "x"` becomes `["x"]`, `input = ""` none.
    pub inputs: Vec<String>,
    /// Where each of `inputs` is written in the manifest (same order; for warnings).
    pub input_positions: Vec<Position>,
    /// Step value, else pipeline default, else `None` (only the global `-j` applies).
    pub parallel: Option<usize>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    /// Pipeline `env` overlaid by the step's `env`.
    pub env: BTreeMap<String, String>,
    pub once: bool,
    /// A source that runs every run may not run again until this long after its current
    /// version last succeeded (task-sync's time gate). Not part of the version.
    pub min_interval: Option<std::time::Duration>,
    pub gather: bool,
    /// A gather step runs even when a task upstream of it failed in the run, on the partial set.
    pub gather_partial: bool,
    /// `files` patterns as written: files of the manifest's directory the script uses.
    pub files: Vec<String>,
    /// What `files` matched when the manifest was loaded: path relative to the manifest's
    /// directory → SHA-256 of its content. Part of the step version.
    pub file_hashes: BTreeMap<String, String>,
    /// Which of a source's outputs stay live (DESIGN §2.3); only meaningful for sources.
    pub keep: Keep,
    /// `params`: the run parameters the script reads, as listed.
    pub params: Vec<String>,
    /// The bound values of `params` ([`Manifest::bind_params`]): part of the step version, and
    /// the script's `GRIT_PARAM_<NAME>` variables.
    pub param_values: BTreeMap<String, String>,
    /// Step value, else pipeline value, else [`default_shell`]. The script is appended as the
    /// last argument.
    pub shell: Vec<String>,
    pub policy: Policy,
    /// `image = "…"`: the root filesystem the script runs in, identified at load time.
    pub image: Option<crate::image::Image>,
    /// `slurm = { … }`: the resources of its Slurm jobs (not part of the version).
    pub slurm: cluster::SlurmResources,
    /// 1-based line of this step's `[[step]]` header.
    pub line: usize,
}

impl Default for Step {
    fn default() -> Self {
        Step {
            name: String::new(),
            script: String::new(),
            inputs: Vec::new(),
            input_positions: Vec::new(),
            parallel: None,
            timeout: None,
            retries: 0,
            env: BTreeMap::new(),
            once: false,
            min_interval: None,
            gather: false,
            gather_partial: false,
            files: Vec::new(),
            file_hashes: BTreeMap::new(),
            keep: Keep::default(),
            params: Vec::new(),
            param_values: BTreeMap::new(),
            shell: default_shell(),
            policy: Policy::default(),
            image: None,
            slurm: cluster::SlurmResources::default(),
            line: 0,
        }
    }
}

/// The default shell where bash exists: Snakemake's strict mode, so a failing command inside a
/// pipeline (`grep -f missing | sort > out`) or an unset variable fails the step.
pub const STRICT_SHELL: [&str; 4] = ["bash", "-euo", "pipefail", "-c"];
/// The default shell without bash: POSIX `sh` stops at a failing command, but a pipeline's
/// status is its last command's.
pub const POSIX_SHELL: [&str; 2] = ["sh", "-ec"];

/// The shell a script runs under when neither the step nor the pipeline names one:
/// [`STRICT_SHELL`] when bash is on `PATH` at run time, else [`POSIX_SHELL`]. It is part of the
/// step version, so results computed under another shell are not reused silently.
pub fn default_shell() -> Vec<String> {
    let shell: &[&str] = if bash_on_path() {
        &STRICT_SHELL
    } else {
        &POSIX_SHELL
    };
    shell.iter().map(|s| s.to_string()).collect()
}

/// Whether an executable `bash` is in one of `$PATH`'s directories (looked up once).
pub fn bash_on_path() -> bool {
    use std::os::unix::fs::PermissionsExt;
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let Some(path) = std::env::var_os("PATH") else {
            return false;
        };
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("bash"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `keep = "latest" | "run" | "all"`: which outputs of a source stay live (DESIGN §2.3).
///
/// Not part of the step version: it decides which of the source's results are live, not what
/// its script computes, so changing it re-runs nothing; the next `grit run` applies the new rule
/// to the outputs already stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Per name, the output the source published last (a changed file replaces the old one).
    #[default]
    Latest,
    /// Exactly what the last successful run of the source wrote.
    Run,
    /// Every output ever published, until deleted or pruned (a feed whose every item is a fact).
    All,
}

impl Keep {
    /// The spelling in the manifest and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::Latest => "latest",
            Keep::Run => "run",
            Keep::All => "all",
        }
    }

    /// The inverse of [`Keep::as_str`].
    pub fn parse(s: &str) -> Option<Keep> {
        match s {
            "latest" => Some(Keep::Latest),
            "run" => Some(Keep::Run),
            "all" => Some(Keep::All),
            _ => None,
        }
    }
}

/// Sandbox and resource limits for a step's tasks (DESIGN §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub sandbox: SandboxMode,
    /// Network access; off by default (a private network namespace).
    pub network: bool,
    /// Extra absolute paths visible read-only.
    pub read_only: Vec<PathBuf>,
    /// Extra absolute paths visible read-write.
    pub read_write: Vec<PathBuf>,
    /// Address-space limit in bytes.
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub open_files: Option<u64>,
    /// CPU time limit.
    pub cpu: Option<Duration>,
    /// Output quota per task, in bytes.
    pub max_output: Option<u64>,
}

/// `sandbox = "strict"` (default) or `"off"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SandboxMode {
    #[default]
    Strict,
    Off,
}

/// A manifest together with the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    pub warnings: Vec<Warning>,
}

impl Step {
    /// A step with no inputs is a source: it runs every run (or once per version with `once`).
    pub fn is_source(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Do the input patterns select `resource_name` (SQLite GLOB semantics, `!` excludes)?
    // The engine matches in SQL (`GLOB`) and in `store::schedule`; this is for tests.
    #[cfg(test)]
    pub fn matches(&self, resource_name: &str) -> bool {
        inputs_match(&self.inputs, resource_name)
    }

    /// Lowercase hex SHA-256 of [`Step::canonical_definition`]: the step version.
    pub fn version_hash(&self) -> String {
        version::version_hash(self)
    }

    /// Canonical JSON (sorted keys) of script, sorted inputs, shell, env, once, gather, the
    /// bound parameter values and the whole policy. Name, parallel, timeout and retries are not
    /// part of it.
    pub fn canonical_definition(&self) -> String {
        version::canonical_definition(self)
    }

    /// The names this step's script writes, as far as its text shows.
    pub fn writes(&self) -> Writes {
        writes::analyze(&self.script, &self.shell)
    }
}

impl Manifest {
    /// The manifest's text in grit's form (`grit migrate-manifest`); `None` when it already is.
    pub fn in_grit_form(&self) -> Option<Result<String, String>> {
        (self.dialect != Dialect::Grit)
            .then(|| dialect::rewrite(&self.text, &self.steps, &self.layout))
    }

    /// Of `names` (resources a run wrote), those no step reads: under task-pipeline's routing,
    /// its final outputs (`done`, ...), which are kept but start nothing.
    pub fn unrouted<'n>(&self, names: &'n [String]) -> Vec<&'n str> {
        names
            .iter()
            .filter(|n| !self.steps.iter().any(|s| inputs_match(&s.inputs, n)))
            .map(String::as_str)
            .collect()
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Producer → consumer edges read from the scripts (see [`Step::writes`]).
    pub fn edges(&self) -> Vec<Edge> {
        graph::edges(self)
    }

    /// Groups of step indices that feed each other (each sorted, in file order).
    #[cfg(test)]
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        graph::cycles(self.steps.len(), &self.edges())
    }

    /// The text `grit validate` prints for a valid manifest: one line per step with its kind,
    /// inputs, written names and downstream steps, then any cycles.
    pub fn render_graph(&self) -> String {
        graph::render(self)
    }

    /// Warnings for inputs that no step writes and that `known_names` does not know.
    ///
    /// `known_names` receives each input pattern as written (a name or a glob) and answers
    /// whether some stored resource matches it, e.g. `SELECT 1 FROM resources WHERE name GLOB ?`.
    /// No warnings at all when some step may write names its script does not show.
    pub fn unwritten_inputs(&self, known_names: &dyn Fn(&str) -> bool) -> Vec<Warning> {
        if matches!(self.dialect, Dialect::TaskPipeline { .. }) {
            // Routed inputs are every name a file could be routed by, not names the user wrote.
            return Vec::new();
        }
        graph::unwritten_inputs(self, known_names)
    }

    /// Warnings for cycles in the step graph (allowed, but worth knowing about).
    pub fn cycle_warnings(&self) -> Vec<Warning> {
        graph::cycle_warnings(self)
    }

    /// For each step, whether it may feed step `index` (transitively), as far as the scripts
    /// show; a script whose written names cannot be read counts as feeding every step.
    pub fn upstream_of(&self, index: usize) -> Vec<bool> {
        graph::upstream(self, index)
    }
}

/// Read and parse the manifest at `path`.
pub fn load(path: &Path) -> Result<Loaded, ManifestError> {
    load_starting_at(path, None)
}

/// [`load`], with task-pipeline's `-start NAME` choosing the start step of a manifest in its
/// form (see [`Dialect`]).
pub fn load_starting_at(path: &Path, start: Option<&str>) -> Result<Loaded, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_starting_at(&text, path, start)
}

/// Parse manifest `text`; `path` is used for messages and to find the scripts' directory
/// (it need not exist). Warnings cover cycles and inputs that no script writes.
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ManifestError> {
    parse_starting_at(text, path, None)
}

fn parse_starting_at(
    text: &str,
    path: &Path,
    start: Option<&str>,
) -> Result<Loaded, ManifestError> {
    let manifest = parse::parse_manifest(text, path, manifest_dir(path), start)?;
    let mut warnings = graph::cycle_warnings(&manifest);
    warnings.extend(manifest.unwritten_inputs(&|_| false));
    warnings.extend(files::undeclared_warnings(&manifest));
    warnings.extend(params::warnings(&manifest));
    warnings.sort_by_key(|w| (w.line, w.column));
    Ok(Loaded { manifest, warnings })
}

/// The absolute directory containing `path`, canonical when it exists.
fn manifest_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent
        .canonicalize()
        .or_else(|_| std::path::absolute(parent))
        .unwrap_or_else(|_| parent.to_path_buf())
}
