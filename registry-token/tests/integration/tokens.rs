//! Minting and verifying with every key type; every way a token is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kiln_registry_token::{
    Action, Error, KeySet, MintRequest, Minter, SigningKey, TokenFormat, Verifier, VerifyingKey,
};
use serde_json::json;

const ES256: &[u8] = include_bytes!("../data/es256.pem");
const ES256_SEC1: &[u8] = include_bytes!("../data/es256-sec1.pem");
const ES256_PUB: &[u8] = include_bytes!("../data/es256.pub.pem");
const ED25519: &[u8] = include_bytes!("../data/ed25519.pem");
const ED25519_PUB: &[u8] = include_bytes!("../data/ed25519.pub.pem");
const RS256: &[u8] = include_bytes!("../data/rs256.pem");
const RS256_PUB: &[u8] = include_bytes!("../data/rs256.pub.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn request() -> MintRequest {
    MintRequest {
        subject: "build-42".into(),
        permissions: vec![
            "cache/global/*:pull".parse().unwrap(),
            "cache/tenant-a:push".parse().unwrap(),
            "builds/42:push".parse().unwrap(),
        ],
        ttl: Duration::from_secs(600),
        build_id: Some("42".into()),
    }
}

fn set(keys: impl IntoIterator<Item = VerifyingKey>) -> KeySet {
    let mut s = KeySet::new();
    for k in keys {
        s.insert(k).unwrap();
    }
    s
}

fn round_trip(signing: SigningKey, verifying: VerifyingKey) {
    let token = Minter::new(signing, "kiln", "registry")
        .mint(&request())
        .unwrap();
    let claims = Verifier::new(&set([verifying]), "kiln", "registry")
        .verify(&token)
        .unwrap();
    assert_eq!(claims.format, TokenFormat::Docker);
    assert_eq!(claims.build_id.as_deref(), Some("42"));
    assert_eq!(claims.audience, ["registry"]);
    let repo = |s: &str| s.parse().unwrap();
    assert!(
        claims
            .authorize(&repo("cache/global/node"), Action::Pull)
            .is_ok()
    );
    assert!(
        claims
            .authorize(&repo("cache/global/node"), Action::Push)
            .is_err()
    );
    assert!(
        claims
            .authorize(&repo("cache/tenant-a"), Action::Pull)
            .is_ok()
    );
    assert!(
        claims
            .authorize(&repo("cache/tenant-b"), Action::Pull)
            .is_err()
    );
    assert!(claims.authorize(&repo("builds/42"), Action::Push).is_ok());
    assert!(
        claims
            .authorize(&repo("builds/42"), Action::Delete)
            .is_err()
    );
}

#[test]
fn every_key_type_round_trips() {
    round_trip(
        SigningKey::hs256(SECRET).unwrap(),
        VerifyingKey::hs256(SECRET).unwrap(),
    );
    round_trip(
        SigningKey::from_pem(ES256).unwrap().with_kid("es"),
        VerifyingKey::from_public_pem(ES256_PUB)
            .unwrap()
            .with_kid("es"),
    );
    round_trip(
        SigningKey::from_pem(ES256_SEC1).unwrap().with_kid("es"),
        VerifyingKey::from_public_pem(ES256_PUB)
            .unwrap()
            .with_kid("es"),
    );
    round_trip(
        SigningKey::from_pem(ED25519).unwrap().with_kid("ed"),
        VerifyingKey::from_public_pem(ED25519_PUB)
            .unwrap()
            .with_kid("ed"),
    );
    round_trip(
        SigningKey::from_pem(RS256).unwrap().with_kid("rs"),
        VerifyingKey::from_public_pem(RS256_PUB)
            .unwrap()
            .with_kid("rs"),
    );
}

#[test]
fn jwks_export_import_and_rotation() {
    let es = SigningKey::from_pem(ES256).unwrap().with_kid("2026-11");
    let ed = SigningKey::from_pem(ED25519).unwrap().with_kid("2026-10");
    let rs = SigningKey::from_pem(RS256).unwrap().with_kid("2026-09");
    let published = set([
        es.verifying_key().unwrap(),
        ed.verifying_key().unwrap(),
        rs.verifying_key().unwrap(),
        VerifyingKey::hs256(SECRET).unwrap().with_kid("secret"),
    ])
    .to_jwks();
    assert!(
        !published.contains(&URL_SAFE_NO_PAD.encode(SECRET)),
        "secrets are never exported"
    );
    let imported = KeySet::from_jwks(&published).unwrap();
    assert_eq!(imported.keys().len(), 3);
    let verifier = Verifier::new(&imported, "kiln", "registry");
    for key in [es, ed, rs] {
        let token = Minter::new(key, "kiln", "registry")
            .mint(&request())
            .unwrap();
        assert!(verifier.verify(&token).is_ok());
    }
}

#[test]
fn libtrust_kid_matches_the_public_key() {
    // SHA-256 of the DER public key, as distribution computes it.
    let key = SigningKey::from_pem(ES256)
        .unwrap()
        .with_libtrust_kid()
        .unwrap();
    let der: String = std::str::from_utf8(ES256_PUB)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    assert_eq!(
        key.kid().unwrap(),
        kiln_registry_token::libtrust_key_id(&der)
    );
    let rsa = SigningKey::from_pem(RS256)
        .unwrap()
        .with_libtrust_kid()
        .unwrap();
    let rsa_der: String = std::str::from_utf8(RS256_PUB)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let rsa_der = base64::engine::general_purpose::STANDARD
        .decode(rsa_der)
        .unwrap();
    assert_eq!(
        rsa.kid().unwrap(),
        kiln_registry_token::libtrust_key_id(&rsa_der)
    );
    // distribution's libtrust knows RSA keys but not Ed25519.
    assert!(
        SigningKey::from_pem(RS256)
            .unwrap()
            .with_libtrust_kid()
            .is_ok()
    );
    assert!(
        SigningKey::from_pem(ED25519)
            .unwrap()
            .with_libtrust_kid()
            .is_err()
    );
}

/// A token with any header and claims, HS256-signed with `secret`.
fn forge(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
    use hmac_sha256::sign;
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{c}");
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sign(secret, input.as_bytes()))
    )
}

/// HMAC-SHA256 from the `sha2` primitives, to forge tokens independently
/// of the crate under test.
mod hmac_sha256 {
    use sha2::{Digest, Sha256};

    pub(super) fn sign(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let ih = Sha256::new()
            .chain_update(&inner)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&outer)
            .chain_update(ih)
            .finalize()
            .to_vec()
    }
}

fn hs_verifier() -> Verifier {
    Verifier::new(
        &set([VerifyingKey::hs256(SECRET).unwrap()]),
        "kiln",
        "registry",
    )
}

fn docker_claims() -> serde_json::Value {
    json!({"iss": "kiln", "aud": "registry", "exp": now() + 600, "iat": now(), "nbf": now(),
           "access": [{"type": "repository", "name": "a/b", "actions": ["pull"]}]})
}

#[test]
fn the_forger_agrees_with_jsonwebtoken() {
    let t = forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        docker_claims(),
        SECRET,
    );
    assert!(hs_verifier().verify(&t).is_ok());
}

#[test]
fn rejections_are_typed() {
    let v = hs_verifier();
    let hs = json!({"alg": "HS256"});
    let with = |k: &str, val: serde_json::Value| {
        let mut c = docker_claims();
        c[k] = val;
        forge(hs.clone(), c, SECRET)
    };
    let without = |k: &str| {
        let mut c = docker_claims();
        c.as_object_mut().unwrap().remove(k);
        forge(hs.clone(), c, SECRET)
    };
    assert_eq!(
        v.verify(&with("exp", json!(now() - 120))).unwrap_err(),
        Error::Expired
    );
    assert_eq!(v.verify(&without("exp")).unwrap_err(), Error::Expired);
    assert_eq!(
        v.verify(&with("nbf", json!(now() + 600))).unwrap_err(),
        Error::NotYetValid
    );
    assert_eq!(
        v.verify(&with("iat", json!(now() + 600))).unwrap_err(),
        Error::IssuedInFuture
    );
    assert_eq!(
        v.verify(&with("iss", json!("evil"))).unwrap_err(),
        Error::WrongIssuer
    );
    assert_eq!(
        v.verify(&with("aud", json!("other"))).unwrap_err(),
        Error::WrongAudience
    );
    assert_eq!(v.verify(&without("aud")).unwrap_err(), Error::WrongAudience);
    assert!(matches!(
        v.verify(&with(
            "access",
            json!([{"type": "repository", "name": "a/b", "actions": ["own"]}])
        )),
        Err(Error::InvalidAction(_))
    ));
    // Within the leeway (60 s) is fine.
    assert!(v.verify(&with("exp", json!(now() - 30))).is_ok());
    let strict = hs_verifier().leeway(Duration::ZERO);
    assert_eq!(
        strict.verify(&with("exp", json!(now() - 30))).unwrap_err(),
        Error::Expired
    );

    let good = forge(hs.clone(), docker_claims(), SECRET);
    // Change a signature character away from the end (the last base64url
    // character of a 32-byte MAC has spare bits, so changing it may only
    // make the encoding invalid).
    let at = good.len() - 5;
    let mut tampered = good.clone();
    let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, flipped);
    assert_eq!(v.verify(&tampered).unwrap_err(), Error::BadSignature);
    assert_eq!(
        v.verify(&forge(
            hs.clone(),
            docker_claims(),
            b"another secret of 32 bytes......"
        ))
        .unwrap_err(),
        Error::BadSignature
    );
    assert!(matches!(v.verify("not a token"), Err(Error::Malformed(_))));
    assert!(matches!(v.verify("a.b.c"), Err(Error::Malformed(_))));
    let big = "x".repeat(Verifier::DEFAULT_MAX_TOKEN_SIZE + 1);
    assert!(matches!(v.verify(&big), Err(Error::TooLarge { .. })));
}

#[test]
fn alg_none_confusion_and_unknown_kids_are_refused() {
    let v = hs_verifier();
    let claims = URL_SAFE_NO_PAD.encode(docker_claims().to_string());
    let none = format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    assert_eq!(
        v.verify(&none).unwrap_err(),
        Error::AlgorithmNotAllowed("none".into())
    );

    // HS/RS confusion: an HS256 token "signed" with the RSA public key,
    // naming the RSA key's kid.
    let rs = Verifier::new(
        &set([VerifyingKey::from_public_pem(RS256_PUB)
            .unwrap()
            .with_kid("rs")]),
        "kiln",
        "registry",
    );
    let confused = forge(
        json!({"alg": "HS256", "kid": "rs"}),
        docker_claims(),
        RS256_PUB,
    );
    assert_eq!(
        rs.verify(&confused).unwrap_err(),
        Error::AlgorithmNotAllowed("HS256".into())
    );

    let unknown = forge(
        json!({"alg": "HS256", "kid": "nope"}),
        docker_claims(),
        SECRET,
    );
    assert_eq!(
        v.verify(&unknown).unwrap_err(),
        Error::UnknownKeyId("nope".into())
    );
    let no_kid = forge(json!({"alg": "HS256"}), docker_claims(), SECRET);
    assert_eq!(rs.verify(&no_kid).unwrap_err(), Error::NoKey);
}

fn legacy_verifier() -> Verifier {
    Verifier::new(
        &set([VerifyingKey::legacy_hs256(SECRET).unwrap()]),
        "kiln",
        "registry",
    )
}

#[test]
fn legacy_tokens_keep_working_with_the_legacy_key_only() {
    let legacy = json!({"iss": "kiln", "sub": "builder-7", "iat": now(), "exp": now() + 600,
                        "build_id": "7", "repos": ["builds/7", "cache/tenant-a"], "scope": "push"});
    let token = forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        legacy.clone(),
        SECRET,
    );
    let claims = legacy_verifier().verify(&token).unwrap();
    assert_eq!(claims.format, TokenFormat::Legacy);
    assert_eq!(claims.build_id.as_deref(), Some("7"));
    let repo = |s: &str| s.parse().unwrap();
    assert!(claims.authorize(&repo("builds/7"), Action::Push).is_ok());
    assert!(
        claims
            .authorize(&repo("cache/tenant-a"), Action::Pull)
            .is_ok()
    );
    assert!(
        claims
            .authorize(&repo("cache/tenant-b"), Action::Pull)
            .is_err()
    );
    // A Docker-format key does not take legacy tokens (no audience) ...
    assert_eq!(
        hs_verifier().verify(&token).unwrap_err(),
        Error::LegacyNotAccepted
    );
    // ... and the legacy key cannot vouch for an access list (which could
    // grant `*`), whatever it says.
    let mut wide = docker_claims();
    wide["access"] = json!([{"type": "repository", "name": "*", "actions": ["*"]}]);
    let escalated = forge(json!({"alg": "HS256"}), wide, SECRET);
    assert!(matches!(
        legacy_verifier().verify(&escalated),
        Err(Error::Malformed(_))
    ));
    let mut pull = legacy;
    pull["scope"] = json!("pull");
    let claims = legacy_verifier()
        .verify(&forge(json!({"alg": "HS256"}), pull, SECRET))
        .unwrap();
    assert!(claims.authorize(&repo("builds/7"), Action::Push).is_err());
}

#[test]
fn minting_limits() {
    let minter = Minter::new(SigningKey::hs256(SECRET).unwrap(), "kiln", "registry")
        .max_ttl(Duration::from_secs(900));
    let mut req = request();
    req.ttl = Duration::from_secs(901);
    assert_eq!(
        minter.mint(&req).unwrap_err(),
        Error::TtlTooLong {
            requested_secs: 901,
            max_secs: 900
        }
    );
    // The registry needs `aud` as a single string.
    req.ttl = Duration::from_secs(60);
    let token = minter.mint(&req).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["aud"], "registry");
    assert_eq!(claims["access"][0]["name"], "cache/global/*");
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
}
