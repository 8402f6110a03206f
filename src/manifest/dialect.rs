//! The manifest forms of grit's ancestor task-pipeline, read into grit's model, and the rewrite
//! that `grit migrate-manifest` prints.
//!
//! - **`[[step]]` + `start = true`** (task-pipeline): no step names its inputs. The start step runs
//!   once (a `once` source), and each file a step writes is routed by its name: drop the text
//!   after the last `.`, keep the text before the first `_`, and the file goes to the step of that
//!   name (`process_3.txt` → `process`). Here each routed step gets the inputs
//!   `["S", "S_*", "S.*", "!S.*.*"]` ([`routed_inputs`]), which select exactly the files the rule
//!   routes to it (names with `.` or `_` included).
//! - **`[[task]]` tables** (its first form): each task reads what the task before it writes, and the
//!   first one is the source. The names a task writes are read from its script
//!   ([`super::writes`]); a script whose written names cannot be read is a located error.
//!
//! Files that route to no step (`done`, `next`, ...) are kept as resources, as they were; `grit
//! run` lists them once per run as unrouted (see [`Manifest::unrouted`](super::Manifest)).

use super::error::ManifestError;
use super::parse::{Ctx, RawStep, closest};
use super::writes;

/// Which form the manifest was written in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Dialect {
    /// grit's own: steps name their `inputs`.
    #[default]
    Grit,
    /// task-pipeline's `[[step]]` tables routed by file name from the step `start`.
    TaskPipeline { start: String },
    /// task-pipeline's first form: `[[task]]` tables, each feeding the next.
    TaskList,
}

impl Dialect {
    /// A short name for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Dialect::Grit => "grit",
            Dialect::TaskPipeline { .. } => "task-pipeline ([[step]] tables routed by file name)",
            Dialect::TaskList => "task-pipeline's first form ([[task]] tables)",
        }
    }
}

/// Where the top-level tables were found, for the "mixed forms" error.
pub(super) struct Tables {
    /// Offset of the first `step` key (a `[[step]]` header), if any.
    pub step_at: Option<usize>,
    /// Offset of the first `task` key (a `[[task]]` header), if any.
    pub task_at: Option<usize>,
}

/// The inputs task-pipeline's routing gives step `name`: exactly the names whose text before the
/// first `_`, after dropping the text after the last `.`, is `name` (see [`routes_to`]).
///
/// For a plain name `S` that is `["S", "S_*", "S.*", "!S.*.*"]`: `S.a.b` drops only `.b` and so
/// belongs to no step. A name with `.` is not matched by itself (`a.b` drops `.b`), and `a.b_c`
/// only with a later dot. A name with `_` can never come out of the rule: such a step gets
/// inputs that select nothing, so that it never runs, as under task-pipeline.
pub fn routed_inputs(name: &str) -> Vec<String> {
    let n = escape_glob(name);
    if name.contains('_') {
        return vec![n.clone(), format!("!{n}")];
    }
    let one_extension = [format!("{n}.*"), format!("!{n}.*.*")];
    if name.contains('.') {
        [format!("{n}_*.*")]
            .into_iter()
            .chain(one_extension)
            .collect()
    } else {
        [n.clone(), format!("{n}_*")]
            .into_iter()
            .chain(one_extension)
            .collect()
    }
}

/// Does task-pipeline route a file called `file` to step `step`? (The exact rule, for reports.)
pub fn routes_to(file: &str, step: &str) -> bool {
    let base = file.rsplit_once('.').map_or(file, |(b, _)| b);
    base.split('_').next() == Some(step)
}

/// A glob matching exactly `text`.
fn escape_glob(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Decide the manifest's form and, for the ancestors' forms, fill in what grit needs: `once` on
/// the start step and the routed `inputs` of the others. `start_override` is `-start NAME`.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    tables: &Tables,
    steps: &mut [RawStep],
    start_override: Option<&str>,
) -> Result<Dialect, ManifestError> {
    const MIGRATE: &str = "`grit migrate-manifest FILE` prints this manifest in grit's form";
    if let (Some(step_at), Some(task_at)) = (tables.step_at, tables.task_at) {
        let (later, kind) = if task_at > step_at {
            (task_at, "[[task]]")
        } else {
            (step_at, "[[step]]")
        };
        return Err(ctx.err(
            later,
            format!(
                "this {kind} table mixes task-pipeline's first form ([[task]] tables) with [[step]] tables"
            ),
            Some("write every step in one form: [[step]] tables with `inputs` (grit), or [[task]] tables".into()),
        ));
    }
    if tables.task_at.is_some() {
        return task_list(ctx, steps, start_override, MIGRATE);
    }
    let starts: Vec<&RawStep> = steps.iter().filter(|s| s.start.is_some()).collect();
    let with_inputs = steps.iter().find(|s| !s.inputs.is_empty());
    if starts.is_empty() && start_override.is_none() {
        return Ok(Dialect::Grit);
    }
    if let Some(step) = with_inputs {
        let at = step.inputs.first().map_or(step.header, |(_, at)| *at);
        return Err(match starts.first() {
            Some(first) => ctx.err(
                at,
                format!(
                    "step `{}` has `inputs`, but step `{}` has task-pipeline's `start`: a manifest is in one form",
                    step.name, first.name
                ),
                Some("in grit's form a step without `inputs` is a source: remove `start`; in task-pipeline's form files are routed by name: remove `inputs`".into()),
            ),
            None => ctx.err(
                at,
                "-start chooses the start step of a task-pipeline manifest, but this one names its steps' `inputs`",
                Some("leave out -start: in grit's form every step without `inputs` is a source".into()),
            ),
        });
    }
    let start = match start_override {
        Some(name) => {
            if !steps.iter().any(|s| s.name == name) {
                let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                return Err(ctx.err(
                    0,
                    format!("-start names step `{name}`, which the manifest does not have"),
                    Some(match closest(name, &names) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("the steps are: {}", names.join(", ")),
                    }),
                ));
            }
            name.to_string()
        }
        None => {
            let chosen: Vec<&RawStep> = starts
                .iter()
                .copied()
                .filter(|s| s.start.is_some_and(|(on, _)| on))
                .collect();
            match chosen.as_slice() {
                [one] => one.name.clone(),
                [] => {
                    let at = starts.first().and_then(|s| s.start).map_or(0, |(_, at)| at);
                    return Err(ctx.err(
                        at,
                        "no step has `start = true`",
                        Some("mark the step that starts the pipeline with start = true (or pass -start NAME)".into()),
                    ));
                }
                [first, second, ..] => {
                    let at = second.start.map_or(second.header, |(_, at)| at);
                    return Err(ctx.err(
                        at,
                        format!(
                            "steps `{}` and `{}` both have `start = true`",
                            first.name, second.name
                        ),
                        Some("task-pipeline starts from one step: keep `start = true` on one (or pass -start NAME)".into()),
                    ));
                }
            }
        }
    };
    for step in steps.iter_mut() {
        if step.name == start {
            step.once = true;
        } else {
            step.inputs = routed_inputs(&step.name)
                .into_iter()
                .map(|p| (p, step.header))
                .collect();
        }
    }
    Ok(Dialect::TaskPipeline { start })
}

/// `[[task]]` tables: the first is a `once` source, each later one reads what the one before it
/// writes.
fn task_list(
    ctx: &Ctx<'_>,
    steps: &mut [RawStep],
    start_override: Option<&str>,
    migrate: &str,
) -> Result<Dialect, ManifestError> {
    if start_override.is_some() {
        return Err(ctx.err(
            0,
            "-start chooses the start step of a [[step]] + `start` manifest; in [[task]] tables the first task starts",
            Some("leave out -start, or move the task to start from to the top".into()),
        ));
    }
    for step in steps.iter() {
        let extra = step
            .inputs
            .first()
            .map(|(_, at)| ("inputs", *at))
            .or(step.start.map(|(_, at)| ("start", at)));
        if let Some((key, at)) = extra {
            return Err(ctx.err(
                at,
                format!(
                    "`{key}` is not part of [[task]] tables: each task reads what the task before it writes"
                ),
                Some(format!("use [[step]] tables with `inputs` for another shape; {migrate}")),
            ));
        }
    }
    let written: Vec<Result<Vec<String>, usize>> = steps
        .iter()
        .map(|step| {
            let writes = writes::analyze(&step.script, &super::default_shell());
            if writes.unknown || writes.patterns.is_empty() {
                Err(step.header)
            } else {
                Ok(writes
                    .patterns
                    .iter()
                    .map(|parts| {
                        parts
                            .iter()
                            .map(|p| match p {
                                super::WritePart::Text(t) => escape_glob(t),
                                super::WritePart::Any => "*".into(),
                            })
                            .collect()
                    })
                    .collect())
            }
        })
        .collect();
    for i in 0..steps.len() {
        if i == 0 {
            steps[0].once = true;
            continue;
        }
        match &written[i - 1] {
            Ok(names) => {
                let header = steps[i].header;
                steps[i].inputs = names.iter().map(|n| (n.clone(), header)).collect();
            }
            Err(at) => {
                return Err(ctx.err(
                    *at,
                    format!(
                        "task `{}` feeds task `{}`, but grit cannot tell from its script which files it writes",
                        steps[i - 1].name,
                        steps[i].name
                    ),
                    Some(format!(
                        "write each output as $OUTPUT_DIR/NAME in the script, or convert to [[step]] tables with `inputs`; {migrate}"
                    )),
                ));
            }
        }
    }
    Ok(Dialect::TaskList)
}

/// Where a step's table is written, for [`rewrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLayout {
    /// Offset of the table's `[[step]]`/`[[task]]` header.
    pub header: usize,
    /// Offset of its `name` value (the new keys go on the line after it).
    pub name_at: usize,
    /// Offset of its `start` key, if any.
    pub start_key: Option<usize>,
}

/// The manifest `text` rewritten in grit's form: `[[task]]` headers become `[[step]]`, `start`
/// lines go, and each step gets the `once = true` or `inputs = [...]` it was read with, on the
/// line after its header. Comments and every other key stay as written.
pub fn rewrite(
    text: &str,
    steps: &[super::Step],
    layout: &[TableLayout],
) -> Result<String, String> {
    let line_around = |at: usize| {
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
        (start, end)
    };
    // (where, how many bytes to drop, what to insert), applied from the end.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (step, table) in steps.iter().zip(layout) {
        let (start, end) = line_around(table.header);
        let header_line = &text[start..end];
        let trimmed = header_line.trim_start();
        if !(trimmed.starts_with("[[task]]") || trimmed.starts_with("[[step]]")) {
            return Err(format!(
                "step `{}` is not written under a [[step]] or [[task]] header; only those can be rewritten",
                step.name
            ));
        }
        edits.push((
            start,
            end - start,
            header_line.replacen("[[task]]", "[[step]]", 1),
        ));
        let added = if step.once {
            "once = true\n".to_string()
        } else if !step.inputs.is_empty() {
            let inputs: Vec<String> = step
                .inputs
                .iter()
                .map(|i| toml::Value::String(i.clone()).to_string())
                .collect();
            format!("inputs = [{}]\n", inputs.join(", "))
        } else {
            String::new()
        };
        let (_, after_name) = line_around(table.name_at);
        let newline = if text[..after_name].ends_with('\n') {
            ""
        } else {
            "\n"
        };
        edits.push((after_name, 0, format!("{newline}{added}")));
        if let Some(at) = table.start_key {
            let (start, end) = line_around(at);
            edits.push((start, end - start, String::new()));
        }
    }
    // From the end, so earlier offsets stay valid. At one offset (a `start` line right after
    // the `name` line) the line is removed first and the new keys inserted in its place.
    edits.sort_by_key(|(at, len, _)| std::cmp::Reverse((*at, *len)));
    let mut out = text.to_string();
    for (at, len, insert) in edits {
        out.replace_range(at..at + len, &insert);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_matches_the_globs_for_every_step_name() {
        use crate::manifest::inputs_match;
        let names = [
            "process",
            "process_3.txt",
            "process.txt",
            "process_a_b",
            "processed",
            "next",
            "done",
            "pro",
            "process.x_y",
            "process.tar.gz",
            "process_1.tar.gz",
            "process.a_b.c",
            "transform_1",
            "a.b",
            "a.b.txt",
            "a.b_1",
            "a.b_1.txt",
            "a.b.c.d",
            "a_b",
            "a_b.txt",
            "!x",
            "x*.txt",
        ];
        for step in ["process", "next", "transform", "a.b", "a_b", "x*", "a"] {
            let globs = routed_inputs(step);
            for name in names {
                assert_eq!(
                    inputs_match(&globs, name),
                    routes_to(name, step),
                    "{name} → {step} by {globs:?}"
                );
            }
        }
        // The case that once differed: two dots after the step name route nowhere.
        assert!(!routes_to("process.tar.gz", "process"));
    }

    #[test]
    fn globs_escape_special_characters() {
        assert_eq!(escape_glob("a*b?[c"), "a[*]b[?][[]c");
    }
}
