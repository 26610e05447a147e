//! `kiln token mint | verify | key-id`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../registry-token/tests/data")
        .join(name)
        .display()
        .to_string()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn mint_and_verify_with_a_shared_secret() {
    let secret = std::env::temp_dir().join(format!("kiln-secret-{}", std::process::id()));
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let secret = secret.display().to_string();
    let token = ok(&kiln(&[
        "token",
        "mint",
        "--secret-file",
        &secret,
        "--issuer",
        "kiln",
        "--audience",
        "registry",
        "--access",
        "cache/global/*:pull",
        "--access",
        "builds/42:push",
        "--ttl",
        "10m",
        "--build-id",
        "42",
    ]));
    let claims = ok(&kiln(&[
        "token",
        "verify",
        token.trim(),
        "--secret-file",
        &secret,
        "--issuer",
        "kiln",
        "--audience",
        "registry",
    ]));
    let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(claims["build_id"], "42");
    assert_eq!(claims["subject"], "build-42");
    assert_eq!(claims["permissions"][0], "cache/global/*:pull");
    assert_eq!(claims["permissions"][1], "builds/42:pull,push");

    let refused = kiln(&[
        "token",
        "verify",
        token.trim(),
        "--secret-file",
        &secret,
        "--issuer",
        "kiln",
        "--audience",
        "other",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("wrong audience"));
    let too_long = kiln(&[
        "token",
        "mint",
        "--secret-file",
        &secret,
        "--issuer",
        "kiln",
        "--audience",
        "registry",
        "--access",
        "a:pull",
        "--ttl",
        "2h",
    ]);
    assert!(!too_long.status.success());
    std::fs::remove_file(&secret).ok();
}

#[test]
fn mint_with_a_key_pair_verify_with_the_public_key() {
    let kid = ok(&kiln(&["token", "key-id", &data("es256.pub.pem")]));
    assert_eq!(kid.trim().split(':').count(), 12);
    let token = ok(&kiln(&[
        "token",
        "mint",
        "--key",
        &data("es256.pem"),
        "--libtrust-kid",
        "--issuer",
        "kiln",
        "--audience",
        "registry",
        "--access",
        "tenant-a/*:pull,push",
        "--ttl",
        "60s",
    ]));
    let claims = ok(&kiln(&[
        "token",
        "verify",
        token.trim(),
        "--key",
        &data("es256.pub.pem"),
        "--kid",
        kid.trim(),
        "--issuer",
        "kiln",
        "--audience",
        "registry",
    ]));
    assert!(claims.contains("tenant-a/*:pull,push"));
    // The RSA public key does not verify an ES256 token.
    let wrong = kiln(&[
        "token",
        "verify",
        token.trim(),
        "--key",
        &data("rs256.pub.pem"),
        "--kid",
        kid.trim(),
        "--issuer",
        "kiln",
        "--audience",
        "registry",
    ]);
    assert!(!wrong.status.success());
}
