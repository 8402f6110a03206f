//! The sandbox policy of one step: plain data, resolved from the manifest (step keys over
//! `[pipeline]` defaults) and handed to the sandbox for each of the step's tasks.

use std::path::PathBuf;
use std::time::Duration;

/// Whether a step's tasks run inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Namespaces, private mount tree, landlock, no capabilities, rlimits (DESIGN §4).
    #[default]
    Strict,
    /// Plain fork/exec: the user opted out with `sandbox = "off"` or `grit run --no-sandbox`.
    Off,
}

/// What a step's tasks may do. Field names match the manifest keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub sandbox: SandboxMode,
    /// `true` shares the host's network; `false` (default) gives the task a private network
    /// namespace with only a loopback interface.
    pub network: bool,
    /// Absolute host paths made visible read-only at the same path.
    pub read_only: Vec<PathBuf>,
    /// Absolute host paths made visible read-write at the same path.
    pub read_write: Vec<PathBuf>,
    /// Address-space limit per process, in bytes (`RLIMIT_AS`).
    pub memory: Option<u64>,
    /// Maximum number of processes (and threads) the task may have at once (`RLIMIT_NPROC`).
    pub processes: Option<u64>,
    /// Maximum number of open files per process (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// CPU time per process (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL one second later.
    pub cpu: Option<Duration>,
    /// Output quota enforced by the capture filesystem, not by the sandbox.
    pub max_output: Option<u64>,
}
