//! Word processing and variable expansion, a faithful port of BuildKit's
//! `frontend/dockerfile/shell/lex.go` (quotes, escapes, `$V`, `${V...}`
//! modifiers, word splitting), quirks included: the words buffer is shared by
//! nested `${...}` words exactly as in BuildKit, so `ProcessWords` results
//! agree too.

use std::collections::BTreeSet;

use crate::gostr::{is_digit, is_letter, is_space};
use crate::pattern;

/// Deepest `${...}` nesting expanded (BuildKit has no limit; a fixed-size
/// thread stack needs one).
pub(crate) const MAX_NESTING: usize = 64;

/// Longest expansion result, so `ARG B=$A$A$A...` chains cannot exhaust
/// memory (BuildKit has no limit).
pub(crate) const MAX_EXPANSION: usize = 1 << 20;

/// Variables visible to an expansion.
pub(crate) trait Env {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<&str>;
}

/// No variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Options of BuildKit's `shell.Lex`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lexer {
    pub(crate) escape: char,
    pub(crate) raw_quotes: bool,
    pub(crate) raw_escapes: bool,
    pub(crate) skip_unset_env: bool,
}

impl Lexer {
    pub(crate) fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
        }
    }

    /// `ProcessWordWithMatches`: the expanded word plus the variable names
    /// that were found / not found. The error is BuildKit's reason (without
    /// the `failed to process` wrapper).
    pub(crate) fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expanded, String> {
        let mut w = Word::new(self, word, env);
        let (result, words) = w.stop_on(None, self.raw_escapes)?;
        Ok(Expanded {
            result,
            words,
            matched: w.matched,
            unmatched: w.unmatched,
        })
    }

    /// Names looked up and not found, up to the end or the first error.
    pub(crate) fn unmatched_until_error(&self, word: &str, env: &dyn Env) -> BTreeSet<String> {
        let mut w = Word::new(self, word, env);
        let _ = w.stop_on(None, self.raw_escapes);
        w.unmatched
    }

    /// `ProcessWords`: the expanded word split into words.
    pub(crate) fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, String> {
        self.process_word(word, env).map(|e| e.words)
    }
}

/// The result of an expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub(crate) result: String,
    pub(crate) words: Vec<String>,
    pub(crate) matched: BTreeSet<String>,
    pub(crate) unmatched: BTreeSet<String>,
}

/// Words being split, sharing one buffer with nested words (BuildKit quirk).
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, c: char) {
        if is_space(c) {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, c);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, c: char) {
        buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for c in s.chars() {
            self.add_char(buf, c);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

struct Word<'a> {
    lex: &'a Lexer,
    src: &'a str,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    depth: usize,
    buf: String,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Go's `string(rune)` for a character that may be end of input.
fn rune_str(c: Option<char>) -> char {
    c.unwrap_or('\u{fffd}')
}

impl<'a> Word<'a> {
    fn new(lex: &'a Lexer, src: &'a str, env: &'a dyn Env) -> Self {
        Self {
            lex,
            // Go's text/scanner ignores a byte-order mark at the very start.
            src: src.strip_prefix('\u{feff}').unwrap_or(src),
            pos: 0,
            env,
            raw_escapes: lex.raw_escapes,
            depth: 0,
            buf: String::new(),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) => {
                self.matched.insert(name.to_owned());
                Some(v.to_owned())
            }
            None => {
                self.unmatched.insert(name.to_owned());
                None
            }
        }
    }

    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        // Go's growable stacks let BuildKit nest `${A:-${B:-...}}` without
        // bound; a fixed stack cannot, so hostile nesting is an error here.
        if self.depth >= MAX_NESTING {
            return Err(format!("substitutions nested deeper than {MAX_NESTING}"));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        let r = r?;
        if r.0.len() > MAX_EXPANSION {
            return Err(format!("expansion longer than {MAX_EXPANSION} bytes"));
        }
        Ok(r)
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        self.buf.clear();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                let mut buf = std::mem::take(&mut self.buf);
                let w = words.finish(&mut buf);
                self.buf = buf;
                return Ok((result, w));
            }
            match c {
                '$' => {
                    let tmp = self.dollar()?;
                    if result.len() + tmp.len() > MAX_EXPANSION {
                        return Err(format!("expansion longer than {MAX_EXPANSION} bytes"));
                    }
                    result.push_str(&tmp);
                    words.add_string(&mut self.buf, &tmp);
                }
                '<' => {
                    let tmp = self.possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.buf, &tmp);
                }
                '\'' => {
                    let tmp = self.single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.buf, &tmp);
                }
                '"' => {
                    let tmp = self.double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.buf, &tmp);
                }
                _ => {
                    let mut c = rune_str(self.next());
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(&mut self.buf, c);
                            result.push(c);
                        }
                        match self.next() {
                            None => break,
                            Some(n) => c = n,
                        }
                        words.add_raw_char(&mut self.buf, c);
                    } else {
                        words.add_char(&mut self.buf, c);
                    }
                    result.push(c);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let w = words.finish(&mut buf);
        self.buf = buf;
        Ok((result, w))
    }

    /// `<<` swallows the blanks after it, so `<<  EOF` stays one word
    /// (BuildKit >= 0.22).
    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.next();
        let mut out = "<<".to_owned();
        while let Some(c @ (' ' | '\t')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = rune_str(self.next());
        if self.lex.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = rune_str(self.next());
        if self.lex.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut c = rune_str(self.next());
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            result.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                c = rune_str(self.next());
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !is_letter(c) && !is_digit(c) && c != '_' {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.name();
        let first = self.next();
        let mut chs = String::from(rune_str(first));
        let mut null_is_unset = false;
        let mut modifier = first;
        match first {
            Some('}') => {
                return Ok(match self.get_env(&name) {
                    Some(v) => v,
                    None if self.lex.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                });
            }
            Some(':') => {
                null_is_unset = true;
                modifier = self.next();
                chs.push(rune_str(modifier));
            }
            Some('+' | '-' | '?' | '#' | '%') => {}
            Some('/') => return self.replace(&name),
            _ => return Err(format!("unsupported modifier ({chs}) in substitution")),
        }
        let raw = matches!(modifier, Some('#' | '%'));
        if null_is_unset && raw {
            return Err(format!("unsupported modifier ({chs}) in substitution"));
        }
        let word = match self.stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".to_owned()),
            Err(e) => return Err(e),
        };
        let value = self.get_env(&name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let empty = value
            .as_deref()
            .is_none_or(|v| null_is_unset && v.is_empty());
        match modifier {
            Some('-') => Ok(if empty {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if empty { String::new() } else { word }),
            Some('?') => match value {
                None => Err(format!(
                    "{name}: {}",
                    or(word, "is not allowed to be unset")
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    or(word, "is not allowed to be empty")
                )),
                Some(v) => Ok(v),
            },
            Some(m @ ('%' | '#')) => {
                let value = value.unwrap_or_default();
                let (greedy, pat) = match word.strip_prefix(m) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                if m == '%' {
                    pattern::trim_suffix(pat, &value, greedy)
                } else {
                    pattern::trim_prefix(pat, &value, greedy)
                }
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pat = match self.stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".to_owned());
            }
            Err(e) => return Err(e),
        };
        let replacement = match self.stop_on(Some('}'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".to_owned()),
            Err(e) => return Err(e),
        };
        match self.get_env(name) {
            None if self.lex.skip_unset_env => Ok(format!("${{{name}/{pat}/{replacement}}}")),
            value => pattern::replace(&pat, &replacement, &value.unwrap_or_default(), all),
        }
    }
}

fn or(word: String, default: &str) -> String {
    if word.is_empty() {
        default.to_owned()
    } else {
        word
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);
    impl Env for Map {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
    }

    fn env() -> Map {
        Map(HashMap::from([("TAG", "3.19"), ("E", ""), ("REG", "r.io")]))
    }

    #[rstest]
    #[case("alpine:$TAG", "alpine:3.19")]
    #[case("alpine:${TAG}", "alpine:3.19")]
    #[case("${NOPE:-busybox}", "busybox")]
    #[case("${E:-x}", "x")]
    #[case("${E-x}", "")]
    #[case("${REG:+$REG/}alpine", "r.io/alpine")]
    #[case("${NOPE:+x}a", "a")]
    #[case("${X:-${Y:-z}}", "z")]
    #[case("alpine:${TAG%.*}", "alpine:3")]
    #[case("alpine:${TAG#3.}", "alpine:19")]
    #[case("alpine:${TAG/3./v3.}", "alpine:v3.19")]
    #[case("\"alpine:3.19\"", "alpine:3.19")]
    #[case("'debian':12", "debian:12")]
    #[case("alpine:\\$TAG", "alpine:$TAG")]
    #[case("$", "$")]
    #[case("$1x", "x")]
    #[case("a\\", "a")]
    fn expands(#[case] word: &str, #[case] want: &str) {
        let got = Lexer::new('\\').process_word(word, &env()).unwrap();
        assert_eq!(got.result, want);
    }

    #[rstest]
    #[case("${}", "syntax error: bad substitution")]
    #[case("${:x}", "syntax error: bad substitution")]
    #[case("${X", "unsupported modifier (\u{fffd}) in substitution")]
    #[case("${X:#a}", "unsupported modifier (:#) in substitution")]
    #[case("${X:?required}", "X: required")]
    #[case("${X?}", "X: is not allowed to be unset")]
    #[case("${E:?}", "E: is not allowed to be empty")]
    #[case("${X:-a", "syntax error: missing '}'")]
    #[case(
        "'abc",
        "unexpected end of statement while looking for matching single-quote"
    )]
    fn errors(#[case] word: &str, #[case] want: &str) {
        let got = Lexer::new('\\').process_word(word, &env()).unwrap_err();
        assert_eq!(got, want);
    }

    #[test]
    fn unmatched_names_are_recorded() {
        let got = Lexer::new('\\')
            .process_word("${REG:-x}/$NOPE:${TAG}", &env())
            .unwrap();
        assert_eq!(got.unmatched, BTreeSet::from(["NOPE".to_owned()]));
        assert_eq!(got.matched.len(), 2);
    }

    #[test]
    fn words_split_and_raw_modes() {
        let mut lex = Lexer::new('\\');
        lex.raw_quotes = true;
        lex.raw_escapes = true;
        lex.skip_unset_env = true;
        let words = lex.process_words("RUN <<\"EOF\" $X 'a b'", &NoEnv).unwrap();
        assert_eq!(words, ["RUN", "<<\"EOF\"", "$X", "'a b'"]);
    }

    #[test]
    fn hostile_nesting_and_growth_are_errors_not_crashes() {
        let deep = format!("{}x{}", "${A:-".repeat(5000), "}".repeat(5000));
        let err = Lexer::new('\\').process_word(&deep, &NoEnv).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
        let ok = format!("{}x{}", "${A:-".repeat(50), "}".repeat(50));
        assert_eq!(
            Lexer::new('\\').process_word(&ok, &NoEnv).unwrap().result,
            "x"
        );

        struct Big(String);
        impl Env for Big {
            fn get(&self, _: &str) -> Option<&str> {
                Some(&self.0)
            }
        }
        let big = Big("a".repeat(600_000));
        let err = Lexer::new('\\').process_word("$A$A", &big).unwrap_err();
        assert!(err.contains("expansion longer"), "{err}");
    }

    #[test]
    fn nested_word_shares_buffer_like_buildkit() {
        // The nested ${...} word resets the outer word's buffer.
        let words = Lexer::new('\\')
            .process_words("foo${X:-bar}baz", &NoEnv)
            .unwrap();
        assert_eq!(words, ["barbaz"]);
    }
}
