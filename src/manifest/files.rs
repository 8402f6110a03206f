//! Files of the manifest's directory that a step's script uses (`files = ["tools/x.sh",
//! "data/*.txt"]`): resolving the patterns to files and hashing their content into the step
//! version, and warning about files a script names but the step does not declare (editing such a
//! file would re-run nothing).
//!
//! Patterns are relative to the manifest's directory; each `/`-separated part may use the glob
//! characters of inputs (`*`, `?`, `[a-z]`), which never cross a `/`, and a part `**` stands for
//! any number of directories, none included (`src/**/*.go`). Like a shell, globs skip hidden
//! names unless the part starts with `.`, and `**` does not descend through symbolic links.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

use super::glob_match;
use super::{Manifest, Step};

/// Why a `files` pattern cannot be used.
#[derive(Debug)]
pub enum FilesError {
    /// Absolute, or leaving the manifest's directory with `..`.
    Outside,
    /// Matches no regular file.
    Missing,
    /// A matched file cannot be read.
    Unreadable(String, std::io::Error),
}

/// The files `pattern` names under `dir`, as (path relative to `dir`, SHA-256 of the content).
pub fn resolve(dir: &Path, pattern: &str) -> Result<BTreeMap<String, String>, FilesError> {
    let relative = Path::new(pattern);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(FilesError::Outside);
    }
    let parts: Vec<String> = relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let mut found = BTreeMap::new();
    for file in expand(dir, &parts) {
        let path = dir.join(&file);
        let bytes = std::fs::read(&path).map_err(|e| FilesError::Unreadable(file.clone(), e))?;
        found.insert(file, hex::encode(Sha256::digest(&bytes)));
    }
    if found.is_empty() {
        return Err(FilesError::Missing);
    }
    Ok(found)
}

/// Regular files under `dir` matching `parts` component by component, relative to `dir`.
fn expand(dir: &Path, parts: &[String]) -> Vec<String> {
    let mut prefixes = vec![String::new()];
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut next = Vec::new();
        if part == "**" {
            for prefix in &prefixes {
                if last {
                    // A trailing `**`: every file below.
                    next.extend(descendants(dir, prefix, true));
                } else {
                    next.push(prefix.clone());
                    next.extend(descendants(dir, prefix, false));
                }
            }
            next.sort();
            next.dedup();
            prefixes = next;
            continue;
        }
        for prefix in &prefixes {
            let base = dir.join(prefix);
            let join = |name: &str| {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                }
            };
            let candidates: Vec<String> = if part.contains(['*', '?', '[']) {
                let Ok(entries) = std::fs::read_dir(&base) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // Like a shell, a glob does not match hidden names unless it says so.
                    .filter(|n| {
                        glob_match(part, n) && (part.starts_with('.') || !n.starts_with('.'))
                    })
                    .collect();
                names.sort();
                names
            } else {
                vec![part.clone()]
            };
            for name in candidates {
                let path = base.join(&name);
                let keep = if last { path.is_file() } else { path.is_dir() };
                if keep {
                    next.push(join(&name));
                }
            }
        }
        prefixes = next;
    }
    prefixes
}

/// The directories (or, with `files`, the regular files) at any depth below `prefix` in `dir`,
/// relative to `dir`, skipping hidden names and not following symbolic links.
fn descendants(dir: &Path, prefix: &str, files: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![prefix.to_string()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&current)) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = if current.is_empty() {
                name
            } else {
                format!("{current}/{name}")
            };
            if kind.is_dir() {
                if !files {
                    out.push(path.clone());
                }
                pending.push(path);
            } else if files && kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Characters that end a word of a script, for [`named_files`].
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ';' | '|' | '&' | '<' | '>' | '(' | ')' | '\'' | '"' | '`' | '=' | ','
        )
}

/// Files of `dir` that `step`'s script names (`./norm.sh`, `sh tools/x.sh`, `-f stopwords.txt`)
/// and its `files` do not declare, relative to `dir`, in order of first mention. Words with
/// variables or options, absolute paths and the manifest itself are not considered.
pub fn undeclared(step: &Step, dir: &Path, manifest_path: &Path) -> Vec<String> {
    let manifest = manifest_path.canonicalize().ok();
    let Ok(root) = dir.canonicalize() else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for word in step.script.split(is_separator) {
        let word = word.trim_start_matches("./");
        if word.is_empty() || word.starts_with(['-', '/', '$', '~']) || word.contains('$') {
            continue;
        }
        let path = root.join(word);
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if !real.is_file() || !real.starts_with(&root) || Some(&real) == manifest.as_ref() {
            continue;
        }
        let Ok(relative) = real.strip_prefix(&root) else {
            continue;
        };
        let relative = relative.to_string_lossy().into_owned();
        if !step.file_hashes.contains_key(&relative) && !out.contains(&relative) {
            out.push(relative);
        }
    }
    out
}

/// The "names a file it does not declare" warnings of every step but every-run sources (they
/// run every run, so they always read the current file).
pub fn undeclared_warnings(m: &Manifest) -> Vec<super::Warning> {
    let mut out = Vec::new();
    for step in &m.steps {
        if step.is_source() && !step.once {
            continue;
        }
        let files = undeclared(step, &m.dir, &m.path);
        if files.is_empty() {
            continue;
        }
        let quoted: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
        out.push(super::Warning {
            path: m.path.clone(),
            line: step.line,
            column: 1,
            message: format!(
                "step `{}` uses {}, {} of the manifest's directory that it does not declare: editing {} re-runs nothing\n  help: add files = [{}] to the step, so that {} content is part of the step version",
                step.name,
                files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
                if files.len() == 1 { "a file" } else { "files" },
                if files.len() == 1 { "it" } else { "them" },
                quoted.join(", "),
                if files.len() == 1 { "its" } else { "their" },
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_globs_per_component_and_refuses_outside_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/sub")).unwrap();
        std::fs::write(dir.path().join("data/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("data/b.txt"), "b").unwrap();
        std::fs::write(dir.path().join("data/.hidden.txt"), "h").unwrap();
        std::fs::write(dir.path().join("data/sub/c.txt"), "c").unwrap();
        let found = resolve(dir.path(), "data/*.txt").unwrap();
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["data/a.txt", "data/b.txt"]
        );
        assert_eq!(found["data/a.txt"], hex::encode(Sha256::digest(b"a")));
        assert_eq!(resolve(dir.path(), "./data/sub/c.txt").unwrap().len(), 1);
        assert!(matches!(
            resolve(dir.path(), "data/*.csv"),
            Err(FilesError::Missing)
        ));
        assert!(matches!(
            resolve(dir.path(), "data/sub"),
            Err(FilesError::Missing)
        ));
        let deep = resolve(dir.path(), "data/**/*.txt").unwrap();
        assert_eq!(
            deep.keys().collect::<Vec<_>>(),
            ["data/a.txt", "data/b.txt", "data/sub/c.txt"],
            "`**` is zero or more directories"
        );
        let all = resolve(dir.path(), "**").unwrap();
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["data/a.txt", "data/b.txt", "data/sub/c.txt"]
        );
        assert!(matches!(
            resolve(dir.path(), "../x"),
            Err(FilesError::Outside)
        ));
        assert!(matches!(
            resolve(dir.path(), "/etc/passwd"),
            Err(FilesError::Outside)
        ));
    }

    #[test]
    fn finds_files_the_script_names_but_the_step_does_not_declare() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tools")).unwrap();
        for f in [
            "norm.sh",
            "tools/x.sh",
            "stopwords.txt",
            "declared.txt",
            "pipeline.toml",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let mut step = Step {
            script: "./norm.sh | sh tools/x.sh; grep -v -f stopwords.txt $INPUT_FILE; cat declared.txt pipeline.toml missing.txt --x=norm.sh > \"$OUTPUT_DIR/o\"".into(),
            ..Step::default()
        };
        step.file_hashes
            .insert("declared.txt".into(), String::new());
        let found = undeclared(&step, dir.path(), &dir.path().join("pipeline.toml"));
        assert_eq!(found, ["norm.sh", "tools/x.sh", "stopwords.txt"]);
    }
}
