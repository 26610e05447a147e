//! The `WWW-Authenticate: Bearer ...` challenge a registry sends, built and
//! parsed (RFC 7235 auth-params with quoted strings; RFC 6750 errors).

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::scope::{Scope, parse_scopes};

/// The `error` of a Bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChallengeError {
    /// The request is malformed.
    InvalidRequest,
    /// The token is expired, revoked, malformed or invalid.
    InvalidToken,
    /// The token does not grant what the request needs.
    InsufficientScope,
    /// Another code, kept as sent.
    Other(String),
}

impl ChallengeError {
    fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "invalid_request" => Self::InvalidRequest,
            "invalid_token" => Self::InvalidToken,
            "insufficient_scope" => Self::InsufficientScope,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A Bearer challenge.
///
/// ```
/// use kiln_registry_token::{Challenge, ChallengeError};
/// let c: Challenge = r#"Bearer realm="http://127.0.0.1:5001/token",service="kiln",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope""#.parse().unwrap();
/// assert_eq!(c.scopes.len(), 2);
/// assert_eq!(c.error, Some(ChallengeError::InsufficientScope));
/// assert_eq!(c.to_string().parse::<Challenge>().unwrap(), c);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Where to get a token.
    pub realm: String,
    /// The registry's service name (the token's audience).
    pub service: Option<String>,
    /// The resources the request needs.
    pub scopes: Vec<Scope>,
    /// Why the presented token (if any) was refused.
    pub error: Option<ChallengeError>,
}

fn quote(f: &mut fmt::Formatter<'_>, key: &str, value: &str) -> fmt::Result {
    write!(f, "{key}=\"")?;
    for c in value.chars() {
        if c == '"' || c == '\\' {
            write!(f, "\\")?;
        }
        write!(f, "{c}")?;
    }
    write!(f, "\"")
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer ")?;
        quote(f, "realm", &self.realm)?;
        if let Some(s) = &self.service {
            f.write_str(",")?;
            quote(f, "service", s)?;
        }
        if !self.scopes.is_empty() {
            let scopes: Vec<String> = self.scopes.iter().map(ToString::to_string).collect();
            f.write_str(",")?;
            quote(f, "scope", &scopes.join(" "))?;
        }
        if let Some(e) = &self.error {
            f.write_str(",")?;
            quote(f, "error", e.as_str())?;
        }
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads `key=value` auth-params (values are tokens or quoted strings).
fn auth_params(s: &str) -> Result<Vec<(String, String)>, Error> {
    let bad = |m: &str| Error::InvalidChallenge(m.to_owned());
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && (b[i] == b',' || b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i == b.len() {
            return Ok(out);
        }
        let key_start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == key_start {
            return Err(bad("expected a parameter name"));
        }
        let key = s[key_start..i].to_ascii_lowercase();
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(bad("expected '=' after a parameter name"));
        }
        i += 1;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                let rest = &s[i..];
                let Some(j) = rest.find(['"', '\\']) else {
                    return Err(bad("unterminated quoted string"));
                };
                v.push_str(&rest[..j]);
                i += j;
                if b[i] == b'"' {
                    i += 1;
                    break;
                }
                let Some(c) = s[i + 1..].chars().next() else {
                    return Err(bad("unterminated quoted string"));
                };
                v.push(c);
                i += 1 + c.len_utf8();
            }
            v
        } else {
            let start = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            if i == start {
                return Err(bad("expected a parameter value"));
            }
            s[start..i].to_owned()
        };
        out.push((key, value));
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return Err(bad("expected ',' between parameters"));
        }
    }
}

impl FromStr for Challenge {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim_matches([' ', '\t']);
        let (scheme, params) = s.split_once([' ', '\t']).unwrap_or((s, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::InvalidChallenge(format!(
                "not a Bearer challenge: {scheme:?}"
            )));
        }
        let mut realm = None;
        let mut challenge = Self {
            realm: String::new(),
            service: None,
            scopes: Vec::new(),
            error: None,
        };
        for (key, value) in auth_params(params)? {
            match key.as_str() {
                "realm" => realm = Some(value),
                "service" => challenge.service = Some(value),
                "scope" => challenge.scopes.extend(parse_scopes(&value)?),
                "error" => challenge.error = Some(ChallengeError::parse(&value)),
                _ => {}
            }
        }
        challenge.realm = realm.ok_or_else(|| Error::InvalidChallenge("no realm".into()))?;
        Ok(challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn builds_distributions_shape() {
        let c = Challenge {
            realm: "http://127.0.0.1:5001/token".into(),
            service: Some("kiln".into()),
            scopes: vec!["repository:foo/bar:pull".parse().unwrap()],
            error: None,
        };
        assert_eq!(
            c.to_string(),
            r#"Bearer realm="http://127.0.0.1:5001/token",service="kiln",scope="repository:foo/bar:pull""#
        );
    }

    #[rstest]
    #[case(r#"Bearer realm="r""#, "r", None, 0)]
    #[case(r#"bearer realm=r, service="s""#, "r", Some("s"), 0)]
    #[case(r#"Bearer realm="a\"b",scope="registry:catalog:*""#, "a\"b", None, 1)]
    #[case(
        r#"Bearer  realm = "r" , error="invalid_token", other="x""#,
        "r",
        None,
        0
    )]
    fn parses(
        #[case] s: &str,
        #[case] realm: &str,
        #[case] service: Option<&str>,
        #[case] scopes: usize,
    ) {
        let c: Challenge = s.parse().unwrap();
        assert_eq!(c.realm, realm);
        assert_eq!(c.service.as_deref(), service);
        assert_eq!(c.scopes.len(), scopes);
        assert_eq!(c.to_string().parse::<Challenge>().unwrap(), c);
    }

    #[rstest]
    #[case("")]
    #[case("Basic realm=\"r\"")]
    #[case("Bearer service=\"s\"")]
    #[case("Bearer realm=\"r")]
    #[case("Bearer realm")]
    #[case("Bearer realm=\"r\" service=\"s\"")]
    #[case("Bearer realm=\"r\",scope=\"bad\"")]
    fn rejects(#[case] s: &str) {
        assert!(s.parse::<Challenge>().is_err());
    }
}
