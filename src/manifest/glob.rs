//! Resource-name globs: SQLite `GLOB` semantics, pattern checking, and "may these overlap?".
//!
//! The store selects inputs with SQL `name GLOB ?`, so [`glob_match`] must agree with SQLite
//! on every input, including odd ones (`*?`, `[]]`, `[^a-]`, an unclosed `[`). It is a
//! line-by-line port of `patternCompare` in SQLite's `func.c`, and a test compares the two.

/// Outcome of one comparison, as in SQLite: `NoWildcardMatch` means no later start position
/// of an enclosing `*` can match either, so the caller stops trying.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Match,
    NoMatch,
    NoWildcardMatch,
}

/// Does `name` match the glob `pattern`, exactly as SQLite's `name GLOB pattern` answers?
///
/// Case-sensitive. `*` matches any run of characters, `?` exactly one, `[abc]`, `[a-z]` and
/// `[^x]` one character of (or not of) a set; `]` first in a set is literal. A pattern with an
/// unclosed `[` matches nothing. A NUL ends either string, as it does in SQLite.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().take_while(|&c| c != '\0').collect();
    let s: Vec<char> = name.chars().take_while(|&c| c != '\0').collect();
    compare(&p, &s) == Cmp::Match
}

/// An `inputs` entry that starts with `!` excludes names instead of selecting them (as in
/// `.gitignore`): `["*.csv", "!tmp_*"]`. Returns the glob after the `!`. A name that really starts
/// with `!` is selected with the set `[!]name`.
pub fn exclusion(pattern: &str) -> Option<&str> {
    pattern.strip_prefix('!')
}

/// Does `name` match a list of `inputs`: some selecting glob and no excluding one?
pub fn inputs_match(patterns: &[String], name: &str) -> bool {
    let (mut selected, mut excluded) = (false, false);
    for p in patterns {
        match exclusion(p) {
            Some(glob) => excluded |= glob_match(glob, name),
            None => selected |= glob_match(p, name),
        }
    }
    selected && !excluded
}

/// The SQL condition "`column` matches `patterns`" with its bound values, in the order given:
/// `((c GLOB ? OR c GLOB ?) AND NOT (c GLOB ?))`. Agrees with [`inputs_match`]; `FALSE` when
/// nothing selects.
pub fn inputs_sql<'p>(column: &str, patterns: &'p [String]) -> (String, Vec<&'p str>) {
    let (excluding, selecting): (Vec<&str>, Vec<&str>) = (
        patterns.iter().filter_map(|p| exclusion(p)).collect(),
        patterns
            .iter()
            .filter(|p| exclusion(p).is_none())
            .map(String::as_str)
            .collect(),
    );
    if selecting.is_empty() {
        return ("(0)".into(), Vec::new());
    }
    let any = |n: usize| vec![format!("{column} GLOB ?"); n].join(" OR ");
    let mut sql = format!("(({})", any(selecting.len()));
    if !excluding.is_empty() {
        sql.push_str(&format!(" AND NOT ({})", any(excluding.len())));
    }
    sql.push(')');
    (sql, selecting.into_iter().chain(excluding).collect())
}

/// Port of SQLite's `patternCompare` for GLOB (`matchAll = '*'`, `matchOne = '?'`,
/// `matchOther = '['`, case-sensitive). Slices stand in for its NUL-terminated pointers.
fn compare(p: &[char], s: &[char]) -> Cmp {
    let mut pi = 0;
    let mut si = 0;
    while pi < p.len() {
        let c = p[pi];
        pi += 1;
        if c == '*' {
            // Skip further `*`s; each `?` among them consumes one input character.
            let mut next = None;
            while pi < p.len() {
                let c = p[pi];
                pi += 1;
                if c == '*' {
                    continue;
                }
                if c == '?' {
                    if si >= s.len() {
                        return Cmp::NoWildcardMatch;
                    }
                    si += 1;
                    continue;
                }
                next = Some(c);
                break;
            }
            let Some(c) = next else {
                return Cmp::Match;
            };
            if c == '[' {
                // A set right after `*`: try every start position (SQLite's slow path).
                while si < s.len() {
                    let r = compare(&p[pi - 1..], &s[si..]);
                    if r != Cmp::NoMatch {
                        return r;
                    }
                    si += 1;
                }
                return Cmp::NoWildcardMatch;
            }
            // Find each occurrence of the literal `c` and match the rest after it.
            while si < s.len() {
                let c2 = s[si];
                si += 1;
                if c2 != c {
                    continue;
                }
                let r = compare(&p[pi..], &s[si..]);
                if r != Cmp::NoMatch {
                    return r;
                }
            }
            return Cmp::NoWildcardMatch;
        }
        if c == '[' {
            if si >= s.len() {
                return Cmp::NoMatch;
            }
            let c = s[si];
            si += 1;
            let mut prior: Option<char> = None;
            let mut seen = false;
            let mut invert = false;
            let mut c2 = p.get(pi).copied();
            pi += 1;
            if c2 == Some('^') {
                invert = true;
                c2 = p.get(pi).copied();
                pi += 1;
            }
            if c2 == Some(']') {
                if c == ']' {
                    seen = true;
                }
                c2 = p.get(pi).copied();
                pi += 1;
            }
            while let Some(cc) = c2 {
                if cc == ']' {
                    break;
                }
                let ahead = p.get(pi).copied();
                if cc == '-' && ahead.is_some() && ahead != Some(']') && prior.is_some() {
                    let hi = ahead.unwrap_or(cc); // is_some() checked just above
                    pi += 1;
                    if let Some(lo) = prior
                        && c >= lo
                        && c <= hi
                    {
                        seen = true;
                    }
                    prior = None;
                } else {
                    if c == cc {
                        seen = true;
                    }
                    prior = Some(cc);
                }
                c2 = p.get(pi).copied();
                pi += 1;
            }
            if c2.is_none() || seen == invert {
                return Cmp::NoMatch;
            }
            continue;
        }
        let c2 = s.get(si).copied();
        si += 1;
        if c2 == Some(c) {
            continue;
        }
        if c == '?' && c2.is_some() {
            continue;
        }
        return Cmp::NoMatch;
    }
    if si >= s.len() {
        Cmp::Match
    } else {
        Cmp::NoMatch
    }
}

/// One element of a parsed glob, for analysis (matching itself uses [`glob_match`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Char(char),
    AnyOne,
    AnyRun,
    Set { items: Vec<SetItem>, invert: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SetItem {
    One(char),
    Range(char, char),
}

impl Token {
    /// Can this single-character token match `c`? (`AnyRun` is handled by the caller.)
    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::AnyOne | Token::AnyRun => true,
            Token::Set { items, invert } => {
                let hit = items.iter().any(|i| match i {
                    SetItem::One(x) => *x == c,
                    SetItem::Range(lo, hi) => *lo <= c && c <= *hi,
                });
                hit != *invert
            }
        }
    }
}

/// Where a glob is malformed: the character index of the `[` that is never closed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnclosedSet {
    pub char_index: usize,
}

/// Parse a glob with SQLite's set rules. Fails on an unclosed `[` (SQLite would silently
/// match nothing, which is never what a manifest author meant).
pub(crate) fn tokenize(pattern: &str) -> Result<Vec<Token>, UnclosedSet> {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        match c {
            '*' => {
                if out.last() != Some(&Token::AnyRun) {
                    out.push(Token::AnyRun);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::AnyOne);
                i += 1;
            }
            '[' => {
                let start = i;
                i += 1;
                let mut invert = false;
                let mut items = Vec::new();
                if p.get(i) == Some(&'^') {
                    invert = true;
                    i += 1;
                }
                if p.get(i) == Some(&']') {
                    items.push(SetItem::One(']'));
                    i += 1;
                }
                let mut prior: Option<char> = None;
                loop {
                    let Some(&cc) = p.get(i) else {
                        return Err(UnclosedSet { char_index: start });
                    };
                    i += 1;
                    if cc == ']' {
                        break;
                    }
                    let ahead = p.get(i).copied();
                    match (cc, ahead, prior) {
                        ('-', Some(hi), Some(lo)) if hi != ']' => {
                            items.push(SetItem::Range(lo, hi));
                            i += 1;
                            prior = None;
                        }
                        _ => {
                            items.push(SetItem::One(cc));
                            prior = Some(cc);
                        }
                    }
                }
                out.push(Token::Set { items, invert });
            }
            _ => {
                out.push(Token::Char(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Is `pattern` free of glob metacharacters, i.e. it names exactly one resource?
pub(crate) fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '['])
}

/// One piece of a name a script writes: known text, or a run nobody can predict (`$i`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WritePart {
    Text(String),
    Any,
}

/// Could some resource name match both the input glob `tokens` and the written-name shape
/// `write`? Exact for the regular languages involved (a product-automaton search), except
/// that a set is assumed non-empty, which only errs towards "may match".
pub(crate) fn may_overlap(tokens: &[Token], write: &[WritePart]) -> bool {
    // Flatten the write shape to per-character steps: Some(c) a literal, None a free run.
    let mut w: Vec<Option<char>> = Vec::new();
    for part in write {
        match part {
            WritePart::Text(t) => w.extend(t.chars().map(Some)),
            WritePart::Any => {
                if w.last() != Some(&None) {
                    w.push(None);
                }
            }
        }
    }
    let (n, m) = (tokens.len(), w.len());
    let mut seen = vec![false; (n + 1) * (m + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let k = i * (m + 1) + j;
        if seen[k] {
            continue;
        }
        seen[k] = true;
        if i == n && j == m {
            return true;
        }
        let g = tokens.get(i);
        let wc = w.get(j);
        // Epsilon moves: a `*` or a free run may match nothing.
        if g == Some(&Token::AnyRun) {
            stack.push((i + 1, j));
        }
        if wc == Some(&None) {
            stack.push((i, j + 1));
        }
        match (g, wc) {
            (Some(Token::AnyRun), Some(Some(_))) => stack.push((i, j + 1)),
            (Some(Token::AnyRun), Some(None)) => {}
            (Some(_), Some(None)) => stack.push((i + 1, j)),
            (Some(t), Some(Some(c))) if t.accepts(*c) => stack.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SQLite's own answer to `name GLOB pattern`.
    pub(crate) fn sqlite_glob(conn: &rusqlite::Connection, pattern: &str, name: &str) -> bool {
        conn.query_row("SELECT ?1 GLOB ?2", [name, pattern], |r| {
            r.get::<_, bool>(0)
        })
        .expect("GLOB query")
    }

    #[test]
    fn agrees_with_sqlite_on_tricky_cases() {
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        let patterns = [
            "",
            "*",
            "?",
            "**",
            "*?",
            "?*",
            "*?*",
            "a*",
            "*a",
            "a*b",
            "a?c",
            "item_*",
            "item_?",
            "[abc]",
            "[a-c]",
            "[^a]",
            "[^a-c]x",
            "[]]",
            "[]a]",
            "[^]]",
            "[a-]",
            "[-a]",
            "[a-c-e]",
            "[",
            "a[",
            "[a",
            "[]",
            "[^",
            "[^]",
            "*[",
            "*[a]",
            "*[ab]c",
            "*[^a]",
            "a*[0-9]",
            "\\*",
            "[*]",
            "[?]",
            "[[]",
            "A*",
            "é*",
            "*é",
            "[é]",
            "[à-ü]",
            "*.txt",
            "**a**",
            "a**?b",
            "?*?",
            "*]",
            "]",
            "^",
            "-",
            "[z-a]",
            "[a-a]",
            "x*[b-d]*y",
        ];
        let names = [
            "", "a", "b", "c", "A", "ab", "abc", "aXb", "acb", "ba", "item_1", "item_12", "item_",
            "]", "^", "-", "[", "*", "?", "\\*", "x.txt", "é", "éa", "aé", "ü", "xbay", "xay",
            "a-b", "aaab", "a0", "e", "d",
        ];
        let mut checked = 0;
        for p in patterns {
            for n in names {
                assert_eq!(
                    glob_match(p, n),
                    sqlite_glob(&conn, p, n),
                    "pattern {p:?} name {n:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 1500);
    }

    #[test]
    fn exclusions_agree_between_rust_and_sql() {
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE r (name TEXT);
             INSERT INTO r VALUES ('a.csv'), ('tmp_a.csv'), ('b.txt'), ('!x'), ('tmp_b.txt');",
        )
        .expect("table");
        let lists: [&[&str]; 5] = [
            &["*.csv", "!tmp_*"],
            &["*", "!*.csv", "!tmp_*"],
            &["[!]x", "b.txt"],
            &["!*"],
            &["*.csv"],
        ];
        for list in lists {
            let patterns: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            let (sql, values) = inputs_sql("name", &patterns);
            let mut stmt = conn
                .prepare(&format!("SELECT name FROM r WHERE {sql} ORDER BY name"))
                .expect("prepare");
            let by_sql: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(values), |row| row.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            let mut by_rust: Vec<String> = ["a.csv", "tmp_a.csv", "b.txt", "!x", "tmp_b.txt"]
                .into_iter()
                .filter(|n| inputs_match(&patterns, n))
                .map(String::from)
                .collect();
            by_rust.sort();
            assert_eq!(by_sql, by_rust, "{list:?}");
        }
        let csv: Vec<String> = vec!["*.csv".into(), "!tmp_*".into()];
        assert!(inputs_match(&csv, "a.csv") && !inputs_match(&csv, "tmp_a.csv"));
        assert!(
            !inputs_match(&["!*".to_string()], "a"),
            "only exclusions select nothing"
        );
    }

    #[test]
    fn basic_semantics() {
        assert!(glob_match("item_*", "item_1"));
        assert!(glob_match("item_*", "item_"));
        assert!(!glob_match("item_*", "Item_1"), "case-sensitive");
        assert!(glob_match("[a-z]?", "b7"));
        assert!(!glob_match("[^x]", "x"));
        assert!(!glob_match("a[", "a["), "unclosed set matches nothing");
        assert!(glob_match("done", "done"));
        assert!(!glob_match("done", "done2"));
    }

    #[test]
    fn tokenize_rejects_only_unclosed_sets() {
        assert_eq!(tokenize("a[bc"), Err(UnclosedSet { char_index: 1 }));
        assert_eq!(tokenize("*[]"), Err(UnclosedSet { char_index: 1 }));
        assert_eq!(tokenize("[^"), Err(UnclosedSet { char_index: 0 }));
        for ok in ["", "a", "*", "[]]", "[^]]", "x[a-c]*", "]", "a-b"] {
            assert!(tokenize(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            tokenize("[a-c-e]"),
            Ok(vec![Token::Set {
                items: vec![
                    SetItem::One('a'),
                    SetItem::Range('a', 'c'),
                    SetItem::One('-'),
                    SetItem::One('e')
                ],
                invert: false
            }])
        );
    }

    fn text(s: &str) -> WritePart {
        WritePart::Text(s.into())
    }

    #[test]
    fn overlap_of_inputs_and_written_names() {
        let t = |p: &str| tokenize(p).expect("valid glob");
        let cases: Vec<(&str, Vec<WritePart>, bool)> = vec![
            ("done", vec![text("done")], true),
            ("done", vec![text("don")], false),
            ("item_*", vec![text("item_"), WritePart::Any], true),
            ("item_1", vec![text("item_"), WritePart::Any], true),
            ("other_*", vec![text("item_"), WritePart::Any], false),
            ("*.csv", vec![WritePart::Any, text(".json")], false),
            ("*.csv", vec![text("a"), WritePart::Any], true),
            ("[0-9]*", vec![text("x"), WritePart::Any], false),
            ("[^x]*", vec![text("x"), WritePart::Any], false),
            ("[^x]*", vec![WritePart::Any, text("x")], true),
            ("a?c", vec![text("a"), WritePart::Any, text("c")], true),
            ("a?c", vec![text("ac")], false),
            ("*", vec![text("anything")], true),
        ];
        for (p, w, want) in cases {
            assert_eq!(may_overlap(&t(p), &w), want, "{p:?} vs {w:?}");
        }
    }
}
