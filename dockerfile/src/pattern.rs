//! Shell patterns in `${V#p}`, `${V%p}` and `${V/p/r}`, matched exactly as
//! BuildKit's `convertShellPatternToRegex` + Go `regexp` do, without a regex
//! engine and in `O(len(pattern) * len(value))`.
//!
//! The pattern language is: `*` (any run of characters but `\n`), `?` (one
//! character but `\n`), `\*`, `\?`, `\\` (literals), `\}` and `\/` (the
//! backslash is dropped); anything else is literal. Every `*` in a pattern
//! is either lazy or greedy; for such patterns Go's leftmost-first match from
//! a fixed start ends at the smallest (lazy) or largest (greedy) end any match
//! could have.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
}

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
    greedy: bool,
}

impl Pattern {
    /// Compiles `pattern`; the error is BuildKit's text.
    pub(crate) fn new(pattern: &str, greedy: bool) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut chars = skip_bom(pattern).chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => tokens.push(Token::AnyRun),
                '?' => tokens.push(Token::AnyOne),
                '\\' => match chars.peek() {
                    Some('}' | '/') => {}
                    Some(&next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        tokens.push(Token::Literal(next));
                    }
                    Some(&other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\\u{fffd}'".to_owned()),
                },
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Self { tokens, greedy })
    }

    /// The end (in chars) of the match that starts at `start`, if any.
    fn match_from(&self, value: &[char], start: usize) -> Option<usize> {
        // reach[i] = the pattern can have consumed value[start..i] so far.
        let n = value.len();
        let mut reach = vec![false; n + 1];
        reach[start] = true;
        for token in &self.tokens {
            let mut next = vec![false; n + 1];
            match *token {
                Token::Literal(c) => {
                    for i in start..n {
                        if reach[i] && value[i] == c {
                            next[i + 1] = true;
                        }
                    }
                }
                Token::AnyOne => {
                    for i in start..n {
                        if reach[i] && value[i] != '\n' {
                            next[i + 1] = true;
                        }
                    }
                }
                Token::AnyRun => {
                    let mut run = false;
                    for i in start..=n {
                        run = reach[i] || (run && value[i - 1] != '\n');
                        next[i] = run;
                    }
                }
            }
            reach = next;
        }
        let mut ends = (start..=n).filter(|&i| reach[i]);
        if self.greedy {
            ends.next_back()
        } else {
            ends.next()
        }
    }

    /// Leftmost match `(start, end)` at or after `from`, in chars.
    fn find(&self, value: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=value.len()).find_map(|s| self.match_from(value, s).map(|e| (s, e)))
    }
}

fn skip_bom(s: &str) -> &str {
    // Go's text/scanner ignores a byte-order mark at the very start.
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

/// `${value#pattern}` / `${value##pattern}`.
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let compiled = Pattern::new(pattern, greedy).map_err(|e| invalid(pattern, &e))?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match compiled.match_from(&chars, 0) {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_owned(),
    })
}

/// `${value%pattern}` / `${value%%pattern}`: BuildKit reverses both and trims
/// a prefix.
pub(crate) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

fn invalid(pattern: &str, reason: &str) -> String {
    format!("invalid pattern ({pattern}) in substitution: {reason}")
}

/// Reverses a pattern but keeps `\x` pairs in order (BuildKit `reversePattern`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; chars.len()];
    let last = chars.len().wrapping_sub(1);
    let mut i = 0;
    while i < chars.len() {
        let out_idx = last - i;
        if chars[i] == '\\' && i != last {
            out[out_idx - 1] = '\\';
            out[out_idx] = chars[i + 1];
            i += 2;
        } else {
            out[out_idx] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${value/pattern/replacement}` (first) and `${value//pattern/replacement}` (all).
pub(crate) fn replace(
    pattern: &str,
    replacement: &str,
    value: &str,
    all: bool,
) -> Result<String, String> {
    let compiled = Pattern::new(pattern, true).map_err(|e| invalid(pattern, &e))?;
    let chars: Vec<char> = value.chars().collect();
    if !all {
        return Ok(match compiled.find(&chars, 0) {
            Some((s, e)) => {
                let mut out: String = chars[..s].iter().collect();
                out.push_str(replacement);
                out.extend(&chars[e..]);
                out
            }
            None => value.to_owned(),
        });
    }
    // Go's Regexp.ReplaceAllString, including its `$` template expansion.
    let template = expand_template(replacement);
    let mut out = String::new();
    let (mut search, mut last_end) = (0, 0);
    while search <= chars.len() {
        let Some((s, e)) = compiled.find(&chars, search) else {
            break;
        };
        out.extend(&chars[last_end..s]);
        if e > last_end || s == 0 {
            out.push_str(&template);
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    out.extend(&chars[last_end.min(chars.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without capture groups: `$$` is `$`,
/// `$name`/`${name}` expand to nothing, a `$` that starts neither stays.
fn expand_template(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if let Some(r) = rest.strip_prefix('{') {
            let len = r.find(|c| !is_name(c)).unwrap_or(r.len());
            if len > 0 && r[len..].starts_with('}') {
                rest = &r[len + 1..];
                continue;
            }
        } else {
            let len = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
            if len > 0 {
                rest = &rest[len..];
                continue;
            }
        }
        out.push('$');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("3.", "3.19", false, "19")]
    #[case("*.", "1.2.3", false, "2.3")]
    #[case("*.", "1.2.3", true, "3")]
    #[case("x", "abc", false, "abc")]
    #[case("?", "abc", false, "bc")]
    #[case("a\\*", "a*b", false, "b")]
    #[case("*", "a\nb", true, "\nb")]
    fn prefix(#[case] p: &str, #[case] v: &str, #[case] greedy: bool, #[case] want: &str) {
        assert_eq!(trim_prefix(p, v, greedy).unwrap(), want);
    }

    #[rstest]
    #[case(".*", "3.19.1", false, "3.19")]
    #[case(".*", "3.19.1", true, "3")]
    #[case("a\\*", "xa*", false, "x")]
    fn suffix(#[case] p: &str, #[case] v: &str, #[case] greedy: bool, #[case] want: &str) {
        assert_eq!(trim_suffix(p, v, greedy).unwrap(), want);
    }

    #[rstest]
    #[case("3.", "v3.", "3.19", false, "v3.19")]
    #[case("a", "b", "banana", true, "bbnbnb")]
    #[case("", "-", "ab", true, "-a-b-")]
    #[case("*", "x", "ab", true, "x")]
    #[case("a", "$1z", "aa", true, "")]
    #[case("a", "$$", "a", true, "$")]
    fn replaces(
        #[case] p: &str,
        #[case] r: &str,
        #[case] v: &str,
        #[case] all: bool,
        #[case] want: &str,
    ) {
        assert_eq!(replace(p, r, v, all).unwrap(), want);
    }

    #[test]
    fn bad_escape() {
        assert_eq!(
            trim_prefix("\\x", "v", false).unwrap_err(),
            "invalid pattern (\\x) in substitution: invalid escape '\\x'"
        );
    }
}
