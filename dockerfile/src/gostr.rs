//! Go's character classes and string quoting, so results and messages match
//! BuildKit byte for byte.

use std::fmt;

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// Go's `unicode.IsSpace` (the Unicode `White_Space` property, as Rust's).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    c.general_category_group() == GeneralCategoryGroup::Letter
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    c.general_category() == unicode_properties::GeneralCategory::DecimalNumber
}

/// Go's `unicode.IsPrint` for a non-ASCII rune.
fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Mark
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    )
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Displays a string the way Go's `strconv.Quote` (and `%q`) does.
#[derive(Debug, Clone, Copy)]
pub struct GoQuoted<'a>(pub &'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\x07' => f.write_str("\\a")?,
                '\x08' => f.write_str("\\b")?,
                '\x0c' => f.write_str("\\f")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\x0b' => f.write_str("\\v")?,
                c if is_print(c) => f.write_char(c)?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c if (c as u32) < 0x10000 => write!(f, "\\u{:04x}", c as u32)?,
                c => write!(f, "\\U{:08x}", c as u32)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(
            GoQuoted("\" \\ / \u{8} \u{c} \n \r \t \u{0}").to_string(),
            r#""\" \\ / \b \f \n \r \t \x00""#
        );
        assert_eq!(GoQuoted("♥☃").to_string(), "\"♥☃\"");
        assert_eq!(GoQuoted("\u{feff}").to_string(), "\"\\ufeff\"");
    }

    #[test]
    fn character_classes() {
        assert!(is_space('\u{85}') && is_space('\u{a0}') && is_space('\x0b'));
        assert!(is_letter('é') && !is_letter('_') && !is_letter('Ⅷ'));
        assert!(is_digit('٣') && !is_digit('Ⅷ'));
    }
}
