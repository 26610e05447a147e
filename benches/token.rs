//! `kiln-registry-token`: mints and verifications per second (HS256, ES256),
//! and verification against a bare `jsonwebtoken::decode` of the same token
//! into equivalent typed claims, in the same run.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use jsonwebtoken::{DecodingKey, Validation};
use kiln_registry_token::{
    AccessEntry, CachingVerifier, KeySet, MintRequest, Minter, SigningKey, Verifier,
};
use serde::Deserialize;

use crate::test_utils::best_time;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// What an application decoding the token by hand would read.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Bare {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<AccessEntry>,
    build_id: Option<String>,
}

struct Case {
    name: &'static str,
    minter: Minter,
    verifier: Verifier,
    token: String,
    bare_key: DecodingKey,
    bare_validation: Validation,
}

fn request() -> MintRequest {
    MintRequest {
        subject: "build-42".into(),
        permissions: vec![
            "cache/global/node:pull".parse().expect("perm"),
            "cache/tenant-a:push".parse().expect("perm"),
            "builds/42:push".parse().expect("perm"),
            "docker.io/library/golang:pull".parse().expect("perm"),
        ],
        ttl: Duration::from_secs(600),
        build_id: Some("42".into()),
    }
}

fn case(name: &'static str, key: SigningKey, bare_key: DecodingKey) -> Case {
    let mut keys = KeySet::new();
    keys.insert(key.verifying_key().expect("verifying key"))
        .expect("insert");
    let alg = match key.algorithm() {
        kiln_registry_token::Algorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
        _ => jsonwebtoken::Algorithm::ES256,
    };
    let minter = Minter::new(key, "kiln", "registry");
    let token = minter.mint(&request()).expect("mint");
    let mut bare_validation = Validation::new(alg);
    bare_validation.set_issuer(&["kiln"]);
    bare_validation.set_audience(&["registry"]);
    Case {
        name,
        minter,
        verifier: Verifier::new(&keys, "kiln", "registry"),
        token,
        bare_key,
        bare_validation,
    }
}

fn cases() -> Vec<Case> {
    let pem = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../registry-token/tests/data/es256.pem"),
    )
    .expect("test key");
    let public = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../registry-token/tests/data/es256.pub.pem"),
    )
    .expect("test key");
    vec![
        case(
            "HS256",
            SigningKey::hs256(SECRET).expect("key"),
            DecodingKey::from_secret(SECRET),
        ),
        case(
            "ES256",
            SigningKey::from_pem(&pem).expect("key").with_kid("k1"),
            DecodingKey::from_ec_pem(&public).expect("key"),
        ),
    ]
}

fn criterion_groups(c: &mut Criterion) {
    if !crate::test_utils::selected("token") {
        return;
    }
    let cases = cases();
    let mut g = c.benchmark_group("token");
    for case in &cases {
        let req = request();
        g.bench_function(format!("{} mint", case.name), |b| {
            b.iter(|| black_box(case.minter.mint(black_box(&req)).expect("mint")))
        });
        g.bench_function(format!("{} verify (kiln)", case.name), |b| {
            b.iter(|| {
                black_box(
                    case.verifier
                        .verify(black_box(&case.token))
                        .expect("verify"),
                )
            })
        });
        let cached = CachingVerifier::new(case.verifier.clone(), 65_536);
        g.bench_function(format!("{} cached verify (kiln serve)", case.name), |b| {
            b.iter(|| black_box(cached.verify(black_box(&case.token)).expect("verify")))
        });
        g.bench_function(format!("{} bare jsonwebtoken::decode", case.name), |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<Bare>(
                        black_box(&case.token),
                        &case.bare_key,
                        &case.bare_validation,
                    )
                    .expect("decode"),
                )
            })
        });
    }
    g.finish();
    summary(&cases);
}

fn per_second(t: Duration, n: u32) -> f64 {
    f64::from(n) / t.as_secs_f64()
}

fn summary(cases: &[Case]) {
    const N: u32 = 200;
    println!();
    println!("== registry tokens: {N} operations per pass, best pass, single thread ==");
    for case in cases {
        let req = request();
        let budget = Duration::from_secs(2);
        let mint = best_time(budget, || {
            for _ in 0..N {
                black_box(case.minter.mint(&req).expect("mint"));
            }
        });
        let verify = best_time(budget, || {
            for _ in 0..N {
                black_box(case.verifier.verify(&case.token).expect("verify"));
            }
        });
        let bare = best_time(budget, || {
            for _ in 0..N {
                black_box(
                    jsonwebtoken::decode::<Bare>(
                        &case.token,
                        &case.bare_key,
                        &case.bare_validation,
                    )
                    .expect("decode"),
                );
            }
        });
        // What kiln serve does per request: the cached check.
        let cached_verifier = CachingVerifier::new(case.verifier.clone(), 65_536);
        cached_verifier.verify(&case.token).expect("verify");
        let cached = best_time(budget, || {
            for _ in 0..N {
                black_box(
                    cached_verifier
                        .verify(black_box(&case.token))
                        .expect("cached"),
                );
            }
        });
        println!(
            "{}: mint {:>9.0}/s   verify {:>9.0}/s   bare decode {:>9.0}/s   verify/bare cost ratio {:.2}x (target <= 1.2x)",
            case.name,
            per_second(mint, N),
            per_second(verify, N),
            per_second(bare, N),
            verify.as_secs_f64() / bare.as_secs_f64()
        );
        println!(
            "{}: cached check {:.3} us (target <= 0.2 us), {:.0}x faster than bare jsonwebtoken::decode",
            case.name,
            cached.as_secs_f64() * 1e6 / f64::from(N),
            bare.as_secs_f64() / cached.as_secs_f64()
        );
    }
    println!();
}

criterion::criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = criterion_groups
}
