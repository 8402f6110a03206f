//! Text from the store shown to people, with its control characters escaped.
//!
//! A resource name is whatever file name a script wrote, and a newline or an ESC in it is a valid
//! name: printed as it is, it would forge a line of grit's output (`run 99 ok: …`) or send the
//! terminal an escape sequence (retitle the window, hide text, move the cursor). Every place that
//! prints a name for people goes through [`printable`]; `--json` output escapes on its own and
//! keeps the name exact. [`printable_text`] does the same for script output shown on a terminal,
//! keeping its line breaks and tabs.
//!
//! Escaped are the Unicode control characters (C0, DEL, C1) and the invisible ones that reorder or
//! break a line (bidirectional overrides and isolates, the line and paragraph separators): `\n`,
//! `\r`, `\t`, `\x1b` for the rest of ASCII, `\u{202e}` beyond it. Ordinary UTF-8, backslashes
//! included, is kept as it is.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character escaped: for one-line fields such as resource names.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// `text` with its control characters escaped, except line breaks and tabs: for script output
/// shown on a terminal.
pub fn printable_text(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

/// Whether `c` is escaped (unless `keep` says otherwise).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let shown = |c: char| keep(c) || !needs_escape(c);
    if text.chars().all(shown) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if shown(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_borrowed_as_they_are() {
        for name in ["report.csv", "item_1", "données-é", "日本語", "a\\nb"] {
            assert!(
                matches!(printable(name), Cow::Borrowed(n) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            printable("x\nrun 99 ok: 0 tasks executed"),
            "x\\nrun 99 ok: 0 tasks executed"
        );
        assert_eq!(
            printable("\x1b]0;owned\x07\x1b[2J"),
            "\\x1b]0;owned\\x07\\x1b[2J"
        );
        assert_eq!(printable("a\tb\rc\0d\x7f"), "a\\tb\\rc\\x00d\\x7f");
        assert_eq!(printable("csi\u{9b}31m"), "csi\\u{9b}31m");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
    }

    #[test]
    fn text_keeps_its_line_breaks_and_tabs() {
        assert_eq!(printable_text("a\tb\nc\n"), "a\tb\nc\n");
        assert_eq!(
            printable_text("\x1b[31mred\x1b[0m\r\n"),
            "\\x1b[31mred\\x1b[0m\\r\n"
        );
    }
}
