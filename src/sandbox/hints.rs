//! Hints that name the cause of a failure the sandbox probably caused: a task's log mentions a
//! path that is missing or read-only inside the sandbox but there on the host, a command found
//! on the host's `PATH` but not inside, a network error in a step without `network = true`, or a
//! read-only file in a `read_write` directory (under `--capture dir`, a copy of a read-only object refuses to be overwritten).
//! Each hint names the manifest key that would expose what was missing.
//!
//! The log is read as text, so this is a heuristic: a hint is given only when the host confirms
//! it (the path exists there, the command is on the host's `PATH`) and the sandbox does not
//! show it (the path lies outside everything [`View`] exposes).

use std::path::{Path, PathBuf};

use super::plan::SYSTEM_PATHS;
use crate::manifest::{Policy, SandboxMode};

/// Hints given per task at most; the first ones are the useful ones.
const MAX_HINTS: usize = 3;

/// What a sandboxed task sees of the host, as far as hints need it.
#[derive(Debug, Clone)]
pub struct View {
    /// The scripts' working directory (the manifest's), visible read-only.
    pub cwd: PathBuf,
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    pub network: bool,
}

impl View {
    /// The view of a step's tasks, or `None` when they run without the sandbox (nothing hidden).
    pub fn of(policy: &Policy, cwd: &Path, no_sandbox: bool) -> Option<View> {
        (!no_sandbox && policy.sandbox == SandboxMode::Strict).then(|| View {
            cwd: cwd.to_path_buf(),
            read_only: policy.read_only.clone(),
            read_write: policy.read_write.clone(),
            network: policy.network,
        })
    }

    /// Whether `path` shows inside the sandbox (at its host spelling).
    fn shows(&self, path: &Path) -> bool {
        // Not /tmp: the sandbox's is private, so the host's files there are exactly what it hides.
        let fixed = ["/dev", "/proc"];
        SYSTEM_PATHS
            .iter()
            .chain(fixed.iter())
            .any(|p| path.starts_with(p))
            || path.starts_with(&self.cwd)
            || self.read_only.iter().any(|p| path.starts_with(p))
            || self.writable(path)
    }

    fn writable(&self, path: &Path) -> bool {
        self.read_write.iter().any(|p| path.starts_with(p))
    }
}

/// The hints for a task's `log`, using `host_path` (the host's `$PATH`) to find commands.
pub fn hints(log: &str, view: &View, host_path: Option<&std::ffi::OsStr>) -> Vec<String> {
    let mut hints: Vec<String> = Vec::new();
    let mut add = |hint: String| {
        if !hints.contains(&hint) && hints.len() < MAX_HINTS {
            hints.push(hint);
        }
    };
    // grit's own lines (a sandbox that could not be set up, a refused write) name paths too,
    // but nothing the script could reach by a manifest key.
    let script_lines = log
        .lines()
        .filter(|line| !line.starts_with("grit: ") && !line.starts_with("grit sandbox: "));
    for line in script_lines {
        if line.contains("No such file or directory") {
            for path in absolute_paths(line) {
                if !view.shows(&path) && path.exists() {
                    add(format!(
                        "`{}` exists on the host but not inside the sandbox: add it (or a directory above it) to `read_only`, or to `read_write` if the step writes there",
                        path.display()
                    ));
                }
            }
        }
        if line.contains("Read-only file system") {
            for path in mentioned_paths(line, &view.cwd) {
                let parent_exists = path.parent().is_some_and(Path::exists);
                if view.writable(&path) || !(path.exists() || parent_exists) {
                    continue;
                }
                if crate::capture::fuse::is_served_input(&path) {
                    add(format!(
                        "`{}` is this task's input, which is read-only: write a changed copy into `$OUTPUT_DIR` (or a `read_write` path) instead",
                        path.display()
                    ));
                } else if path.starts_with(&view.cwd) {
                    add(format!(
                        "`{}` is read-only inside the sandbox: write outputs into `$OUTPUT_DIR`, or add its directory to `read_write`",
                        path.display()
                    ));
                } else {
                    add(format!(
                        "`{}` is read-only inside the sandbox: add its directory to `read_write`",
                        path.display()
                    ));
                }
            }
        }
        if line.contains("Permission denied") {
            for path in absolute_paths(line) {
                if view.writable(&path) && read_only_by_mode(&path) {
                    add(format!(
                        "`{}` is a read-only file (a copy of a store file keeps its read-only mode): copy with `cp --no-preserve=mode` or `install -m 644`, or `rm -f` it first",
                        path.display()
                    ));
                }
            }
        }
        if let Some(command) = missing_command(line)
            && let Some(found) = on_path(command, host_path)
            && !view.shows(&found)
        {
            let dir = found.parent().unwrap_or(Path::new("/"));
            add(format!(
                "`{command}` is {} on the host, outside the sandbox: add `{}` to `read_only`",
                found.display(),
                dir.display()
            ));
        }
        if !view.network && is_network_error(line) {
            add(
                "the step has no network (`network = false`, the default): set `network = true` if it needs to connect"
                    .to_string(),
            );
        }
    }
    hints
}

/// Absolute paths in a line: words starting with `/`, without the quotes, colons and brackets
/// that tools put around them (`cat: /x/y: No such…`, `[Errno 2] … '/x/y'`).
fn absolute_paths(line: &str) -> Vec<PathBuf> {
    words(line)
        .filter(|w| w.starts_with('/') && w.len() > 1)
        .map(PathBuf::from)
        .collect()
}

/// Paths in a line, relative ones taken from `cwd` (`bash: line 1: out.csv: Read-only…`).
fn mentioned_paths(line: &str, cwd: &Path) -> Vec<PathBuf> {
    let absolute = absolute_paths(line);
    if !absolute.is_empty() {
        return absolute;
    }
    // The word before the message is the file: `…: out.csv: Read-only file system`.
    let Some((before, _)) = line.split_once(": Read-only file system") else {
        return Vec::new();
    };
    let word = before.rsplit(": ").next().unwrap_or(before).trim();
    let word = word.trim_matches(|c| matches!(c, '\'' | '"' | '`' | '‘' | '’'));
    if word.is_empty() || word.contains(' ') {
        return Vec::new();
    }
    vec![cwd.join(word)]
}

fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| {
            w.trim_matches(|c| {
                matches!(
                    c,
                    '\'' | '"' | '`' | '‘' | '’' | '(' | ')' | '[' | ']' | ':' | ';'
                )
            })
        })
        .filter(|w| !w.is_empty())
}

/// A regular file whose owner may not write it (what `cp` of a read-only store object leaves behind).
fn read_only_by_mode(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o200 == 0)
}

/// The command of `sh: 1: mytool: not found` or `bash: line 1: mytool: command not found`.
fn missing_command(line: &str) -> Option<&str> {
    let before = line
        .strip_suffix(": command not found")
        .or_else(|| line.strip_suffix(": not found"))?;
    let command = before.rsplit(": ").next()?.trim();
    (!command.is_empty() && !command.contains('/') && !command.contains(' ')).then_some(command)
}

/// The first executable `command` in the directories of `path`.
fn on_path(command: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|dir| dir.join(command))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn is_network_error(line: &str) -> bool {
    const SIGNS: &[&str] = &[
        "Connection refused",
        "Network is unreachable",
        "Could not resolve host",
        "Name or service not known",
        "Temporary failure in name resolution",
        "No address associated with hostname",
        "nodename nor servname",
        "getaddrinfo",
    ];
    SIGNS.iter().any(|s| line.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(cwd: &Path) -> View {
        View {
            cwd: cwd.to_path_buf(),
            read_only: Vec::new(),
            read_write: Vec::new(),
            network: false,
        }
    }

    #[test]
    fn grits_own_lines_give_no_hint() {
        // A sandbox that could not be set up names a host path that is read-only in it; the
        // script never ran, and `read_write` would not help.
        let host = tempfile::tempdir_in("/var/tmp").unwrap();
        let file = host.path().join("gshadow+");
        std::fs::write(&file, "x").unwrap();
        let cwd = tempfile::tempdir_in("/var/tmp").unwrap();
        let own = format!(
            "grit: task failed: could not start: (build the sandbox template: cannot create \
             mountpoint {0}: Read-only file system (os error 30))\n\
             grit sandbox: cannot bind {0}: No such file or directory 2\n",
            file.display()
        );
        assert!(hints(&own, &view(cwd.path()), None).is_empty());
        // The same words from the script do give one.
        let script = format!(
            "touch: cannot touch '{}': Read-only file system\n",
            file.display()
        );
        assert_eq!(hints(&script, &view(cwd.path()), None).len(), 1);
    }

    #[test]
    fn a_host_file_outside_the_sandbox_names_read_only() {
        let host = tempfile::tempdir_in("/var/tmp").unwrap();
        let file = host.path().join("ref.txt");
        std::fs::write(&file, "x").unwrap();
        let cwd = tempfile::tempdir_in("/var/tmp").unwrap();
        let log = format!("cat: {}: No such file or directory\n", file.display());
        let hints = hints(&log, &view(cwd.path()), None);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(
            hints[0].contains(&format!("`{}`", file.display())) && hints[0].contains("`read_only`")
        );
        // Exposed, or missing on the host too: no hint.
        let mut exposed = view(cwd.path());
        exposed.read_only.push(host.path().to_path_buf());
        assert!(super::hints(&log, &exposed, None).is_empty());
        let gone = "cat: /nonexistent/ref.txt: No such file or directory";
        assert!(super::hints(gone, &view(cwd.path()), None).is_empty());
    }

    #[test]
    fn parses_the_shapes_tools_print() {
        assert_eq!(missing_command("sh: 1: mytool: not found"), Some("mytool"));
        assert_eq!(
            missing_command("bash: line 3: mytool: command not found"),
            Some("mytool")
        );
        assert_eq!(missing_command("everything is fine"), None);
        assert_eq!(
            absolute_paths("FileNotFoundError: [Errno 2] No such file or directory: '/a/b.txt'"),
            [PathBuf::from("/a/b.txt")]
        );
        assert_eq!(
            mentioned_paths(
                "bash: line 1: out.csv: Read-only file system",
                Path::new("/w")
            ),
            [PathBuf::from("/w/out.csv")]
        );
        assert!(is_network_error("bash: connect: Connection refused"));
        assert!(is_network_error(
            "curl: (6) Could not resolve host: example.com"
        ));
    }
}
