//! Shell patterns in `${V#p}`, `${V%p}` and `${V/p/r}`, matched exactly as
//! BuildKit's `convertShellPatternToRegex` + Go `regexp` do, without a regex
//! engine: an NFA over the pattern's tokens, simulated position by position
//! (stopping as soon as no state is alive), and one backward pass that marks
//! every position where some match starts, so a search is
//! `O(len(pattern) * len(value))`.
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

    /// Adds state `j` and, through `*` (which may match nothing), the
    /// states after it.
    fn add_state(&self, j: usize, set: &mut Vec<usize>, seen: &mut [bool]) {
        let mut j = j;
        loop {
            if seen[j] {
                return;
            }
            seen[j] = true;
            set.push(j);
            if j < self.tokens.len() && self.tokens[j] == Token::AnyRun {
                j += 1;
            } else {
                return;
            }
        }
    }

    /// The end (in chars) of the match that starts at `start`, if any: the
    /// first accepting position (lazy) or the last (greedy).
    fn match_from(&self, value: &[char], start: usize) -> Option<usize> {
        let m = self.tokens.len();
        let mut seen = vec![false; m + 1];
        let mut current = Vec::with_capacity(m + 1);
        self.add_state(0, &mut current, &mut seen);
        let mut best = None;
        let mut pos = start;
        loop {
            if seen[m] {
                best = Some(pos);
                if !self.greedy {
                    return best;
                }
            }
            let Some(&c) = value.get(pos) else {
                return best;
            };
            seen.iter_mut().for_each(|s| *s = false);
            let mut next = Vec::with_capacity(current.len());
            for &j in &current {
                let Some(token) = self.tokens.get(j) else {
                    continue;
                };
                match *token {
                    Token::Literal(l) if l == c => self.add_state(j + 1, &mut next, &mut seen),
                    Token::AnyOne if c != '\n' => self.add_state(j + 1, &mut next, &mut seen),
                    Token::AnyRun if c != '\n' => self.add_state(j, &mut next, &mut seen),
                    _ => {}
                }
            }
            if next.is_empty() {
                return best;
            }
            current = next;
            pos += 1;
        }
    }

    /// `starts[i]`: some match begins at `i` (backward pass over tokens).
    fn match_starts(&self, value: &[char]) -> Vec<bool> {
        let n = value.len();
        // can[i] for tokens t..: can they match some value[i..e]?
        let mut can = vec![true; n + 1];
        for token in self.tokens.iter().rev() {
            let mut prev = vec![false; n + 1];
            match *token {
                Token::Literal(l) => {
                    for i in 0..n {
                        prev[i] = value[i] == l && can[i + 1];
                    }
                }
                Token::AnyOne => {
                    for i in 0..n {
                        prev[i] = value[i] != '\n' && can[i + 1];
                    }
                }
                Token::AnyRun => {
                    prev[n] = can[n];
                    for i in (0..n).rev() {
                        prev[i] = can[i] || (value[i] != '\n' && prev[i + 1]);
                    }
                }
            }
            can = prev;
        }
        can
    }
}

/// Largest `len(pattern) * len(value)` searched; beyond it the expansion is
/// an error instead of minutes of CPU (BuildKit has no limit).
const MAX_SEARCH_COST: usize = 1 << 28;

fn check_cost(tokens: usize, value: usize) -> Result<(), String> {
    if (tokens + 1).saturating_mul(value + 1) > MAX_SEARCH_COST {
        return Err("pattern substitution too large".to_owned());
    }
    Ok(())
}

fn skip_bom(s: &str) -> &str {
    // Go's text/scanner ignores a byte-order mark at the very start.
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

/// `${value#pattern}` / `${value##pattern}`.
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let compiled = Pattern::new(pattern, greedy).map_err(|e| invalid(pattern, &e))?;
    let chars: Vec<char> = value.chars().collect();
    check_cost(compiled.tokens.len(), chars.len())?;
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
    check_cost(compiled.tokens.len(), chars.len())?;
    let starts = compiled.match_starts(&chars);
    let find = |from: usize| -> Option<(usize, usize)> {
        let s = (from..=chars.len()).find(|&i| starts[i])?;
        compiled.match_from(&chars, s).map(|e| (s, e))
    };
    if !all {
        return Ok(match find(0) {
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
    let mut out = String::new();
    let (mut search, mut last_end) = (0, 0);
    while search <= chars.len() {
        let Some((s, e)) = find(search) else {
            break;
        };
        out.extend(&chars[last_end..s]);
        if e > last_end || s == 0 {
            let whole: String = chars[s..e].iter().collect();
            out.push_str(&expand_template(replacement, &whole));
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    out.extend(&chars[last_end.min(chars.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without capture groups: `$$` is `$`,
/// `$0`/`${0}` the whole match, other `$name`/`${name}` nothing (names are
/// Unicode letters, digits and `_`), a `$` that starts neither stays.
fn expand_template(template: &str, whole: &str) -> String {
    use crate::gostr::{is_digit, is_letter};
    let is_name = |c: char| is_letter(c) || is_digit(c) || c == '_';
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
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            let len = r.find(|c| !is_name(c)).unwrap_or(r.len());
            if len > 0 && r[len..].starts_with('}') {
                (&r[..len], &r[len + 1..])
            } else {
                ("", rest)
            }
        } else {
            let len = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
            (&rest[..len], &rest[len..])
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        if name.parse::<u64>() == Ok(0) && name.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(whole);
        }
        rest = after;
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
    #[case("a", "$0$0", "xa", true, "xaa")]
    #[case("a", "${0}.", "a", true, "a.")]
    #[case("zz", "y", "aaaa", true, "aaaa")]
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
    fn long_values_stay_linear() {
        // The old search was quadratic here (minutes); this must not be.
        let value = "a".repeat(200_000);
        assert_eq!(replace("zz", "y", &value, true).unwrap(), value);
        assert_eq!(replace("a", "", &value, true).unwrap(), "");
        assert_eq!(trim_suffix("*a", &value, true).unwrap(), "");
    }

    #[test]
    fn bad_escape() {
        assert_eq!(
            trim_prefix("\\x", "v", false).unwrap_err(),
            "invalid pattern (\\x) in substitution: invalid escape '\\x'"
        );
    }
}
