//! The static step graph: which step feeds which (from [`super::Step::writes`] and the input
//! globs), cycles, "nothing writes this input" warnings, and the text `grit validate` prints.

use std::collections::BTreeSet;

use super::Manifest;
use super::error::{Position, Warning};
use super::glob::{self, WritePart};
use super::writes::{Writes, display_pattern};

/// `from` may produce a resource that `to` consumes; `via` is the name or pattern flowing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub via: String,
}

fn all_writes(m: &Manifest) -> Vec<Writes> {
    m.steps.iter().map(|s| s.writes()).collect()
}

fn edges_from(m: &Manifest, writes: &[Writes]) -> Vec<Edge> {
    let mut out = BTreeSet::new();
    for (to, step) in m.steps.iter().enumerate() {
        // An exclusion (`!tmp_*`) only narrows a selection; edges come from what selects, which
        // errs towards "may feed", as every edge here does.
        for input in step.inputs.iter().filter(|p| glob::exclusion(p).is_none()) {
            // Invalid globs are rejected by validation; a hand-built one simply matches nothing.
            let Ok(tokens) = glob::tokenize(input) else {
                continue;
            };
            for (from, w) in writes.iter().enumerate() {
                for pattern in &w.patterns {
                    if glob::may_overlap(&tokens, pattern) {
                        let literal = pattern.iter().all(|p| matches!(p, WritePart::Text(_)));
                        let via = if literal {
                            display_pattern(pattern)
                        } else {
                            input.clone()
                        };
                        out.insert(Edge { from, to, via });
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

pub(crate) fn edges(m: &Manifest) -> Vec<Edge> {
    edges_from(m, &all_writes(m))
}

/// For each step, whether it may feed step `target`, directly or through other steps (never
/// `target` itself unless it is on a cycle). A step whose script may write names its text does
/// not show is taken to feed every step with inputs: when in doubt, a step counts as upstream.
pub(crate) fn upstream(m: &Manifest, target: usize) -> Vec<bool> {
    let writes = all_writes(m);
    let edges = edges_from(m, &writes);
    let n = m.steps.len();
    let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in &edges {
        feeds[e.to].push(e.from);
    }
    for (to, step) in m.steps.iter().enumerate() {
        if !step.inputs.is_empty() {
            feeds[to].extend((0..n).filter(|&from| writes[from].unknown));
        }
    }
    let mut reached = vec![false; n];
    let mut stack = vec![target];
    while let Some(v) = stack.pop() {
        for &from in feeds.get(v).map_or(&[][..], Vec::as_slice) {
            if !reached[from] {
                reached[from] = true;
                stack.push(from);
            }
        }
    }
    reached
}

/// Strongly connected groups that contain a cycle (two or more steps, or a self-loop), each
/// sorted by step index, ordered by their first step. Iterative Kosaraju: no recursion, so a
/// huge manifest cannot overflow the stack.
pub(crate) fn cycles(n: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    let mut fwd = vec![Vec::new(); n];
    let mut rev = vec![Vec::new(); n];
    let mut self_loop = vec![false; n];
    for e in edges {
        if e.from >= n || e.to >= n {
            continue;
        }
        fwd[e.from].push(e.to);
        rev[e.to].push(e.from);
        if e.from == e.to {
            self_loop[e.from] = true;
        }
    }
    // Pass 1: finishing order on the forward graph.
    let mut visited = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((v, i)) = stack.pop() {
            if let Some(&w) = fwd[v].get(i) {
                stack.push((v, i + 1));
                if !visited[w] {
                    visited[w] = true;
                    stack.push((w, 0));
                }
            } else {
                order.push(v);
            }
        }
    }
    // Pass 2: components on the reverse graph, in reverse finishing order.
    let mut comp = vec![usize::MAX; n];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &start in order.iter().rev() {
        if comp[start] != usize::MAX {
            continue;
        }
        let id = groups.len();
        let mut members = vec![start];
        comp[start] = id;
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            for &w in &rev[v] {
                if comp[w] == usize::MAX {
                    comp[w] = id;
                    members.push(w);
                    stack.push(w);
                }
            }
        }
        members.sort_unstable();
        groups.push(members);
    }
    let mut out: Vec<Vec<usize>> = groups
        .into_iter()
        .filter(|g| g.len() > 1 || self_loop[g[0]])
        .collect();
    out.sort();
    out
}

fn names(m: &Manifest, group: &[usize]) -> String {
    group
        .iter()
        .map(|&i| format!("`{}`", m.steps[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn cycle_warnings(m: &Manifest) -> Vec<Warning> {
    let edges = edges(m);
    cycles(m.steps.len(), &edges)
        .into_iter()
        .map(|group| {
            let first = &m.steps[group[0]];
            let message = if group.len() == 1 {
                let via = edges
                    .iter()
                    .find(|e| e.from == group[0] && e.to == group[0])
                    .map_or(String::new(), |e| format!(" `{}`", e.via));
                format!(
                    "step `{}` consumes its own output{via}: a cycle; it repeats until its outputs stop changing (bound a run with --max-tasks)",
                    first.name
                )
            } else {
                format!(
                    "steps {} form a cycle; they repeat until their outputs stop changing (bound a run with --max-tasks)",
                    names(m, &group)
                )
            };
            Warning { path: m.path.clone(), line: first.line, column: 1, message }
        })
        .collect()
}

pub(crate) fn unwritten_inputs(m: &Manifest, known: &dyn Fn(&str) -> bool) -> Vec<Warning> {
    let writes = all_writes(m);
    if writes.iter().any(|w| w.unknown) {
        // Some script may write names we cannot see; any warning could be false.
        return Vec::new();
    }
    let mut out = Vec::new();
    for step in &m.steps {
        for (i, input) in step.inputs.iter().enumerate() {
            if glob::exclusion(input).is_some() {
                continue;
            }
            let Ok(tokens) = glob::tokenize(input) else {
                continue;
            };
            let written = writes
                .iter()
                .flat_map(|w| &w.patterns)
                .any(|p| glob::may_overlap(&tokens, p));
            if written || known(input) {
                continue;
            }
            let pos = step.input_positions.get(i).copied().unwrap_or(Position {
                line: step.line,
                column: 1,
            });
            let what = if glob::is_literal(input) {
                format!("`{input}`")
            } else {
                format!("a name matching `{input}`")
            };
            out.push(Warning {
                path: m.path.clone(),
                line: pos.line,
                column: pos.column,
                message: format!(
                    "step `{}` reads {what}, but no step writes it and nothing by that name has been ingested (add it with `grit ingest FILE`, named after the file, or `grit ingest --name NAME FILE`)",
                    step.name
                ),
            });
        }
    }
    out
}

/// One line per step: name, kind, inputs, written names, downstream steps; then cycles.
pub(crate) fn render(m: &Manifest) -> String {
    let writes = all_writes(m);
    let edges = edges_from(m, &writes);
    let cyc = cycles(m.steps.len(), &edges);
    let in_cycle = |i: usize| cyc.iter().any(|g| g.contains(&i));
    let mut rows: Vec<[String; 5]> = vec![[
        "STEP".into(),
        "KIND".into(),
        "INPUTS".into(),
        "WRITES".into(),
        "DOWNSTREAM".into(),
    ]];
    for (i, s) in m.steps.iter().enumerate() {
        let mut kind = vec![if s.is_source() {
            "source"
        } else if s.gather {
            "gather"
        } else {
            "step"
        }];
        if s.once {
            kind.push("once");
        }
        if in_cycle(i) {
            kind.push("cycle");
        }
        let inputs = if s.inputs.is_empty() {
            "-".to_string()
        } else {
            s.inputs.join(" ")
        };
        let mut w: Vec<String> = writes[i]
            .patterns
            .iter()
            .map(|p| display_pattern(p))
            .collect();
        if writes[i].unknown {
            w.push("(unknown)".into());
        }
        let w = if w.is_empty() {
            "-".to_string()
        } else {
            w.join(" ")
        };
        let down: BTreeSet<usize> = edges.iter().filter(|e| e.from == i).map(|e| e.to).collect();
        let down = if down.is_empty() {
            "-".to_string()
        } else {
            down.iter()
                .map(|&j| m.steps[j].name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        rows.push([s.name.clone(), kind.join(","), inputs, w, down]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let sources = m.steps.iter().filter(|s| s.is_source()).count();
    let title = match &m.pipeline_name {
        Some(n) => format!("pipeline {n}"),
        None => format!("manifest {}", m.path.display()),
    };
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut out = format!(
        "{title}: {}, {}, {}\n",
        plural(m.steps.len(), "step", "steps"),
        plural(sources, "source", "sources"),
        plural(edges.len(), "edge", "edges"),
    );
    for r in &rows {
        let mut line = String::from("  ");
        for (k, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if k + 1 < r.len() {
                let pad = widths[k] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for g in &cyc {
        out.push_str(&format!("cycle: {}\n", names(m, g)));
    }
    if writes.iter().any(|w| w.unknown) {
        out.push_str("(unknown): the script uses $OUTPUT_DIR in a way grit cannot read, so it may write other names\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Step;

    fn step(name: &str, inputs: &[&str], script: &str) -> Step {
        Step {
            name: name.into(),
            script: script.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            ..Step::default()
        }
    }

    fn manifest(steps: Vec<Step>) -> Manifest {
        Manifest {
            path: "m.toml".into(),
            steps,
            ..Manifest::default()
        }
    }

    #[test]
    fn edges_follow_written_names_and_globs() {
        let m = manifest(vec![
            step(
                "gen",
                &[],
                "for i in 1 2; do echo $i > $OUTPUT_DIR/item_$i; done",
            ),
            step("each", &["item_*"], "cat $INPUT_FILE > $OUTPUT_DIR/done"),
            step("one", &["item_1"], "true"),
            step("other", &["thing"], "true"),
            step("final", &["d?ne"], "true"),
        ]);
        let e = m.edges();
        assert_eq!(
            e,
            vec![
                Edge {
                    from: 0,
                    to: 1,
                    via: "item_*".into()
                },
                Edge {
                    from: 0,
                    to: 2,
                    via: "item_1".into()
                },
                Edge {
                    from: 1,
                    to: 4,
                    via: "done".into()
                },
            ]
        );
        let w = m.unwritten_inputs(&|_| false);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("`thing`"), "{}", w[0].message);
        assert!(m.unwritten_inputs(&|n| n == "thing").is_empty());
    }

    #[test]
    fn detects_cycles_and_self_loops() {
        let m = manifest(vec![
            step("seed", &[], "echo x > $OUTPUT_DIR/url"),
            step("crawl", &["url"], "echo y > $OUTPUT_DIR/url"),
            step("a", &["from_b"], "echo > $OUTPUT_DIR/from_a"),
            step("b", &["from_a"], "echo > $OUTPUT_DIR/from_b"),
            step("end", &["from_a"], "true"),
        ]);
        assert_eq!(m.cycles(), vec![vec![1], vec![2, 3]]);
        let w = cycle_warnings(&m);
        assert_eq!(w.len(), 2);
        assert!(
            w[0].message
                .contains("`crawl` consumes its own output `url`")
        );
        assert!(w[1].message.contains("`a`, `b` form a cycle"));
        let g = m.render_graph();
        assert!(g.contains("cycle: `a`, `b`"), "{g}");
        assert!(
            g.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["crawl", "step,cycle", "url", "url", "crawl"]),
            "{g}"
        );
    }

    #[test]
    fn acyclic_graphs_have_no_cycles() {
        // A diamond plus an unrelated chain: no group may be reported.
        let e = |from, to| Edge {
            from,
            to,
            via: String::new(),
        };
        let edges = vec![e(0, 1), e(0, 2), e(1, 3), e(2, 3), e(4, 5)];
        assert!(cycles(6, &edges).is_empty());
        let mut with_back = edges.clone();
        with_back.push(e(3, 0));
        assert_eq!(cycles(6, &with_back), vec![vec![0, 1, 2, 3]]);
        // Out-of-range indices are ignored, not a panic.
        assert!(cycles(1, &[e(0, 7)]).is_empty());
    }

    #[test]
    fn unknown_writers_silence_input_warnings() {
        let m = manifest(vec![
            step("src", &[], "cd \"$OUTPUT_DIR\" && split -l 1 /data/in"),
            step("use", &["xaa"], "true"),
        ]);
        assert!(m.unwritten_inputs(&|_| false).is_empty());
        assert!(m.edges().is_empty());
        assert!(m.render_graph().contains("(unknown)"));
    }

    #[test]
    fn upstream_follows_edges_transitively_and_counts_unknown_writers() {
        let m = manifest(vec![
            step("load", &[], "cp in \"$OUTPUT_DIR/raw\""),
            step("split", &["raw"], "echo > \"$OUTPUT_DIR/row_$i\""),
            step("stats", &["row_*"], "echo > \"$OUTPUT_DIR/total_$i\""),
            step("side", &["raw"], "echo > \"$OUTPUT_DIR/audit\""),
            step("report", &["total_*"], "echo > \"$OUTPUT_DIR/report\""),
        ]);
        assert_eq!(m.upstream_of(4), [true, true, true, false, false]);
        assert_eq!(m.upstream_of(0), [false; 5]);
        let unknown = manifest(vec![
            step("src", &[], "cd \"$OUTPUT_DIR\" && split -l 1 /data/in"),
            step("other", &[], "echo > \"$OUTPUT_DIR/x\""),
            step("use", &["xaa"], "true"),
        ]);
        assert_eq!(unknown.upstream_of(2), [true, false, false]);
    }
}
