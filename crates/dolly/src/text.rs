/// Python's `str.isspace()`: Rust's `char::is_whitespace` lacks U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` (also Jinja's `trim` filter, which the Gemma chat template applies).
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_python_whitespace_set() {
        assert_eq!(py_strip("\u{1f}\u{a0} a b \n\u{3000}"), "a b");
        assert_eq!(py_strip("\u{200b}x"), "\u{200b}x"); // zero-width space is not whitespace
    }
}
