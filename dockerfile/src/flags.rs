//! Builder flags (`--name=value` words after the instruction keyword):
//! extraction exactly as BuildKit's `extractBuilderFlags`, and validation as
//! its `BFlags`.

use std::ops::Range;

use crate::error::ErrorKind;
use crate::gostr::is_space;

/// One flag word: its text with quotes/escapes processed, and its raw byte
/// range in the instruction's logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagWord {
    pub(crate) text: String,
    pub(crate) raw: Range<usize>,
}

/// Splits leading `--` words off `line` (BuildKit works byte by byte here, so
/// each non-ASCII byte becomes the Latin-1 character of that value, as in
/// BuildKit). Returns the flags and the byte offset where the rest starts.
pub(crate) fn extract(line: &str, escape: char) -> (Vec<FlagWord>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let at_end = pos == bytes.len();
        let ch = if at_end { 0 } else { bytes[pos] };
        let space = !at_end && is_space(char::from(ch));
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if space {
                pos += 1;
                continue;
            }
            if ch != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (words, pos);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(FlagWord {
                    text: word,
                    raw: word_start..pos,
                });
            }
            break;
        }
        if phase == Phase::Word {
            if space {
                phase = Phase::Spaces;
                if word == "--" {
                    return (words, pos);
                }
                if blank_ok || !word.is_empty() {
                    words.push(FlagWord {
                        text: std::mem::take(&mut word),
                        raw: word_start..pos,
                    });
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
        } else if ch == quote {
            // Phase::Quote ends.
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        // A character of the word; the escape token takes the next byte
        // literally and is dropped at the very end of the line (which also
        // ends an open quote).
        if u32::from(ch) == u32::from(escape) {
            pos += 1;
            let Some(&next) = bytes.get(pos) else {
                phase = Phase::Word;
                continue;
            };
            word.push(char::from(next));
        } else {
            word.push(char::from(ch));
        }
        pos += 1;
    }
    (words, bytes.len())
}

/// The kinds of flag an instruction declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagType {
    /// `--name=value`, at most once.
    String,
    /// `--name=value`, any number of times.
    Strings,
}

/// BuildKit's `BFlags.Parse` for the declared `(name, type)` pairs. Returns
/// the values given for each declared flag, in declaration order.
pub(crate) fn parse(
    words: &[String],
    declared: &[(&str, FlagType)],
) -> Result<Vec<Vec<String>>, ErrorKind> {
    let mut values: Vec<Vec<String>> = vec![Vec::new(); declared.len()];
    let mut used = vec![false; declared.len()];
    for word in words {
        if word == "--" {
            break;
        }
        let Some(body) = word.strip_prefix("--") else {
            return Err(ErrorKind::NotAFlag(word.clone()));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(i) = declared.iter().position(|(n, _)| *n == name) else {
            return Err(ErrorKind::UnknownFlag(name.to_owned()));
        };
        if used[i] && declared[i].1 != FlagType::Strings {
            return Err(ErrorKind::DuplicateFlag(name.to_owned()));
        }
        used[i] = true;
        let Some(value) = value else {
            return Err(ErrorKind::MissingFlagValue(name.to_owned()));
        };
        values[i].push(value.to_owned());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn texts(line: &str) -> (Vec<String>, &str) {
        let (words, rest) = extract(line, '\\');
        (words.into_iter().map(|w| w.text).collect(), &line[rest..])
    }

    #[rstest]
    #[case("foo /tmp/", &[], "foo /tmp/")]
    #[case("--user=me foo /tmp/", &["--user=me"], "foo /tmp/")]
    #[case("--doit=true -- foo /tmp/", &["--doit=true"], " foo /tmp/")]
    #[case("-- foo", &[], " foo")]
    #[case("--a=\"x y\" --b='' c", &["--a=x y", "--b="], "c")]
    #[case("--a=\\\"x c", &["--a=\"x"], "c")]
    #[case("--platform", &["--platform"], "")]
    #[case("--a=b\\", &["--a=b"], "")]
    #[case("--a=\"b\\", &["--a=b"], "")]
    #[case("--x -y", &["--x"], "-y")]
    fn extracts(#[case] line: &str, #[case] flags: &[&str], #[case] rest: &str) {
        let (got, got_rest) = texts(line);
        assert_eq!(got, flags);
        assert_eq!(got_rest, rest);
    }

    #[test]
    fn raw_ranges_point_at_the_words() {
        let line = "--from=a  --link x";
        let (words, _) = extract(line, '\\');
        assert_eq!(&line[words[0].raw.clone()], "--from=a");
        assert_eq!(&line[words[1].raw.clone()], "--link");
    }

    #[test]
    fn validates_like_bflags() {
        let decl = [("platform", FlagType::String)];
        let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse(&w(&["--platform=a"]), &decl).unwrap(),
            vec![vec!["a".to_owned()]]
        );
        assert_eq!(
            parse(&w(&["--foo"]), &decl).unwrap_err(),
            ErrorKind::UnknownFlag("foo".into())
        );
        assert_eq!(
            parse(&w(&["--platform=a", "--platform=b"]), &decl).unwrap_err(),
            ErrorKind::DuplicateFlag("platform".into())
        );
        assert_eq!(
            parse(&w(&["--platform"]), &decl).unwrap_err(),
            ErrorKind::MissingFlagValue("platform".into())
        );
    }
}
