//! Properties: parsing never panics; rewriting changes only image tokens and
//! the result resolves to the mirrored images (generated Dockerfiles, and
//! every file of the shared corpus, checked against BuildKit itself).

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_dockerfile::{Dockerfile, Mirror, ResolveOptions};
use proptest::prelude::*;

use crate::corpus::shared_dir;

use crate::fuzz_check as check;

fn amd64() -> ResolveOptions {
    ResolveOptions::new()
        .target_platform("linux/amd64".parse().unwrap())
        .build_platform("linux/amd64".parse().unwrap())
}

fn image_ref() -> impl Strategy<Value = String> {
    let registry = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_owned()),
        Just("ghcr.io/".to_owned()),
        Just("localhost:5000/".to_owned()),
        Just("[::1]:5000/".to_owned()),
    ];
    let name = "[a-z][a-z0-9]{0,6}(/[a-z][a-z0-9]{0,4})?";
    let tag = prop_oneof![
        Just(String::new()),
        "[a-z0-9][a-z0-9.-]{0,6}".prop_map(|t| format!(":{t}"))
    ];
    let digest = prop_oneof![
        3 => Just(String::new()),
        1 => "[0-9a-f]{64}".prop_map(|h| format!("@sha256:{h}")),
    ];
    (registry, name, tag, digest).prop_map(|(r, n, t, d)| format!("{r}{n}{t}{d}"))
}

/// A line (or a few) of a Dockerfile built from the constructs that matter
/// for image references.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        image_ref().prop_map(|r| format!("ARG BASE={r}")),
        Just("ARG TAG".to_owned()),
        (image_ref(), "[a-z]{1,5}").prop_map(|(r, n)| format!("FROM {r} AS {n}")),
        (image_ref(), 1usize..5).prop_map(|(r, cut)| {
            let cut = cut.min(r.len() - 1);
            let cut = (0..=cut)
                .rev()
                .find(|&c| r.is_char_boundary(c))
                .unwrap_or(0);
            format!(
                "FROM --platform=$BUILDPLATFORM {}\\\n  # split\n\n{} as Stage",
                &r[..cut],
                &r[cut..]
            )
        }),
        (image_ref(), 1usize..5).prop_map(|(r, cut)| {
            let cut = cut.min(r.len() - 1);
            format!("COPY --from={}\\\n\n{} /a /b", &r[..cut], &r[cut..])
        }),
        Just("FROM $BASE".to_owned()),
        image_ref().prop_map(|r| format!("FROM ${{BASE:-{r}}}")),
        image_ref().prop_map(|r| format!("FROM \"{r}\"")),
        Just("FROM scratch".to_owned()),
        "[a-z]{1,5}".prop_map(|n| format!("FROM {n}")),
        image_ref().prop_map(|r| format!("COPY --from={r} /a /b")),
        Just("COPY --from=0 /a /b".to_owned()),
        image_ref().prop_map(|r| format!("RUN --mount=type=bind,from={r},target=/x true")),
        Just("RUN <<EOF\nFROM evil\nEOF".to_owned()),
        Just("# FROM commented:out".to_owned()),
        Just(String::new()),
    ]
}

fn dockerfile() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(""),
            Just("# syntax=docker/dockerfile:1.7\n"),
            Just("# escape=`\n")
        ],
        image_ref(),
        proptest::collection::vec(line(), 0..12),
    )
        .prop_map(|(head, first, lines)| {
            let mut s = format!("{head}FROM {first}\n");
            for l in lines {
                s.push_str(&l);
                s.push('\n');
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn rewrite_then_parse_changes_only_image_tokens(src in dockerfile()) {
        // The check asserts every invariant and says whether the text parsed.
        prop_assert!(check::check(src.as_bytes()));
    }

    #[test]
    fn parse_never_panics_on_dockerfile_like_text(src in "[A-Za-z0-9 \\\\$#{}:=\"'`<@/.,\\[\\]\n\t-]{0,300}") {
        check::check(src.as_bytes());
    }

    #[test]
    fn parse_never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check::check(&data);
    }
}

fn corpus_files(shared: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![shared.join("corpus/dockerfile")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p
                .extension()
                .is_some_and(|x| ["jsonl", "md", "txt", "tsv"].iter().any(|e| x == *e))
                && !p.ends_with("result")
                && p.file_name().is_none_or(|n| n != "LICENSE")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn corpus_rewrites_change_only_image_tokens() {
    let Some(shared) = shared_dir() else { return };
    let mut rewritten = 0;
    for path in corpus_files(&shared) {
        let data = std::fs::read(&path).unwrap();
        check::check(&data);
        if let Ok(df) = Dockerfile::parse_bytes(&data)
            && df.images(&amd64()).is_ok_and(|i| !i.is_empty())
        {
            rewritten += 1;
        }
    }
    assert!(
        rewritten > 300,
        "only {rewritten} corpus files had images to rewrite"
    );
}

/// The rewritten corpus, parsed by BuildKit itself (the PyPI `dockerfile`
/// package, via the shared oracle script), gives the instructions we give
/// (so BuildKit reads the rewritten files as intended).
#[test]
fn buildkit_parses_rewritten_corpus_like_we_do() {
    let Some(shared) = shared_dir() else { return };
    let Some(python) = crate::corpus::oracle_python() else {
        return;
    };
    let mirror: Mirror = "127.0.0.1:5000/mirror".parse().unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-rewrite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut list = String::new();
    let mut ours = Vec::new();
    for (n, path) in corpus_files(&shared).iter().enumerate() {
        let Ok(df) = Dockerfile::parse_bytes(&std::fs::read(path).unwrap()) else {
            continue;
        };
        let Ok(out) = df.rewrite(&amd64(), &mirror, |_| true) else {
            continue;
        };
        let name = path.to_string_lossy();
        if out.edits.is_empty()
            || crate::oracle::V0_12_5_DIFFERENCES
                .iter()
                .any(|d| name.contains(d))
        {
            continue;
        }
        let file = dir.join(format!("{n}.Dockerfile"));
        std::fs::write(&file, &out.text).unwrap();
        list.push_str(&format!("{}\n", file.display()));
        ours.push(crate::oracle::answer_for(out.text.as_bytes()));
    }
    let list_file = dir.join("list");
    std::fs::write(&list_file, list).unwrap();
    let output = Command::new(&python)
        .arg("-I")
        .arg(shared.join("tools/dockerfile-oracle.py"))
        .arg("--list")
        .arg(&list_file)
        .output()
        .expect("run the oracle");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), ours.len());
    assert!(ours.len() > 300);
    for (mut want, got) in theirs.into_iter().zip(ours) {
        let file = want["file"].as_str().unwrap().to_owned();
        crate::oracle::normalize_pypi(&mut want);
        assert_eq!(want, got, "{file}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Where `oci-spec`'s reference parser agrees with distribution/reference,
/// our conversion gives the same value; the only references it may fail on
/// are IPv6 registry hosts (see the unit test in `reference.rs`).
#[test]
fn oci_spec_agrees_on_corpus_references_except_ipv6() {
    use oci_spec::distribution::Reference;
    let Some(shared) = shared_dir() else { return };
    let (mut agreed, mut ipv6) = (0, 0);
    for path in corpus_files(&shared) {
        let Ok(df) = Dockerfile::parse_bytes(&std::fs::read(&path).unwrap()) else {
            continue;
        };
        let Ok(images) = df.images(&amd64()) else {
            continue;
        };
        for image in images {
            let text = image.reference.to_string();
            let ours = Reference::from(&image.reference);
            match text.parse::<Reference>() {
                Ok(theirs) => {
                    assert_eq!(theirs, ours, "{}: {text}", path.display());
                    agreed += 1;
                }
                Err(_) if image.reference.domain().starts_with('[') => ipv6 += 1,
                Err(e) => panic!("{}: oci-spec rejects {text}: {e}", path.display()),
            }
        }
    }
    assert!(agreed > 500, "only {agreed} references compared");
    eprintln!("oci-spec agreed on {agreed} corpus references; {ipv6} IPv6 hosts it cannot parse");
}
