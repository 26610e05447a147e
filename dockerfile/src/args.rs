//! BuildKit's per-instruction argument parsers (`line_parsers.go`): how the
//! rest of a logical line becomes the instruction's value list.

use crate::error::ErrorKind;
use crate::flags::{self, FlagWord};
use crate::gostr::{is_space, trim_space};
use crate::json::{self, JsonArray};

/// An instruction's parse node: keyword, flags, values, and the ONBUILD
/// trigger it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) keyword: String,
    pub(crate) flags: Vec<FlagWord>,
    pub(crate) values: Vec<String>,
    pub(crate) json: bool,
    /// Byte range of the trimmed arguments (after flags) in the logical
    /// line; `None` when BuildKit's byte-wise flag scan cut a character.
    pub(crate) rest: Option<std::ops::Range<usize>>,
    pub(crate) trigger: Option<Box<Node>>,
}

impl Node {
    /// The node whose command and values describe the instruction (the
    /// trigger for ONBUILD).
    pub(crate) fn effective(&self) -> &Node {
        self.trigger.as_deref().unwrap_or(self)
    }
}

/// `[\t\v\f\r ]`, BuildKit's `reWhitespace` class.
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Splits `s` on runs of `[\t\v\f\r ]` like Go's `Regexp.Split(s, -1)`
/// (a leading run yields an empty first part, a trailing run an empty last
/// part), returning byte ranges.
pub(crate) fn split_ws(s: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let (mut beg, mut end) = (0, 0);
    let mut i = 0;
    while i < bytes.len() {
        if !is_ws(char::from(bytes[i])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ws(char::from(bytes[i])) {
            i += 1;
        }
        end = start;
        out.push(beg..end);
        beg = i;
    }
    if end != s.len() || s.is_empty() {
        out.push(beg..s.len());
    }
    out
}

/// Splits a logical line into keyword, flags and the rest, then dispatches
/// to the keyword's parser (`newNodeFromLine`). `base` is the offset of
/// `line` within the instruction's logical line.
pub(crate) fn node_from_line(line: &str, base: usize, escape: char) -> Result<Node, ErrorKind> {
    node_from_line_at(line, base, escape, 0)
}

fn node_from_line_at(
    line: &str,
    base: usize,
    escape: char,
    depth: usize,
) -> Result<Node, ErrorKind> {
    let trimmed = trim_space(line);
    let toff = base + offset(line, trimmed);
    let (keyword, after) = match trimmed.find(is_ws) {
        Some(i) => {
            let ws_end = trimmed[i..]
                .find(|c| !is_ws(c))
                .map_or(trimmed.len(), |j| i + j);
            (&trimmed[..i], Some(ws_end))
        }
        None => (trimmed, None),
    };
    let (flag_words, rest_range) = match after {
        Some(start) => {
            let tail = &trimmed[start..];
            let (mut words, rest_at) = flags::extract(tail, escape);
            for w in &mut words {
                w.raw = toff + start + w.raw.start..toff + start + w.raw.end;
            }
            let rest = lossy_tail(tail, rest_at);
            let rest_trimmed = trim_space(&rest);
            let span = match &rest {
                std::borrow::Cow::Borrowed(r) => {
                    let r0 = toff + start + rest_at + offset(r, rest_trimmed);
                    Some(r0..r0 + rest_trimmed.len())
                }
                std::borrow::Cow::Owned(_) => None,
            };
            (words, (span, rest_trimmed.to_owned()))
        }
        None => {
            let end = toff + trimmed.len();
            (Vec::new(), (Some(end..end), String::new()))
        }
    };
    let (rest_span, rest) = rest_range;
    let lower = keyword.to_ascii_lowercase();
    let mut node = Node {
        keyword: keyword.to_owned(),
        flags: flag_words,
        values: Vec::new(),
        json: false,
        rest: rest_span.clone(),
        trigger: None,
    };
    match lower.as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(&rest, &mut node)?,
        "arg" => node.values = parse_words(&rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(&rest, &mut node)?,
        "env" => node.values = name_val(&rest, "ENV", escape)?,
        "label" => node.values = name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => node.values = whitespace_delimited(&rest),
        "healthcheck" => health_config(&rest, &mut node)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.values.push(rest);
            }
        }
        // One level only: BuildKit rejects `ONBUILD ONBUILD` later, and
        // recursing over `ONBUILD ONBUILD ...` would exhaust the stack. The
        // inner ONBUILD keeps BuildKit's shape (one empty value).
        "onbuild" if depth == 0 => {
            if !rest.is_empty() {
                let base = rest_span.as_ref().map_or(0, |r| r.start);
                let trigger = node_from_line_at(&rest, base, escape, 1)?;
                node.trigger = Some(Box::new(trigger));
            }
        }
        // Unknown instructions parse (to one empty value); they fail later.
        _ => node.values.push(String::new()),
    }
    Ok(node)
}

/// Go keeps invalid UTF-8 when it slices mid-character; we cannot, so such a
/// cut yields U+FFFD for the stray bytes.
fn lossy_tail(s: &str, at: usize) -> std::borrow::Cow<'_, str> {
    match s.get(at..) {
        Some(t) => t.into(),
        None => String::from_utf8_lossy(&s.as_bytes()[at..]),
    }
}

/// Byte offset of `part` (a subslice) within `whole`.
pub(crate) fn offset(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest)
        .into_iter()
        .map(|r| rest[r].to_owned())
        .collect()
}

fn maybe_json(rest: &str, node: &mut Node) -> Result<(), ErrorKind> {
    if rest.is_empty() {
        return Ok(());
    }
    if try_json(rest, node)? {
        return Ok(());
    }
    node.values.push(rest.to_owned());
    Ok(())
}

fn maybe_json_to_list(rest: &str, node: &mut Node) -> Result<(), ErrorKind> {
    if try_json(rest, node)? {
        return Ok(());
    }
    node.values = whitespace_delimited(rest);
    Ok(())
}

/// `parseJSON`: true when `rest` is an exec-form array (values set).
fn try_json(rest: &str, node: &mut Node) -> Result<bool, ErrorKind> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(false);
    }
    match json::parse_array(rest) {
        JsonArray::Strings(values) => {
            node.values = values;
            node.json = true;
            Ok(true)
        }
        JsonArray::NotStrings => Err(ErrorKind::JsonNotStringArray),
        JsonArray::Invalid => Ok(false),
    }
}

fn health_config(rest: &str, node: &mut Node) -> Result<(), ErrorKind> {
    // BuildKit scans bytes here; a non-ASCII byte is never a space to it
    // except 0x85 and 0xA0, which cannot start a UTF-8 character.
    let bytes = rest.as_bytes();
    let sep = bytes
        .iter()
        .position(|&b| is_space(char::from(b)))
        .unwrap_or(bytes.len());
    if sep == 0 {
        return Ok(());
    }
    let next = bytes[sep..]
        .iter()
        .position(|&b| !is_space(char::from(b)))
        .map_or(bytes.len(), |i| sep + i);
    let typ = String::from_utf8_lossy(&bytes[..sep]).into_owned();
    let cmd = lossy_tail(rest, next);
    let mut sub = Node {
        values: Vec::new(),
        ..node.clone()
    };
    maybe_json(&cmd, &mut sub)?;
    node.values.push(typ);
    node.values.extend(sub.values);
    node.json = sub.json;
    Ok(())
}

/// `parseWords`: shell-ish words with quotes kept (for ENV, LABEL, ARG).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    loop {
        let Some(mut ch) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                let Some(next) = chars.next() else {
                    continue; // an escape token at the end is dropped
                };
                word.push(ch);
                ch = next;
            }
            word.push(ch);
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            let Some(next) = chars.next() else {
                phase = Phase::Word;
                continue;
            };
            word.push(ch);
            ch = next;
        }
        word.push(ch);
    }
    words
}

/// `parseNameVal` (ENV, LABEL): `[k, v, sep, k, v, sep, ...]` with BuildKit's
/// separator node (`"="` for `k=v`, `""` for the legacy `k v`).
fn name_val(rest: &str, key: &'static str, escape: char) -> Result<Vec<String>, ErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let parts = split_ws_n2(rest);
        let Some((k, v)) = parts else {
            return Err(ErrorKind::MissingValue(key));
        };
        return Ok(vec![k.to_owned(), v.to_owned(), String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals(word));
        };
        out.extend([k.to_owned(), v.to_owned(), "=".to_owned()]);
    }
    Ok(out)
}

/// Go's `reWhitespace.Split(s, 2)` when it yields two parts.
fn split_ws_n2(s: &str) -> Option<(&str, &str)> {
    let i = s.find(is_ws)?;
    let j = s[i..].find(|c| !is_ws(c)).map_or(s.len(), |j| i + j);
    Some((&s[..i], &s[j..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("a b", &["a", "b"])]
    #[case("a  \tb", &["a", "b"])]
    #[case("a", &["a"])]
    #[case("a ", &["a", ""])]
    #[case(" a", &["", "a"])]
    #[case("", &[""])]
    fn splits_like_go(#[case] s: &str, #[case] want: &[&str]) {
        let got: Vec<&str> = split_ws(s).into_iter().map(|r| &s[r]).collect();
        assert_eq!(got, want);
    }

    #[rstest]
    #[case("name=value", &["name=value"])]
    #[case("name=\"a b\" c='d e'", &["name=\"a b\"", "c='d e'"])]
    #[case("a\\ b", &["a\\ b"])]
    #[case("\"\"", &["\"\""])]
    #[case("a\\", &["a"])]
    fn words(#[case] s: &str, #[case] want: &[&str]) {
        assert_eq!(parse_words(s, '\\'), want);
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            name_val("GOPATH /go", "ENV", '\\').unwrap(),
            ["GOPATH", "/go", ""]
        );
        assert_eq!(
            name_val("a=1 b=2", "ENV", '\\').unwrap(),
            ["a", "1", "=", "b", "2", "="]
        );
        assert_eq!(
            name_val("PATH", "ENV", '\\').unwrap_err(),
            ErrorKind::MissingValue("ENV")
        );
        assert_eq!(
            name_val("a=1 b", "ENV", '\\').unwrap_err(),
            ErrorKind::MissingEquals("b".into())
        );
    }

    #[test]
    fn chained_onbuild_does_not_recurse() {
        let line = "ONBUILD ".repeat(5000) + "RUN x";
        let node = node_from_line(&line, 0, '\\').unwrap();
        let trigger = node.trigger.unwrap();
        assert!(trigger.keyword.eq_ignore_ascii_case("onbuild"));
        assert_eq!(trigger.values, [""]);
        assert!(trigger.trigger.is_none());
    }

    #[test]
    fn node_offsets() {
        let line = "  COPY --from=x  a b ";
        let node = node_from_line(line, 0, '\\').unwrap();
        assert_eq!(node.keyword, "COPY");
        assert_eq!(&line[node.flags[0].raw.clone()], "--from=x");
        assert_eq!(&line[node.rest.clone().unwrap()], "a b");
        assert_eq!(node.values, ["a", "b"]);
    }
}
