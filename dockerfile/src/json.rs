//! The exec-form test: is the rest of an instruction a JSON array, the way Go's
//! `json.Unmarshal` into `[]interface{}` decides it (the whole input, Go's
//! whitespace, no depth limit below 10000, numbers must fit a float64)?

/// Outcome of reading an exec-form argument list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// Valid JSON array of strings.
    Strings(Vec<String>),
    /// Valid JSON array with a non-string element: a hard error in BuildKit.
    NotStrings,
    /// Not (decodable) JSON: BuildKit falls back to the shell form.
    Invalid,
}

const MAX_DEPTH: usize = 10_000;

/// Decodes `text` (already starting with `[`).
pub(crate) fn parse_array(text: &str) -> JsonArray {
    let mut p = Reader {
        s: text.as_bytes(),
        pos: 0,
        overflow: false,
    };
    let Some(top) = p.top_level() else {
        return JsonArray::Invalid;
    };
    if p.overflow {
        return JsonArray::Invalid;
    }
    top
}

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
    overflow: bool,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// The top-level array: its string elements, or `NotStrings`.
    fn top_level(&mut self) -> Option<JsonArray> {
        self.ws();
        if !self.eat(b'[') {
            return None;
        }
        let mut strings = Vec::new();
        let mut all_strings = true;
        self.ws();
        if !self.eat(b']') {
            loop {
                self.ws();
                if self.s.get(self.pos) == Some(&b'"') {
                    let s = self.string()?;
                    strings.push(s);
                } else {
                    all_strings = false;
                    self.value(1)?;
                }
                self.ws();
                if self.eat(b']') {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }
        self.ws();
        if self.pos != self.s.len() {
            return None;
        }
        Some(if all_strings {
            JsonArray::Strings(strings)
        } else {
            JsonArray::NotStrings
        })
    }

    /// Skips one value; containers are walked with an explicit stack.
    fn value(&mut self, depth: usize) -> Option<()> {
        // Each entry: true = inside an object, false = inside an array.
        let mut stack: Vec<bool> = Vec::new();
        loop {
            self.ws();
            match *self.s.get(self.pos)? {
                b'[' | b'{' => {
                    let object = self.s[self.pos] == b'{';
                    self.pos += 1;
                    if depth + stack.len() + 1 > MAX_DEPTH {
                        return None;
                    }
                    self.ws();
                    if self.eat(if object { b'}' } else { b']' }) {
                        // Empty container: a complete value.
                    } else {
                        stack.push(object);
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.number()?,
            }
            // A value is complete: close containers or move to the next element.
            loop {
                let Some(&object) = stack.last() else {
                    return Some(());
                };
                self.ws();
                if self.eat(b',') {
                    if object {
                        self.ws();
                        self.key()?;
                    }
                    break;
                }
                if self.eat(if object { b'}' } else { b']' }) {
                    stack.pop();
                    continue;
                }
                return None;
            }
        }
    }

    fn key(&mut self) -> Option<()> {
        self.ws();
        if self.s.get(self.pos) != Some(&b'"') {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':').then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        self.eat(b'-');
        if !self.eat(b'0') {
            self.digits(1)?;
        }
        if self.eat(b'.') {
            self.digits(1)?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.digits(1)?;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
        if text.parse::<f64>().ok()?.is_infinite() {
            // Go reports a type error, and BuildKit then falls back to the
            // shell form.
            self.overflow = true;
        }
        Some(())
    }

    fn digits(&mut self, min: usize) -> Option<()> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        (self.pos - start >= min).then_some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.pos..self.pos + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is a &str and we stop only at ASCII bytes.
            out.push_str(std::str::from_utf8(&self.s[start..self.pos]).ok()?);
            match *self.s.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let esc = *self.s.get(self.pos)?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                }
                _ => return None, // control character
            }
        }
    }

    /// `\uXXXX` (the `\u` consumed), combining surrogate pairs as Go does.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xD800..0xE000).contains(&first) {
            return char::from_u32(first);
        }
        if first < 0xDC00 && self.s[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            if let Some(second) = self.hex4()
                && (0xDC00..0xE000).contains(&second)
            {
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return char::from_u32(c);
            }
            // Not a pair: Go emits U+FFFD for the lone half and reads the
            // next escape on its own.
            self.pos = save;
        }
        Some('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[rstest]
    #[case("[]", strings(&[]))]
    #[case("[ \"a\",\t\"b\" ]\t", strings(&["a", "b"]))]
    #[case(r#"["\" \\ \/ \b \f \n \r \t \u0000"]"#, strings(&["\" \\ / \u{8} \u{c} \n \r \t \u{0}"]))]
    #[case(r#"["\ud83d\ude00", "\ud800x"]"#, strings(&["😀", "\u{fffd}x"]))]
    #[case("[\"a\", [\"b\"]]", JsonArray::NotStrings)]
    #[case("[1, {\"a\": [null, true]}]", JsonArray::NotStrings)]
    #[case("[1e400]", JsonArray::Invalid)]
    #[case("[\"a\"] x", JsonArray::Invalid)]
    #[case("['a']", JsonArray::Invalid)]
    #[case("[\"a\",]", JsonArray::Invalid)]
    #[case("[\"a", JsonArray::Invalid)]
    #[case("[\"\u{1}\"]", JsonArray::Invalid)]
    #[case("[01]", JsonArray::Invalid)]
    #[case("[{\"a\" 1}]", JsonArray::Invalid)]
    fn decodes_like_go(#[case] text: &str, #[case] want: JsonArray) {
        assert_eq!(parse_array(text), want);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_array(&deep), JsonArray::Invalid);
        let ok = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_array(&ok), JsonArray::NotStrings);
    }
}
