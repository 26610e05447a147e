//! One CSV record the way BuildKit reads cache options.
//!
//! buildctl and buildx read `--import-cache`/`--export-cache`/
//! `--cache-from`/`--cache-to` values as one CSV record: older releases
//! with Go's `encoding/csv` (`csv.NewReader(..).Read()`), current ones with
//! `github.com/tonistiigi/go-csvvalue`, a single-line re-implementation
//! checked against `encoding/csv`. With default settings (comma `,`, no
//! lazy quotes, no leading-space trimming) both:
//!
//! - split fields at `,`;
//! - treat a field starting with `"` as quoted: it runs to the next `"`
//!   that is not doubled, `""` inside stands for one `"`, and the closing
//!   quote must be followed by `,` or the end (else "extraneous or missing
//!   `\"` in quoted-field"); an unclosed quote is the same error;
//! - reject a `"` anywhere in an unquoted field ("bare `\"` in non-quoted
//!   field");
//! - accept one trailing `\n` or `\r\n`, and fail on empty input.
//!
//! The two readers disagree on line breaks elsewhere (`encoding/csv` ends
//! the record at an unquoted newline and turns a quoted `\r\n` into `\n`;
//! go-csvvalue keeps both), so a CR or LF anywhere else is rejected here
//! rather than given either meaning; NUL is rejected because it cannot be
//! passed in an argv item.
//!
//! Columns are 1-based byte offsets, as Go's `csv.ParseError` reports them.

use crate::option::OptionErrorKind;

/// One field and the 1-based byte column where it starts.
pub(crate) type Field = (String, usize);

/// Splits one record. On error, returns the 1-based column and the kind.
pub(crate) fn split(input: &str) -> Result<Vec<Field>, (usize, OptionErrorKind)> {
    let line = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(input);
    if line.is_empty() {
        return Err((1, OptionErrorKind::Empty));
    }
    if let Some(at) = line.find(['\r', '\n']) {
        return Err((at + 1, OptionErrorKind::LineBreak));
    }
    if let Some(at) = line.find('\0') {
        return Err((at + 1, OptionErrorKind::Nul));
    }

    let b = line.as_bytes();
    let mut fields = Vec::new();
    let mut pos = 0;
    loop {
        let start = pos;
        if b.get(pos) != Some(&b'"') {
            // Unquoted: up to the next comma; no quote allowed.
            let end = line[pos..].find(',').map_or(line.len(), |i| pos + i);
            let field = &line[pos..end];
            if let Some(j) = field.find('"') {
                return Err((pos + j + 1, OptionErrorKind::BareQuote));
            }
            fields.push((field.to_owned(), start + 1));
            if end == line.len() {
                return Ok(fields);
            }
            pos = end + 1;
            continue;
        }
        // Quoted.
        pos += 1;
        let mut field = String::new();
        loop {
            let Some(i) = line[pos..].find('"') else {
                return Err((pos + 1, OptionErrorKind::Quote));
            };
            field.push_str(&line[pos..pos + i]);
            pos += i + 1;
            match b.get(pos) {
                Some(b'"') => {
                    field.push('"');
                    pos += 1;
                }
                Some(b',') => {
                    fields.push((field, start + 1));
                    pos += 1;
                    break;
                }
                None => {
                    fields.push((field, start + 1));
                    return Ok(fields);
                }
                Some(_) => return Err((pos, OptionErrorKind::Quote)),
            }
        }
    }
}

/// Appends `field`, quoted exactly when Go's `csv.Writer` would quote it:
/// when it contains `,`, `"`, `\r` or `\n`, or starts with white space.
/// (`csv.Writer` also quotes the lone field `\.`; a `key=value` field never
/// is one.) Either reader gives back `field` unchanged.
pub(crate) fn write_field(out: &mut String, field: &str) {
    let needs_quotes = field.contains([',', '"', '\r', '\n'])
        || field.chars().next().is_some_and(char::is_whitespace);
    if !needs_quotes {
        out.push_str(field);
        return;
    }
    out.push('"');
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn fields(input: &str) -> Vec<String> {
        split(input).unwrap().into_iter().map(|(f, _)| f).collect()
    }

    // Cases from Go's encoding/csv reader behaviour (the shared table of
    // go-csvvalue's tests runs both readers on them).
    #[rstest]
    #[case("foo,bar,baz", &["foo", "bar", "baz"])]
    #[case("foo,bar,baz\n", &["foo", "bar", "baz"])]
    #[case("foo,bar,baz\r\n", &["foo", "bar", "baz"])]
    #[case(" ", &[" "])]
    #[case("   foo,bar", &["   foo", "bar"])]
    #[case("a,\"b,cc ,ddd\",e", &["a", "b,cc ,ddd", "e"])]
    #[case("\"\"", &[""])]
    #[case("a,\"foo\"\"\",c", &["a", "foo\"", "c"])]
    #[case("a,,b", &["a", "", "b"])]
    #[case("a,b,", &["a", "b", ""])]
    #[case(",a,b", &["", "a", "b"])]
    #[case(",,", &["", "", ""])]
    #[case("\"a\",b,\"c\"", &["a", "b", "c"])]
    fn splits_like_go(#[case] input: &str, #[case] want: &[&str]) {
        assert_eq!(fields(input), want);
    }

    #[rstest]
    #[case("", 1, OptionErrorKind::Empty)]
    #[case("\n", 1, OptionErrorKind::Empty)]
    #[case("\r\n", 1, OptionErrorKind::Empty)]
    #[case("\"", 2, OptionErrorKind::Quote)]
    #[case("\"\"\"", 4, OptionErrorKind::Quote)]
    #[case("foo,aa\"bb,cc", 7, OptionErrorKind::BareQuote)]
    #[case("a\"\"b,c", 2, OptionErrorKind::BareQuote)]
    #[case("a \"word\",\"b\"", 3, OptionErrorKind::BareQuote)]
    #[case("\"a word\",b\"", 11, OptionErrorKind::BareQuote)]
    #[case("\"a \"word\",\"b\"", 4, OptionErrorKind::Quote)]
    #[case("a,b\nc", 4, OptionErrorKind::LineBreak)]
    #[case("a,\"b\nc\"", 5, OptionErrorKind::LineBreak)]
    #[case("a\r", 2, OptionErrorKind::LineBreak)]
    #[case("a\n\n", 2, OptionErrorKind::LineBreak)]
    #[case("a\0b", 2, OptionErrorKind::Nul)]
    // A field that does not start with a quote has bare quotes.
    #[case("k=\"\"\"x\"\"\"", 3, OptionErrorKind::BareQuote)]
    fn rejects_like_go(#[case] input: &str, #[case] column: usize, #[case] kind: OptionErrorKind) {
        assert_eq!(split(input).unwrap_err(), (column, kind));
    }

    #[test]
    fn columns_point_at_field_starts() {
        let got = split("a=1,\"b=2\",c=3").unwrap();
        let cols: Vec<usize> = got.iter().map(|(_, c)| *c).collect();
        assert_eq!(cols, [1, 5, 11]);
    }

    #[rstest]
    #[case("plain", "plain")]
    #[case("k=a,b", "\"k=a,b\"")]
    #[case("k=\"q\"", "\"k=\"\"q\"\"\"")]
    #[case(" lead", "\" lead\"")]
    #[case("k= inner", "k= inner")]
    #[case("k=a\u{a0}", "k=a\u{a0}")]
    #[case("\u{a0}k", "\"\u{a0}k\"")]
    #[case("", "")]
    fn quotes_like_go_writer(#[case] field: &str, #[case] want: &str) {
        let mut out = String::new();
        write_field(&mut out, field);
        assert_eq!(out, want);
    }

    #[test]
    fn written_fields_read_back() {
        for field in [
            "a",
            "k=,",
            "k=\"",
            "k=\"\"",
            "\"",
            ",",
            "k=a,\"b\",c",
            " x",
            "k==",
        ] {
            let mut out = String::new();
            write_field(&mut out, field);
            out.push(',');
            write_field(&mut out, "z");
            assert_eq!(fields(&out), [field, "z"], "{out}");
        }
    }
}
