//! The line format of set files (§7.3).
//!
//! Each line is trimmed; blank lines and lines starting with `#` are skipped;
//! every other line is exactly one `address/prefix`. Line numbers are 1-based
//! and count every line of the file, so errors point at what an editor shows.

use couic_common::Cidr;

/// A line that is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub number: usize,
    /// The offending line, trimmed.
    pub line: String,
    pub reason: String,
}

/// The meaningful lines of `text`: (1-based number, trimmed line).
pub fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Number of meaningful lines, valid or not (what a set listing shows).
pub fn count_entries(text: &str) -> usize {
    content_lines(text).count()
}

fn parse_line(number: usize, line: &str) -> Result<Cidr, LineError> {
    line.parse::<Cidr>().map_err(|e| LineError {
        number,
        line: line.to_string(),
        reason: e.to_string(),
    })
}

/// Every entry of a set file, normalised, in file order (duplicates kept);
/// stops at the first invalid line.
pub fn parse_entries(text: &str) -> Result<Vec<Cidr>, LineError> {
    content_lines(text)
        .map(|(n, line)| parse_line(n, line).map(Cidr::normalized))
        .collect()
}

/// The entries as written (trimmed, comments and blank lines dropped, not
/// normalised), or every invalid line.
pub fn entries_as_written(text: &str) -> Result<Vec<String>, Vec<LineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in content_lines(text) {
        match parse_line(n, line) {
            Ok(_) => entries.push(line.to_string()),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// The file content the API writes for `entries`: joined with `\n`, no
/// trailing newline, no comments.
pub fn render(entries: &[String]) -> String {
    entries.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_blank_and_comment_lines_and_normalises() {
        let text =
            "# office\n\n  10.1.2.3/24  \r\n\t# indented comment\n2001:DB8::1/32\n10.1.2.0/24\n";
        let entries = parse_entries(text).unwrap();
        let shown: Vec<String> = entries.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.1.2.0/24", "2001:db8::/32", "10.1.2.0/24"]);
        assert_eq!(count_entries(text), 3);
        assert_eq!(
            entries_as_written(text).unwrap(),
            ["10.1.2.3/24", "2001:DB8::1/32", "10.1.2.0/24"]
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_valid() {
        assert_eq!(parse_entries("").unwrap(), []);
        assert_eq!(parse_entries("# nothing\n   \n#\n").unwrap(), []);
        assert_eq!(count_entries("#a\n\n"), 0);
    }

    #[test]
    fn first_invalid_line_is_reported_with_its_number() {
        let text = "1.1.1.1/32\n# c\n1.1.1.1\n1.1.1.1/32 # inline\n";
        let err = parse_entries(text).unwrap_err();
        assert_eq!((err.number, err.line.as_str()), (3, "1.1.1.1"));
        assert_eq!(err.reason, "invalid IP address syntax");
        let all = entries_as_written(text).unwrap_err();
        let numbers: Vec<usize> = all.iter().map(|e| e.number).collect();
        assert_eq!(numbers, [3, 4]);
    }

    #[test]
    fn count_includes_invalid_lines() {
        assert_eq!(count_entries("x\n1.1.1.1/32\n #y\n"), 2);
    }

    #[test]
    fn render_has_no_trailing_newline() {
        assert_eq!(
            render(&["1.1.1.1/32".into(), "::/0".into()]),
            "1.1.1.1/32\n::/0"
        );
        assert_eq!(render(&[]), "");
    }
}
