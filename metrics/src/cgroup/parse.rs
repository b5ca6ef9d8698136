//! Parsers for the cgroup file formats (single values, `max`-or-number limits, flat-keyed
//! `key value` lines) and the readers that turn a file into a value or a typed error.
//! All are tolerant of surrounding whitespace and trailing newlines.

use std::path::Path;

use crate::Error;

/// A limit as cgroup files write it: a number, or `max` for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// No limit (`max`).
    Max,
    /// This many units.
    Value(u64),
}

impl Limit {
    /// The number, or `None` when unlimited.
    pub fn value(self) -> Option<u64> {
        match self {
            Limit::Max => None,
            Limit::Value(value) => Some(value),
        }
    }
}

/// Parses a single-value file such as `memory.current`: one unsigned number.
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Parses a limit file such as `pids.max` or `memory.max`: a number or `max`.
pub fn parse_limit(text: &str) -> Option<Limit> {
    match text.trim() {
        "max" => Some(Limit::Max),
        other => other.parse().ok().map(Limit::Value),
    }
}

/// Iterates over the `key value` lines of a flat-keyed file such as `memory.stat` or
/// `cpu.stat`. Blank lines and lines without a value are skipped; the value is returned as
/// text, trimmed.
pub fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let mut parts = line.trim().splitn(2, char::is_whitespace);
        let key = parts.next().filter(|key| !key.is_empty())?;
        let value = parts
            .next()
            .map(str::trim)
            .filter(|value| !value.is_empty())?;
        Some((key, value))
    })
}

/// The number a flat-keyed file gives `key`, if the key is there and its value is a number.
pub fn flat_keyed_u64(text: &str, key: &str) -> Option<u64> {
    flat_keyed(text)
        .find(|(k, _)| *k == key)
        .and_then(|(_, value)| value.parse().ok())
}

/// Reads a whole stats file.
pub(crate) fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::ReadStat {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a single-value file.
pub(crate) fn read_u64(path: &Path) -> Result<u64, Error> {
    let text = read_text(path)?;
    parse_u64(&text).ok_or_else(|| Error::ParseStat {
        path: path.to_path_buf(),
        reason: format!("not a number: {:?}", truncated(&text)),
    })
}

/// Reads a `max`-or-number limit file.
pub(crate) fn read_limit(path: &Path) -> Result<Limit, Error> {
    let text = read_text(path)?;
    parse_limit(&text).ok_or_else(|| Error::ParseStat {
        path: path.to_path_buf(),
        reason: format!("not a limit: {:?}", truncated(&text)),
    })
}

/// Looks `key` up in the already-read flat-keyed file `text` (read from `path`).
pub(crate) fn keyed_u64(text: &str, path: &Path, key: &str) -> Result<u64, Error> {
    flat_keyed_u64(text, key).ok_or_else(|| Error::ParseStat {
        path: path.to_path_buf(),
        reason: format!("no numeric {key:?} line"),
    })
}

/// At most the first 64 bytes of `text`, cut at a character boundary, for error messages.
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn test_parse_u64_trailing_newline() {
        assert_eq!(parse_u64("12345\n"), Some(12345));
        assert_eq!(parse_u64("  7 \n\n"), Some(7));
    }

    #[test]
    fn test_parse_u64_rejects_garbage() {
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("max\n"), None);
        assert_eq!(parse_u64("-1\n"), None);
        assert_eq!(parse_u64("12 34\n"), None);
    }

    #[test]
    fn test_parse_limit_max_and_number() {
        assert_eq!(parse_limit("max\n"), Some(Limit::Max));
        assert_eq!(parse_limit("4096\n"), Some(Limit::Value(4096)));
        assert_eq!(parse_limit("maximum\n"), None);
        assert_eq!(Limit::Max.value(), None);
        assert_eq!(Limit::Value(3).value(), Some(3));
    }

    #[test]
    fn test_flat_keyed_skips_blank_and_valueless_lines() {
        let text = "usage_usec 100\n\nlonely\nuser_usec   40 \nsystem_usec 60\n";
        let pairs: Vec<_> = flat_keyed(text).collect();
        assert_eq!(
            pairs,
            vec![
                ("usage_usec", "100"),
                ("user_usec", "40"),
                ("system_usec", "60")
            ]
        );
    }

    #[test]
    fn test_flat_keyed_u64_exact_key_match() {
        let text = "total_cache 10\ncache 5\ninactive_file_x 9\ninactive_file 3\n";
        assert_eq!(flat_keyed_u64(text, "cache"), Some(5));
        assert_eq!(flat_keyed_u64(text, "inactive_file"), Some(3));
        assert_eq!(flat_keyed_u64(text, "missing"), None);
        assert_eq!(flat_keyed_u64("bad x\n", "bad"), None);
    }

    #[test]
    fn test_read_u64_reports_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.current");
        std::fs::write(&path, "oops\n").unwrap();
        let error = read_u64(&path).unwrap_err();
        assert!(
            matches!(error, Error::ParseStat { ref path, .. } if path.ends_with("memory.current"))
        );
        let missing = read_u64(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, Error::ReadStat { .. }));
    }

    #[test]
    fn test_truncated_respects_char_boundary() {
        let text = "é".repeat(40);
        let cut = truncated(&text);
        assert!(cut.len() <= 64);
        assert!(text.starts_with(cut));
    }
}
