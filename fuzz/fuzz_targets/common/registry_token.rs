//! The registry-token fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`registry-token/tests/integration/fuzz_corpus.rs`).

use kiln_registry_token::{
    Challenge, KeySet, Permission, RepositoryPattern, Scope, Verifier, VerifyingKey, parse_scopes,
};

/// Feeds `data` to the token decoder and to the scope, permission and
/// challenge parsers; whatever parses must print and parse back to the same
/// value. Returns whether anything parsed. Panics on a broken invariant.
pub(crate) fn check(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut keys = KeySet::new();
    keys.insert(VerifyingKey::hs256(&[7; 32]).expect("key"))
        .expect("insert");
    let verified = Verifier::new(&keys, "kiln", "registry")
        .verify(&text)
        .is_ok();

    let scope = text.parse::<Scope>().ok();
    if let Some(s) = &scope {
        assert_eq!(s.to_string().parse::<Scope>().as_ref(), Ok(s));
    }
    let scopes = parse_scopes(&text).ok();
    let permission = text.parse::<Permission>().ok();
    if let Some(p) = &permission {
        assert_eq!(p.to_string().parse::<Permission>().as_ref(), Ok(p));
    }
    if let Ok(p) = text.parse::<RepositoryPattern>() {
        assert_eq!(p.to_string().parse::<RepositoryPattern>(), Ok(p));
    }
    let challenge = text.parse::<Challenge>().ok();
    if let Some(c) = &challenge {
        assert_eq!(c.to_string().parse::<Challenge>().as_ref(), Ok(c));
    }
    verified
        || scope.is_some()
        || scopes.is_some_and(|s| !s.is_empty())
        || permission.is_some()
        || challenge.is_some()
}
