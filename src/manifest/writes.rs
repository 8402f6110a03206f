//! What a step's script writes: a best-effort reading of `$OUTPUT_DIR/NAME` in shell text.
//!
//! It feeds the step graph (edges, cycles) and the "nothing writes this input" warning. It is
//! deliberately conservative: whenever the script uses `OUTPUT_DIR` in a way it cannot read
//! (`cd "$OUTPUT_DIR"`, `-o "$OUTPUT_DIR"`, a wholly variable name, a non-sh shell), the step is
//! marked as possibly writing anything, which silences warnings rather than raising false ones.

use super::glob::WritePart;

/// The names a script writes, as far as its text shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// Name shapes such as `done` or `item_*` (a variable part is [`WritePart::Any`]).
    pub patterns: Vec<Vec<WritePart>>,
    /// The script may also write names that cannot be read from its text.
    pub unknown: bool,
}

/// Render a written-name shape for humans: variable parts become `*`.
pub fn display_pattern(parts: &[WritePart]) -> String {
    parts
        .iter()
        .map(|p| match p {
            WritePart::Text(t) => t.as_str(),
            WritePart::Any => "*",
        })
        .collect()
}

const VAR: &str = "OUTPUT_DIR";

/// Shells whose `$VAR/name` syntax this reader understands.
fn is_sh_like(shell: &[String]) -> bool {
    let Some(program) = shell.first() else {
        return true;
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    matches!(
        base,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "busybox" | "yash" | "fish"
    )
}

/// Does a script that never names `OUTPUT_DIR` look like it hands off to another program that
/// could (a local script, an interpreter)? Then it may write anything.
fn runs_a_helper(script: &str) -> bool {
    const HINTS: [&str; 10] = [
        "./", ".sh", ".py", ".pl", ".rb", ".js", "python", "make", "node", "perl",
    ];
    HINTS.iter().any(|h| script.contains(h))
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Read what `script` (run by `shell`) writes into `$OUTPUT_DIR`.
pub fn analyze(script: &str, shell: &[String]) -> Writes {
    let mut writes = Writes::default();
    let chars: Vec<char> = script.chars().collect();
    let var: Vec<char> = VAR.chars().collect();
    let mut mentioned = false;
    let mut k = 0;
    while k + var.len() <= chars.len() {
        if chars[k..k + var.len()] != var[..]
            || (k > 0 && is_ident(chars[k - 1]))
            || chars.get(k + var.len()).is_some_and(|&c| is_ident(c))
        {
            k += 1;
            continue;
        }
        mentioned = true;
        let after = k + var.len();
        match read_use(&chars, k, after) {
            Some(parts) => push_unique(&mut writes.patterns, parts),
            None => writes.unknown = true,
        }
        k = after;
    }
    if mentioned && !is_sh_like(shell) {
        return Writes {
            patterns: Vec::new(),
            unknown: true,
        };
    }
    if !mentioned && runs_a_helper(script) {
        writes.unknown = true;
    }
    writes
}

fn push_unique(list: &mut Vec<Vec<WritePart>>, parts: Vec<WritePart>) {
    if !list.contains(&parts) {
        list.push(parts);
    }
}

/// Read one use of `OUTPUT_DIR` found at `k` (the name ends at `after`). Returns the written
/// name's shape, or `None` if this use does not show a single flat name.
fn read_use(chars: &[char], k: usize, after: usize) -> Option<Vec<WritePart>> {
    // `$OUTPUT_DIR` or `${OUTPUT_DIR}` / `${OUTPUT_DIR:?msg}`; anything else is unreadable.
    let (dollar, mut i) = if k >= 1 && chars[k - 1] == '$' {
        (k - 1, after)
    } else if k >= 2 && chars[k - 1] == '{' && chars[k - 2] == '$' {
        let close = chars[after..].iter().position(|&c| c == '}')? + after;
        if close != after && !matches!(chars[after], ':' | '-' | '?' | '+' | '=') {
            return None;
        }
        (k - 2, close + 1)
    } else {
        return None;
    };
    let mut in_dq = dollar > 0 && chars[dollar - 1] == '"';
    let mut parts: Vec<WritePart> = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, parts: &mut Vec<WritePart>| {
        if !text.is_empty() {
            parts.push(WritePart::Text(std::mem::take(text)));
        }
    };
    while let Some(&c) = chars.get(i) {
        if in_dq {
            if c == '"' {
                in_dq = false;
                i += 1;
                continue;
            }
        } else {
            if c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')') {
                break;
            }
            if c == '"' {
                in_dq = true;
                i += 1;
                continue;
            }
            if c == '\'' {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(chars.len(), |p| i + 1 + p);
                text.extend(&chars[i + 1..end]);
                i = end + 1;
                continue;
            }
            if c == '{' {
                // Brace expansion (`{a,b}`) writes several names: unknown which.
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '}')
                    .map_or(chars.len(), |p| i + 1 + p);
                flush(&mut text, &mut parts);
                parts.push(WritePart::Any);
                i = end + 1;
                continue;
            }
            if matches!(c, '*' | '?' | '[') {
                // A shell glob in the name: some name, unknown which.
                flush(&mut text, &mut parts);
                parts.push(WritePart::Any);
                i += 1;
                continue;
            }
        }
        match c {
            '\\' => {
                if let Some(&n) = chars.get(i + 1)
                    && n != '\n'
                {
                    text.push(n);
                }
                i += 2;
            }
            '$' => {
                let next = skip_expansion(chars, i);
                if next == i + 1 {
                    text.push('$'); // a lone `$` is literal
                } else {
                    flush(&mut text, &mut parts);
                    parts.push(WritePart::Any);
                }
                i = next;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .map_or(chars.len(), |p| i + 1 + p);
                flush(&mut text, &mut parts);
                parts.push(WritePart::Any);
                i = end + 1;
            }
            _ => {
                text.push(c);
                i += 1;
            }
        }
    }
    flush(&mut text, &mut parts);
    name_after_slash(parts)
}

/// Index just past the expansion starting with the `$` at `i` (`$x`, `${..}`, `$(..)`,
/// `$((..))`, `$1`, `$@`); `i + 1` when the `$` starts nothing.
fn skip_expansion(chars: &[char], i: usize) -> usize {
    let Some(&c) = chars.get(i + 1) else {
        return i + 1;
    };
    match c {
        '{' | '(' => {
            let (open, close) = if c == '{' { ('{', '}') } else { ('(', ')') };
            let mut depth = 0usize;
            let mut j = i + 1;
            while let Some(&d) = chars.get(j) {
                if d == open {
                    depth += 1;
                } else if d == close {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                j += 1;
            }
            chars.len()
        }
        c if c.is_ascii_alphabetic() || c == '_' => {
            let mut j = i + 1;
            while chars.get(j).is_some_and(|&c| is_ident(c)) {
                j += 1;
            }
            j
        }
        c if c.is_ascii_digit() || matches!(c, '@' | '*' | '#' | '?' | '$' | '!' | '-') => i + 2,
        _ => i + 1,
    }
}

/// The word after `$OUTPUT_DIR` must be `/NAME` with a flat, partly known NAME.
fn name_after_slash(mut parts: Vec<WritePart>) -> Option<Vec<WritePart>> {
    let WritePart::Text(first) = parts.first_mut()? else {
        return None;
    };
    let rest = first.strip_prefix('/')?.to_string();
    if rest.is_empty() {
        parts.remove(0);
    } else {
        *first = rest;
    }
    let flat = parts.iter().all(|p| match p {
        WritePart::Text(t) => !t.contains('/'),
        WritePart::Any => true,
    });
    let has_text = parts.iter().any(|p| matches!(p, WritePart::Text(_)));
    (flat && has_text).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Vec<String> {
        vec!["sh".into(), "-ec".into()]
    }

    fn shapes(script: &str) -> (Vec<String>, bool) {
        let w = analyze(script, &sh());
        (
            w.patterns.iter().map(|p| display_pattern(p)).collect(),
            w.unknown,
        )
    }

    #[test]
    fn reads_plain_and_quoted_forms() {
        let cases = [
            ("echo hi > $OUTPUT_DIR/process", "process"),
            ("echo hi > ${OUTPUT_DIR}/done", "done"),
            ("echo hi > \"$OUTPUT_DIR/my out\"", "my out"),
            ("echo hi > \"$OUTPUT_DIR\"/x.txt", "x.txt"),
            ("echo hi > \"${OUTPUT_DIR}/y\";", "y"),
            ("cp a $OUTPUT_DIR/'lit$x'", "lit$x"),
            ("echo >$OUTPUT_DIR/a\\ b|cat", "a b"),
            ("echo > ${OUTPUT_DIR:?}/z", "z"),
            ("tee $OUTPUT_DIR/t </dev/null", "t"),
        ];
        for (script, want) in cases {
            assert_eq!(shapes(script), (vec![want.to_string()], false), "{script}");
        }
    }

    #[test]
    fn variables_inside_a_name_become_stars() {
        let cases = [
            ("echo $i > $OUTPUT_DIR/item_$i", "item_*"),
            ("echo > \"$OUTPUT_DIR/item_${i}.txt\"", "item_*.txt"),
            ("echo > $OUTPUT_DIR/part-$(date +%s)-x", "part-*-x"),
            ("echo > $OUTPUT_DIR/n$((i+1))", "n*"),
            ("echo > $OUTPUT_DIR/\"$name\".json", "*.json"),
            ("echo > $OUTPUT_DIR/b`date`", "b*"),
            ("touch $OUTPUT_DIR/x_{a,b}.txt", "x_*.txt"),
        ];
        for (script, want) in cases {
            assert_eq!(shapes(script), (vec![want.to_string()], false), "{script}");
        }
    }

    #[test]
    fn unreadable_uses_mean_anything() {
        for script in [
            "cd \"$OUTPUT_DIR\" && split -l 1 ../x",
            "curl -o \"$OUTPUT_DIR\" https://x",
            "echo > \"$OUTPUT_DIR/$name\"",
            "echo > $OUTPUT_DIR/$(basename $f)",
            "touch $OUTPUT_DIR/{a,b}",
            "mv x $OUTPUT_DIR/",
            "mkdir $OUTPUT_DIR/sub/file",
            "python -c 'import os; os.environ[\"OUTPUT_DIR\"]'",
            "export O=$OUTPUT_DIR",
            "./fetch.sh",
        ] {
            assert!(analyze(script, &sh()).unknown, "{script}");
        }
    }

    #[test]
    fn mixes_known_names_with_unknown_uses() {
        let (names, unknown) =
            shapes("echo a > $OUTPUT_DIR/a\ncd $OUTPUT_DIR\necho b > $OUTPUT_DIR/a");
        assert_eq!(names, vec!["a".to_string()]);
        assert!(unknown);
    }

    #[test]
    fn other_variables_and_no_mention() {
        assert_eq!(
            shapes("echo $MY_OUTPUT_DIR/x $OUTPUT_DIRS/y"),
            (vec![], false)
        );
        assert_eq!(shapes("curl -X POST https://hook"), (vec![], false));
    }

    #[test]
    fn non_sh_shell_is_opaque() {
        let py = vec!["python3".to_string(), "-c".to_string()];
        let w = analyze("open('$OUTPUT_DIR/x', 'w')", &py);
        assert!(w.unknown && w.patterns.is_empty());
        let bash = vec!["/usr/bin/bash".to_string(), "-c".to_string()];
        assert_eq!(analyze("echo > $OUTPUT_DIR/x", &bash).patterns.len(), 1);
    }

    #[test]
    fn never_panics_on_truncated_syntax() {
        for script in [
            "$OUTPUT_DIR",
            "${OUTPUT_DIR",
            "$OUTPUT_DIR/'",
            "$OUTPUT_DIR/\\",
            "$OUTPUT_DIR/$(",
            "$OUTPUT_DIR/`",
            "\"$OUTPUT_DIR/",
            "OUTPUT_DIR",
            "${OUTPUT_DIR}/${",
            "$OUTPUT_DIR/$",
        ] {
            let _ = analyze(script, &sh());
        }
    }
}
