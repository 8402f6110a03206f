//! The step graph as SVG, drawn on the server: the nodes and flows `grit graph` prints (the same
//! functions build them), laid out left to right by depth, each step outlined in the colour of
//! its state and labelled with its task counts.

use std::collections::BTreeMap;
use std::fmt::Write;

use maud::{Markup, html};

use crate::commands::graph::{INGESTED, flow_label, nodes};
use crate::store::provenance::{Flow, GraphStep};
use crate::store::queries::StepStatus;

const BOX_W: i64 = 200;
const BOX_H: i64 = 56;
const COL_GAP: i64 = 90;
const ROW_GAP: i64 = 26;
const PAD: i64 = 12;
/// Characters of a label that fit a box; longer ones are cut (the whole is in the tooltip).
const LABEL_CHARS: usize = 27;

/// The state a step is drawn in: the most urgent of its tasks'.
pub fn step_state(status: Option<&StepStatus>) -> &'static str {
    match status {
        Some(s) if s.failed > 0 => "failed",
        Some(s) if s.running > 0 => "running",
        Some(s) if s.pending > 0 => "pending",
        Some(s) if s.succeeded > 0 => "succeeded",
        _ => "none",
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        text.to_string()
    } else {
        let head: String = text.chars().take(LABEL_CHARS - 1).collect();
        format!("{head}…")
    }
}

/// One box of the drawing.
struct Box_ {
    /// Full name (tooltip) and the lines shown.
    title: String,
    lines: Vec<String>,
    class: &'static str,
    rank: usize,
    row: usize,
}

/// The SVG of the graph. `status` holds the current steps' task counts by name.
pub fn svg(steps: &[GraphStep], flows: &[Flow], status: &[StepStatus]) -> Markup {
    let by_name: BTreeMap<&str, &StepStatus> =
        status.iter().map(|s| (s.name.as_str(), s)).collect();
    let nodes = nodes(steps, flows);
    let mut boxes: Vec<Box_> = nodes
        .iter()
        .map(|n| {
            let status = by_name.get(n.name.as_str()).copied();
            let step = steps.iter().find(|s| s.name == n.name);
            let lines = match (step, status) {
                (Some(step), Some(s)) => vec![
                    cut(&n.name),
                    format!(
                        "{} · {} pending · {} running",
                        step.kind, s.pending, s.running
                    ),
                    format!("{} succeeded · {} failed", s.succeeded, s.failed),
                ],
                _ => n.label.lines().map(cut).collect(),
            };
            let class = if step.is_some() {
                step_state(status)
            } else {
                "none"
            };
            Box_ {
                title: n.label.replace('\n', " — "),
                lines,
                class,
                rank: 0,
                row: 0,
            }
        })
        .collect();
    let index = |name: &str| nodes.iter().position(|n| n.name == name);
    // Edges between boxes; a flow into no step ends in a note box of its own.
    let mut edges: Vec<(usize, usize, String)> = Vec::new();
    for flow in flows {
        let Some(from) = index(flow.from.as_deref().unwrap_or(INGESTED)) else {
            continue;
        };
        let label = flow_label(flow, steps);
        let to = match flow.to.as_deref() {
            Some(to) => match index(to) {
                Some(i) => i,
                None => continue,
            },
            None => {
                boxes.push(Box_ {
                    title: format!("live outputs: {label}"),
                    lines: vec!["live outputs".into(), cut(&label)],
                    class: "none",
                    rank: 0,
                    row: 0,
                });
                edges.push((from, boxes.len() - 1, String::new()));
                continue;
            }
        };
        edges.push((from, to, label));
    }
    // Depth: the longest chain of flows into a box (bounded, so that a cycle between old and
    // new step versions cannot loop).
    for _ in 0..boxes.len() {
        let mut changed = false;
        for (from, to, _) in &edges {
            if from != to
                && boxes[*to].rank < boxes[*from].rank + 1
                && boxes[*from].rank < boxes.len()
            {
                boxes[*to].rank = boxes[*from].rank + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows_in_rank: BTreeMap<usize, usize> = BTreeMap::new();
    for b in &mut boxes {
        let row = rows_in_rank.entry(b.rank).or_insert(0);
        b.row = *row;
        *row += 1;
    }
    let x = |b: &Box_| PAD + b.rank as i64 * (BOX_W + COL_GAP);
    let y = |b: &Box_| PAD + b.row as i64 * (BOX_H + ROW_GAP);
    let ranks = rows_in_rank.len().max(1) as i64;
    let rows = rows_in_rank.values().copied().max().unwrap_or(1) as i64;
    let width = 2 * PAD + ranks * BOX_W + (ranks - 1) * COL_GAP;
    let height = 2 * PAD + rows * BOX_H + (rows - 1) * ROW_GAP;
    let mut paths = Vec::new();
    for (from, to, label) in &edges {
        let (a, b) = (&boxes[*from], &boxes[*to]);
        let (x1, y1) = (x(a) + BOX_W, y(a) + BOX_H / 2);
        let (x2, y2) = (x(b), y(b) + BOX_H / 2);
        let bend = ((x2 - x1).abs() / 2).max(30);
        let mut d = String::new();
        let _ = write!(
            d,
            "M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}",
            x1 + bend,
            x2 - bend
        );
        paths.push((d, (x1 + x2) / 2, (y1 + y2) / 2 - 4, label.clone()));
    }
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } role="img" aria-labelledby="graph-title" {
            title #graph-title { "Step graph: " (boxes.len()) " nodes, " (edges.len()) " flows" }
            defs {
                marker #arrow viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M0,0 L10,5 L0,10 z" class="edge" style="fill: currentColor" {}
                }
            }
            @for (d, _, _, _) in &paths {
                // SVG inside HTML has no void elements: every one is closed.
                path.edge d=(d) stroke-width="1.5" marker-end="url(#arrow)" {}
            }
            @for (_, lx, ly, label) in &paths {
                @if !label.is_empty() {
                    text.edge-label x=(lx) y=(ly) text-anchor="middle" { (cut(label)) }
                }
            }
            @for b in &boxes {
                g class={ "n-" (b.class) } {
                    title { (b.title) " (" (b.class) ")" }
                    rect x=(x(b)) y=(y(b)) width=(BOX_W) height=(BOX_H) rx="6" {}
                    @for (i, line) in b.lines.iter().enumerate() {
                        text x=(x(b) + 8) y=(y(b) + 17 + 16 * i as i64)
                            font-weight=(if i == 0 { "600" } else { "400" }) { (line) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> GraphStep {
        GraphStep {
            name: name.into(),
            kind: "map".into(),
            inputs: vec!["*.csv".into()],
            tasks: 2,
            failed: 1,
        }
    }

    #[test]
    fn draws_steps_by_depth_with_escaped_labels() {
        let steps = vec![step("fetch"), step("clean<&>")];
        let flows = vec![Flow {
            from: Some("fetch".into()),
            to: Some("clean<&>".into()),
            resources: 2,
            names: 2,
            first_name: "a.csv".into(),
            last_name: "b.csv".into(),
        }];
        let status = vec![StepStatus {
            name: "clean<&>".into(),
            version: "v".into(),
            kind: "map".into(),
            pending: 0,
            running: 0,
            succeeded: 1,
            failed: 1,
            live_outputs: 0,
        }];
        let svg = svg(&steps, &flows, &status).into_string();
        assert!(svg.contains("clean&lt;&amp;&gt;"), "{svg}");
        assert!(!svg.contains("clean<&>"), "{svg}");
        assert!(svg.contains("class=\"n-failed\""), "{svg}");
        // The consumer sits one column right of the producer.
        assert!(
            svg.contains(&format!("x=\"{}\"", PAD + BOX_W + COL_GAP)),
            "{svg}"
        );
        assert!(svg.contains("*.csv (2)"), "{svg}");
        // Inside HTML, an SVG element without its end tag would swallow the ones after it.
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("</rect>").count(),
            "{svg}"
        );
        assert_eq!(
            svg.matches("<path").count(),
            svg.matches("</path>").count(),
            "{svg}"
        );
    }
}
