//! `RUN --mount=` values: one CSV record (Go `encoding/csv` rules) of
//! `key=value` fields; only `from=` matters for image references.

use std::ops::Range;

use crate::error::ErrorKind;

/// The `from=` field of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountFrom {
    /// The value (CSV quoting removed, variables not yet expanded).
    pub(crate) value: String,
    /// Its byte range in the mount text when it is a plain (unquoted) token.
    pub(crate) range: Option<Range<usize>>,
}

/// One CSV field: its text and, when unquoted, its byte range.
type Field = (String, Option<Range<usize>>);

fn fields(text: &str) -> Result<Vec<Field>, ErrorKind> {
    let bad = |why: &str| ErrorKind::InvalidMount(format!("{why} in {text:?}"));
    if text.is_empty() {
        return Err(bad("empty mount"));
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        if b.get(pos) == Some(&b'"') {
            let mut value = String::new();
            let mut i = pos + 1;
            loop {
                let Some(q) = text[i..].find('"') else {
                    return Err(bad("extraneous or missing \" in quoted-field"));
                };
                value.push_str(&text[i..i + q]);
                i += q + 1;
                match b.get(i) {
                    Some(b'"') => {
                        value.push('"');
                        i += 1;
                    }
                    Some(b',') | None => break,
                    Some(_) => return Err(bad("extraneous or missing \" in quoted-field")),
                }
            }
            out.push((value, None));
            pos = i;
        } else {
            let end = text[pos..].find(',').map_or(text.len(), |i| pos + i);
            let field = &text[pos..end];
            if field.contains('"') {
                return Err(bad("bare \" in non-quoted-field"));
            }
            out.push((field.to_owned(), Some(pos..end)));
            pos = end;
        }
        if pos >= text.len() {
            return Ok(out);
        }
        pos += 1; // the comma
        if pos == text.len() {
            out.push((String::new(), Some(pos..pos)));
            return Ok(out);
        }
    }
}

/// The `from=` field, if the mount has one (keys are case-insensitive).
pub(crate) fn from_field(text: &str) -> Result<Option<MountFrom>, ErrorKind> {
    let mut found = None;
    for (field, range) in fields(text)? {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        if key.eq_ignore_ascii_case("from") {
            let range = range.map(|r| r.end - value.len()..r.end);
            found = Some(MountFrom {
                value: value.to_owned(),
                range,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_from() {
        let text = "type=bind,from=builder,target=/x";
        let f = from_field(text).unwrap().unwrap();
        assert_eq!(f.value, "builder");
        assert_eq!(&text[f.range.unwrap()], "builder");
        assert_eq!(from_field("type=cache,target=/x").unwrap(), None);
        let q = from_field("\"from=a,b\",target=/x").unwrap().unwrap();
        assert_eq!((q.value.as_str(), q.range), ("a,b", None));
    }

    #[test]
    fn csv_errors() {
        assert!(from_field("from=a\"b").is_err());
        assert!(from_field("\"from=a").is_err());
        assert!(from_field("").is_err());
    }
}
