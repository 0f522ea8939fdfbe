//! sweelol-records: the small pieces every dataset reader shares.
//!
//! * [`Place`] names where a bad record sits, so an error can point at it.
//! * [`py_strip`] / [`py_rstrip`] are Python's `str.strip()` / `str.rstrip()`: the reference
//!   code (lm-eval's task definitions, Gemma's chat template) strips with Python's idea of
//!   whitespace, which includes U+001C..U+001F and differs from Rust's `trim`.

use std::fmt;

/// Where in a file a bad record sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// 1-based line number (JSON Lines; for CSV the line where the record starts).
    Line(usize),
    /// 0-based row index of a parquet file, counted across row groups.
    Row(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Row(n) => write!(f, "row {n} (0-based)"),
        }
    }
}

/// Python's `str.isspace()` for one character.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no arguments (also Jinja's `trim` filter).
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `str.rstrip()` with no arguments.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_python_strips() {
        // Python: " \t\x1c\x1fa b\u3000\n".strip() == "a b"
        assert_eq!(py_strip(" \t\u{1c}\u{1f}a b\u{3000}\n"), "a b");
        assert_eq!(py_rstrip("  a \u{1e}"), "  a");
        // U+200B (zero-width space) is not whitespace to Python.
        assert_eq!(py_strip("\u{200b}a"), "\u{200b}a");
    }

    #[test]
    fn places_read_as_the_errors_print_them() {
        assert_eq!(Place::Line(3).to_string(), "line 3");
        assert_eq!(Place::Row(0).to_string(), "row 0 (0-based)");
    }
}
