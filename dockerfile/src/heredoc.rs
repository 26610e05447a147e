//! Heredoc detection on an instruction line (`<<EOF`, `<<-EOF`, `3<<"EOF"`),
//! as BuildKit's `heredocsFromLine` / `ParseHeredoc`.

use serde::Serialize;

use crate::shell::{Lexer, NoEnv};

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The terminator word (quotes removed).
    pub name: String,
    /// The file descriptor written before `<<` (0 when none; Go's
    /// saturating `ParseUint` on overflow).
    #[serde(rename = "fd")]
    pub file_descriptor: u64,
    /// Whether variables in the body are expanded (the name was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub chomp: bool,
    /// The body, line endings included, exactly as in the file.
    pub content: String,
}

/// Heredocs opened by `line` (a joined instruction line), in order.
pub(crate) fn from_line(line: &str) -> Vec<Heredoc> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    // BuildKit ignores lexing errors here: no words, no heredocs.
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    words.iter().filter_map(|w| parse(w)).collect()
}

/// Matches `^(\d*)<<(-?)\s*([^<]*)$` and reads the name.
fn parse(word: &str) -> Option<Heredoc> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let after = word[digits..].strip_prefix("<<")?;
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\x0c', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    // Go's ParseUint gives the maximum on overflow (BuildKit ignores the
    // error) and 0 for no digits.
    let fd = match &word[..digits] {
        "" => 0,
        d => d.parse::<u64>().unwrap_or(u64::MAX),
    };

    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &NoEnv).ok()?;
    let [name] = <[String; 1]>::try_from(words).ok()?;
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoEnv).ok()?;
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let expand = raw.len() == 1 && quotes(&name) == quotes(&raw[0]);
    Some(Heredoc {
        name,
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("RUN <<EOF", &[("EOF", true, false)])]
    #[case("RUN <<-EOF", &[("EOF", true, true)])]
    #[case("COPY <<\"EOF\" /x", &[("EOF", false, false)])]
    #[case("COPY <<'E'OF /x", &[("EOF", false, false)])]
    #[case("RUN <<  EOF", &[("EOF", true, false)])]
    #[case("RUN 3<<A cat <<B", &[("A", true, false), ("B", true, false)])]
    #[case("RUN echo \"<<EOF\"", &[])]
    #[case("RUN a<<EOF", &[])]
    #[case("RUN <<", &[])]
    fn detects(#[case] line: &str, #[case] want: &[(&str, bool, bool)]) {
        let got: Vec<(String, bool, bool)> = from_line(line)
            .into_iter()
            .map(|h| (h.name, h.expand, h.chomp))
            .collect();
        let want: Vec<(String, bool, bool)> =
            want.iter().map(|&(n, e, c)| (n.to_owned(), e, c)).collect();
        assert_eq!(got, want);
    }
}
