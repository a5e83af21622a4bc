//! Positions in TOML text, shared by the daemon config (`config.rs`) and
//! scenario files (`scenario/file.rs`), so both report a mistake as
//! `FILE:LINE:COLUMN` the same way: the TOML parser's own span for syntax,
//! unknown keys and wrong types, and the line of the key for a value that
//! parsed but is impossible (pct 101, port 0).

use std::{ops::Range, path::Path};

/// A mistake in a TOML file, with its position.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The file's text, or the error that it could not be read.
pub(crate) fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|e| FileError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("could not read the file: {e}"),
    })
}

/// An error at byte `span.start` of `text`.
pub(crate) fn at(file: &str, text: &str, span: Range<usize>, message: String) -> FileError {
    let (line, column) = line_col(text, span.start);
    FileError {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// `text` parsed as TOML into `T`; syntax, unknown keys and wrong types
/// at the parser's own span.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| {
        at(
            file,
            text,
            e.span().unwrap_or(0..0),
            e.message().trim().replace('\n', " "),
        )
    })
}

/// Where `key = ...` starts inside `within` (a table's span), so a bad
/// value is reported at its own line. `None` when the key is not written
/// on a line of its own there (an inline table, a dotted key).
pub(crate) fn key_span(text: &str, within: Range<usize>, key: &str) -> Option<Range<usize>> {
    let body = text.get(within.clone())?;
    let mut offset = within.start;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let col = line.len() - trimmed.len();
            return Some(offset + col..offset + line.len());
        }
        offset += line.len();
    }
    None
}

/// 1-based line and column of byte `offset`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn key_span_finds_the_key_line_inside_the_table() {
        let text = "[x]\npct = 1\n[y]\n  pct = 2\n";
        let y = text.find("[y]").unwrap()..text.len();
        let s = key_span(text, y, "pct").unwrap();
        assert_eq!(line_col(text, s.start), (4, 3));
        // `pc` is a prefix of `pct` but not followed by `=`.
        assert!(key_span(text, 0..text.len(), "pc").is_none());
    }
}
