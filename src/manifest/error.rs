//! Manifest diagnostics: located errors (`FILE:LINE:COL: error: ...` plus a `help:` line) and
//! warnings, and the byte-offset → line:column mapping they share.

use std::fmt;
use std::path::PathBuf;

/// Why a manifest cannot be used. `Display` is the full user-facing diagnostic.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{}: error: cannot read manifest: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid manifest. `line` and `column` are 1-based (column in characters).
    #[error("{}:{line}:{column}: error: {message}{}", path.display(), HelpLine(help.as_deref()))]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        help: Option<String>,
    },
}

impl ManifestError {
    /// The `(line, column)` of an `Invalid` error.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ManifestError::Io { .. } => None,
            ManifestError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }
}

/// Renders the optional second line of an error.
struct HelpLine<'a>(Option<&'a str>);

impl fmt::Display for HelpLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(help) => write!(f, "\n  help: {help}"),
            None => Ok(()),
        }
    }
}

/// Something legal but probably unintended. `Display`: `FILE:LINE:COL: warning: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The manifest path as the user gave it.
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A 1-based line and column (in characters) inside the manifest text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text, and to a char boundary).
    pub fn of(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position { line, column }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\nçd = 1\n";
        assert_eq!(Position::of(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::of(text, 3), Position { line: 2, column: 1 });
        // 'd' comes after the two-byte 'ç': byte 5, character column 2.
        assert_eq!(Position::of(text, 5), Position { line: 2, column: 2 });
        // Inside a multi-byte char and past the end are clamped, never a panic.
        assert_eq!(Position::of(text, 4), Position { line: 2, column: 1 });
        assert_eq!(Position::of(text, 999), Position { line: 3, column: 1 });
    }

    #[test]
    fn display_formats() {
        let e = ManifestError::Invalid {
            path: "m.toml".into(),
            line: 3,
            column: 7,
            message: "bad".into(),
            help: Some("fix it".into()),
        };
        assert_eq!(e.to_string(), "m.toml:3:7: error: bad\n  help: fix it");
        let w = Warning {
            path: "m.toml".into(),
            line: 1,
            column: 2,
            message: "hmm".into(),
        };
        assert_eq!(w.to_string(), "m.toml:1:2: warning: hmm");
    }
}
