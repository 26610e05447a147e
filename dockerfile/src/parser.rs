//! The physical-line scanner and instruction assembly: BuildKit's
//! `parser.Parse` (directives, continuations, comments, heredoc bodies), with
//! the byte span of every piece kept so tools can map back to the file.

use std::ops::Range;

use crate::args::{self, Node};
use crate::directives::{Directive, DirectiveParser};
use crate::error::{Error, ErrorKind};
use crate::gostr::is_space;
use crate::heredoc::{self, Heredoc};
use crate::instruction::{Instruction, Segment};

/// The longest token BuildKit's `bufio.Scanner` accepts (line + `\n`).
const MAX_TOKEN: usize = 64 * 1024;

/// A parsed Dockerfile: its directives, instructions and parser warnings.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub(crate) source: String,
    pub(crate) escape: char,
    pub(crate) directives: Vec<Directive>,
    pub(crate) instructions: Vec<Instruction>,
    pub(crate) warnings: Vec<String>,
}

/// Physical lines of the input, each with its line ending, stopping (like
/// Go's scanner) at the first line longer than BuildKit allows.
struct Lines<'a> {
    src: &'a str,
    pos: usize,
    too_long: bool,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        if self.pos >= self.src.len() || self.too_long {
            return None;
        }
        let rest = &self.src[self.pos..];
        let len = match memchr_newline(rest.as_bytes()) {
            Some(i) if i < MAX_TOKEN => i + 1,
            None if rest.len() < MAX_TOKEN => rest.len(),
            _ => {
                self.too_long = true;
                return None;
            }
        };
        let start = self.pos;
        self.pos += len;
        Some((start, &rest[..len]))
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Go's `bytes.TrimRight(line, "\r\n")`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn trim_leading_space(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

fn is_comment(raw: &str) -> bool {
    trim_leading_space(trim_newline(raw)).starts_with('#')
}

/// Removes a trailing line-continuation token (`\` or the escape token,
/// followed only by blanks, and not itself escaped). Returns the kept part
/// and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() || !before.ends_with(escape) {
        (before, false)
    } else {
        (line, true)
    }
}

impl Dockerfile {
    /// Parses a Dockerfile held in memory.
    ///
    /// # Errors
    ///
    /// Every error BuildKit's parser reports (no instructions, bad or repeated
    /// directives, non-string JSON arrays, `ENV` without a value, unterminated
    /// heredocs, over-long lines), with BuildKit's line. Errors of later
    /// stages (unknown instructions, `FROM` arity, ...) come from
    /// [`Dockerfile::stages`].
    pub fn parse(src: &str) -> Result<Self, Error> {
        Parser::new(src).run()
    }

    /// Parses bytes, rejecting input that is not UTF-8 with the line of the
    /// first bad byte.
    ///
    /// # Errors
    ///
    /// As [`Dockerfile::parse`], plus [`ErrorKind::InvalidUtf8`].
    pub fn parse_bytes(src: &[u8]) -> Result<Self, Error> {
        match std::str::from_utf8(src) {
            Ok(s) => Self::parse(s),
            Err(e) => {
                let line = src[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                Err(Error::at(ErrorKind::InvalidUtf8, line))
            }
        }
    }

    /// The source text this was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The escape token in effect (`\` or backtick).
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Parser directives from the top of the file, in order.
    pub fn directives(&self) -> &[Directive] {
        &self.directives
    }

    /// The instructions, in file order.
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// The 1-based column, in characters, of source byte `offset`.
    pub(crate) fn column_at(&self, offset: usize) -> usize {
        let before = self.source.get(..offset).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        before[line_start..].chars().count() + 1
    }

    /// The column of logical-line byte `at` of instruction `index`.
    pub(crate) fn column_in(&self, index: usize, at: usize) -> Option<usize> {
        let ranges = self.instructions.get(index)?.source_ranges(at..at + 1);
        ranges.first().map(|r| self.column_at(r.start))
    }

    /// Parser warnings (empty continuation lines), as BuildKit words them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

struct Parser<'a> {
    src: &'a str,
    lines: Lines<'a>,
    directives: DirectiveParser,
    current_line: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            lines: Lines {
                src,
                pos: 0,
                too_long: false,
            },
            directives: DirectiveParser::default(),
            current_line: 0,
        }
    }

    fn run(mut self) -> Result<Dockerfile, Error> {
        let mut instructions = Vec::new();
        let mut warnings = Vec::new();
        while let Some((mut start, mut raw)) = self.lines.next_line() {
            if self.current_line == 0
                && let Some(r) = raw.strip_prefix('\u{feff}')
            {
                raw = r;
                start += 3;
            }
            let text = trim_leading_space(trim_newline(raw));
            let text_at = start + (raw.len() - raw.trim_start_matches(is_space).len());
            self.directives
                .line(text, text_at, self.current_line + 1)
                .map_err(|k| Error::at(k, self.current_line))?;
            let text = if text.starts_with('#') { "" } else { text };
            self.current_line += 1;
            let start_line = self.current_line;
            let escape = self.directives.escape();

            let (piece, mut end) = trim_continuation(text, escape);
            if end && piece.is_empty() {
                continue;
            }
            let mut logical = String::with_capacity(piece.len());
            let mut segments = Vec::with_capacity(1);
            push_piece(&mut logical, &mut segments, piece, text_at);
            let span_start = start;
            let mut span_end = start + raw.len();
            let mut empty_continuation = false;
            while !end {
                let Some((cstart, craw)) = self.lines.next_line() else {
                    break;
                };
                let ctext = trim_newline(craw);
                self.directives
                    .line(ctext, cstart, self.current_line + 1)
                    .map_err(|k| Error::at(k, self.current_line))?;
                self.current_line += 1;
                span_end = cstart + craw.len();
                if is_comment(craw) {
                    continue;
                }
                if trim_leading_space(ctext).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (cpiece, cend) = trim_continuation(ctext, escape);
                end = cend;
                push_piece(&mut logical, &mut segments, cpiece, cstart);
            }
            if empty_continuation {
                warnings.push(format!("Empty continuation line found in: {logical}"));
            }
            let node =
                args::node_from_line(&logical, 0, escape).map_err(|k| Error::at(k, start_line))?;
            let mut heredocs = Vec::new();
            if can_contain_heredoc(&node) && logical.contains("<<") {
                for mut doc in heredoc::from_line(&logical) {
                    span_end = self.read_heredoc_body(&mut doc, start_line)?;
                    heredocs.push(doc);
                }
            }
            instructions.push(Instruction {
                node,
                original: logical,
                start_line,
                end_line: self.current_line,
                span: span_start..span_end,
                segments,
                heredocs,
            });
        }
        if instructions.is_empty() {
            return Err(Error::at(ErrorKind::NoInstructions, self.current_line));
        }
        if self.lines.too_long {
            return Err(Error::at(ErrorKind::LineTooLong, self.current_line));
        }
        let escape = self.directives.escape();
        Ok(Dockerfile {
            source: self.src.to_owned(),
            escape,
            directives: self.directives.into_directives(),
            instructions,
            warnings,
        })
    }

    /// Reads body lines up to the terminator; returns the span end.
    fn read_heredoc_body(&mut self, doc: &mut Heredoc, start_line: usize) -> Result<usize, Error> {
        while let Some((start, raw)) = self.lines.next_line() {
            self.current_line += 1;
            let mut candidate = trim_newline(raw);
            if doc.chomp {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == doc.name {
                return Ok(start + raw.len());
            }
            doc.content.push_str(raw);
        }
        Err(Error::at(ErrorKind::UnterminatedHeredoc, start_line))
    }
}

fn push_piece(logical: &mut String, segments: &mut Vec<Segment>, piece: &str, at: usize) {
    if piece.is_empty() {
        return;
    }
    segments.push(Segment {
        logical: logical.len(),
        source: at,
        len: piece.len(),
    });
    logical.push_str(piece);
}

/// ADD, COPY and RUN (also as ONBUILD triggers) in shell form.
fn can_contain_heredoc(node: &Node) -> bool {
    let n = node.effective();
    ["add", "copy", "run"]
        .iter()
        .any(|k| n.keyword.eq_ignore_ascii_case(k))
        && !n.json
}

/// Byte range helper for callers mapping logical offsets.
pub(crate) fn map_range(segments: &[Segment], r: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for s in segments {
        let (a, b) = (r.start.max(s.logical), r.end.min(s.logical + s.len));
        if a < b {
            out.push(s.source + (a - s.logical)..s.source + (b - s.logical));
        } else if r.start == r.end && r.start >= s.logical && r.start <= s.logical + s.len {
            out.push(s.source + (r.start - s.logical)..s.source + (r.start - s.logical));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_token() {
        assert_eq!(trim_continuation("RUN a \\", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a \\  \t", '\\'), ("RUN a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("RUN a \\\\", '\\'), ("RUN a \\\\", true));
        assert_eq!(trim_continuation("RUN a `", '`'), ("RUN a ", false));
        assert_eq!(trim_continuation("RUN a", '\\'), ("RUN a", true));
    }

    #[test]
    fn spans_and_lines() {
        let src = "# syntax=x\nFROM alp\\\n# c\n\nine:3.19 AS b\nRUN <<EOF\nFROM evil\nEOF\n";
        let df = Dockerfile::parse(src).unwrap();
        let [from, run] = df.instructions() else {
            panic!("two instructions expected");
        };
        assert_eq!(from.original(), "FROM alpine:3.19 AS b");
        assert_eq!((from.start_line(), from.end_line()), (2, 5));
        assert_eq!(&src[from.span()], "FROM alp\\\n# c\n\nine:3.19 AS b\n");
        assert_eq!(run.heredocs()[0].content, "FROM evil\n");
        assert_eq!((run.start_line(), run.end_line()), (6, 8));
        assert_eq!(df.warnings().len(), 1);
    }

    #[test]
    fn line_limits() {
        let ok = format!("FROM {}\n", "a".repeat(MAX_TOKEN - 6));
        assert!(Dockerfile::parse(&ok).is_ok());
        let long = format!("FROM a\nRUN {}\n", "a".repeat(MAX_TOKEN));
        let err = Dockerfile::parse(&long).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::LineTooLong);
        assert_eq!(err.line(), Some(1));
        let first = format!("RUN {}\n", "a".repeat(MAX_TOKEN));
        assert_eq!(
            Dockerfile::parse(&first).unwrap_err().kind(),
            &ErrorKind::NoInstructions
        );
    }

    #[test]
    fn errors_carry_buildkit_lines() {
        let e = Dockerfile::parse("FROM a\nENV PATH\n").unwrap_err();
        assert_eq!(
            (e.kind(), e.line()),
            (&ErrorKind::MissingValue("ENV"), Some(2))
        );
        let e = Dockerfile::parse("# escape=x\nFROM a\n").unwrap_err();
        assert_eq!(e.line(), None);
        let e = Dockerfile::parse("").unwrap_err();
        assert_eq!((e.kind(), e.line()), (&ErrorKind::NoInstructions, None));
        let e = Dockerfile::parse("FROM a\nRUN <<EOF\nx\n").unwrap_err();
        assert_eq!(
            (e.kind(), e.line()),
            (&ErrorKind::UnterminatedHeredoc, Some(2))
        );
    }

    #[test]
    fn invalid_utf8_is_typed() {
        let e = Dockerfile::parse_bytes(b"FROM a\nRUN \xff\n").unwrap_err();
        assert_eq!((e.kind(), e.line()), (&ErrorKind::InvalidUtf8, Some(2)));
    }
}
