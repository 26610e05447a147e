//! Parser directives (`# syntax=`, `# escape=`, `# check=`) from the
//! unbroken block of lines at the top of the file, and BuildKit's
//! `DetectSyntax` for choosing the frontend image.

use std::ops::Range;

use serde::Serialize;

use crate::error::ErrorKind;

/// One parser directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed as BuildKit trims it.
    pub value: String,
    /// 1-based line.
    pub line: usize,
    /// Byte range of the value in the source.
    #[serde(skip)]
    pub value_span: Range<usize>,
}

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// Go's RE2 `\s`.
fn is_re_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// Matches `^<prefix>\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, returning the
/// key and the value's byte range in `line`.
pub(crate) fn match_directive<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, Range<usize>)> {
    let b = line.as_bytes();
    let mut i = prefix.len();
    if !line.starts_with(prefix) {
        return None;
    }
    while i < b.len() && is_re_space(b[i]) {
        i += 1;
    }
    let key_start = i;
    if !b.get(i).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    while i < b.len() && b[i].is_ascii_alphanumeric() {
        i += 1;
    }
    let key = &line[key_start..i];
    while i < b.len() && is_re_space(b[i]) {
        i += 1;
    }
    if b.get(i) != Some(&b'=') {
        return None;
    }
    let after_eq = i + 1;
    let body = &line[after_eq..];
    if body.is_empty() || body.contains('\n') {
        return None;
    }
    let lead = body.bytes().take_while(|&c| is_re_space(c)).count();
    let trail = body.bytes().rev().take_while(|&c| is_re_space(c)).count();
    let value = if lead == body.len() {
        // All blanks: the lazy `.+?` still takes one character, the last.
        after_eq + body.len() - 1..after_eq + body.len()
    } else {
        after_eq + lead..after_eq + body.len() - trail
    };
    Some((key, value))
}

/// The directive parser state while lines are read.
#[derive(Debug)]
pub(crate) struct DirectiveParser {
    done: bool,
    escape: char,
    found: Vec<Directive>,
}

impl Default for DirectiveParser {
    fn default() -> Self {
        Self {
            done: false,
            escape: '\\',
            found: Vec::new(),
        }
    }
}

impl DirectiveParser {
    /// Offers one line (newline trimmed; left-trimmed for first lines) that
    /// starts at byte `at` of the source and is on line `line`.
    pub(crate) fn line(&mut self, text: &str, at: usize, line: usize) -> Result<(), ErrorKind> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(text, "#") else {
            self.done = true;
            return Ok(());
        };
        let name = key.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(());
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ErrorKind::DuplicateDirective(name));
        }
        let value_text = &text[value.clone()];
        if name == "escape" {
            self.escape = match value_text {
                "\\" => '\\',
                "`" => '`',
                other => return Err(ErrorKind::InvalidEscapeToken(other.to_owned())),
            };
        }
        self.found.push(Directive {
            name,
            value: value_text.to_owned(),
            line,
            value_span: at + value.start..at + value.end,
        });
        Ok(())
    }

    pub(crate) fn escape(&self) -> char {
        self.escape
    }

    pub(crate) fn into_directives(self) -> Vec<Directive> {
        self.found
    }
}

/// The frontend image named by the file, as BuildKit's `DetectSyntax` finds
/// it: `# syntax=` (after an optional BOM and shebang line), else
/// `// syntax=`, else a JSON object's `"syntax"` key. Returns the image (the
/// value up to the first space), its line and its byte range in `src`.
pub fn detect_syntax(src: &str) -> Option<(String, usize, Range<usize>)> {
    let mut offset = 0;
    let mut text = src;
    if let Some(t) = text.strip_prefix('\u{feff}') {
        text = t;
        offset += 3;
    }
    let mut line = 0;
    if text.starts_with("#!") {
        let cut = text.find('\n').map_or(text.len(), |i| i + 1);
        text = &text[cut..];
        offset += cut;
        line = 1;
    }
    for prefix in ["#", "//"] {
        if let Some(found) = scan_directives(text, prefix, line) {
            let (value, l, span) = found;
            let image = value.split(' ').next().unwrap_or_default();
            let span = offset + span.start..offset + span.start + image.len();
            return Some((image.to_owned(), l, span));
        }
    }
    // Go decodes the whole file as a `map[string]string`.
    let map: std::collections::HashMap<String, String> = serde_json::from_str(text).ok()?;
    map.get("syntax").map(|v| (v.clone(), line, 0..0))
}

/// BuildKit's `DirectiveParser.ParseAll` over `bufio.ScanLines` lines (one
/// trailing `\r` dropped, no left-trim), looking for `syntax`.
fn scan_directives(
    text: &str,
    prefix: &str,
    first_line: usize,
) -> Option<(String, usize, Range<usize>)> {
    let mut seen: Vec<String> = Vec::new();
    let mut line_no = first_line;
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let raw = &text[pos..end];
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        line_no += 1;
        let (key, value) = match_directive(line, prefix)?;
        let name = key.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) || seen.contains(&name) {
            return None;
        }
        if name == "syntax" {
            return Some((
                line[value.clone()].to_owned(),
                line_no,
                pos + value.start..pos + value.end,
            ));
        }
        seen.push(name);
        pos = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("# syntax=docker/dockerfile:1", Some(("syntax", "docker/dockerfile:1")))]
    #[case("#escape = `  ", Some(("escape", "`")))]
    #[case("# escape=   ", Some(("escape", " ")))]
    #[case("# escape=", None)]
    #[case("# 1x=y", None)]
    #[case("#!/bin/sh", None)]
    fn matches(#[case] line: &str, #[case] want: Option<(&str, &str)>) {
        let got = match_directive(line, "#").map(|(k, v)| (k, &line[v]));
        assert_eq!(got, want);
    }

    #[test]
    fn rules_of_the_block() {
        let mut p = DirectiveParser::default();
        p.line("# escape=`", 0, 1).unwrap();
        assert_eq!(p.escape(), '`');
        assert_eq!(
            p.line("# Escape=`", 0, 2).unwrap_err(),
            ErrorKind::DuplicateDirective("escape".into())
        );
        p.line("FROM x", 0, 3).unwrap();
        p.line("# syntax=y", 0, 4).unwrap();
        assert_eq!(p.into_directives().len(), 1);
        let mut p = DirectiveParser::default();
        assert_eq!(
            p.line("# escape=x", 0, 1).unwrap_err(),
            ErrorKind::InvalidEscapeToken("x".into())
        );
    }

    #[rstest]
    #[case("# syntax=docker/dockerfile:1.7 x=y\nFROM a", Some(("docker/dockerfile:1.7", 1)))]
    #[case("#!/bin/sh\n# syntax=a/b\n", Some(("a/b", 2)))]
    #[case("// syntax=a/b\n", Some(("a/b", 1)))]
    #[case("{\"syntax\": \"a/b\"}", Some(("a/b", 0)))]
    #[case("\n# syntax=a/b\n", None)]
    #[case("  # syntax=a/b\n", None)]
    fn detects_syntax(#[case] src: &str, #[case] want: Option<(&str, usize)>) {
        let got = detect_syntax(src);
        assert_eq!(got.as_ref().map(|(v, l, _)| (v.as_str(), *l)), want);
        if let Some((v, _, span)) = got
            && span != (0..0)
        {
            assert_eq!(&src[span], v);
        }
    }
}
