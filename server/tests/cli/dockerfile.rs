//! `kiln dockerfile parse | images | rewrite`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> String {
    repo().join("examples/Dockerfile").display().to_string()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn shared() -> Option<PathBuf> {
    let dir =
        std::env::var_os("KILN_SHARED_DIR").map_or_else(|| repo().join("../shared"), PathBuf::from);
    if dir.join("corpus/dockerfile").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").is_err(),
        "shared corpus missing at {}: required in CI",
        dir.display()
    );
    eprintln!(
        "\n!!!!! SKIPPING: shared corpus not at {} !!!!!\n",
        dir.display()
    );
    None
}

#[test]
fn images_of_the_example() {
    let out = kiln(&[
        "dockerfile",
        "images",
        &example(),
        "--platform",
        "linux/amd64",
    ]);
    let got: Vec<(String, u64, String, String)> = stdout_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["kind"].as_str().unwrap().to_owned(),
                u["line"].as_u64().unwrap(),
                u["reference"].as_str().unwrap().to_owned(),
                u["repository"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        (
            "syntax",
            1,
            "docker.io/docker/dockerfile:1.7",
            "docker.io/docker/dockerfile",
        ),
        (
            "from",
            6,
            "docker.io/library/golang:1.22-bookworm",
            "docker.io/library/golang",
        ),
        (
            "mount-from",
            8,
            "ghcr.io/example/tools:1.0",
            "ghcr.io/example/tools",
        ),
        (
            "from",
            18,
            "docker.io/library/debian:12-slim",
            "docker.io/library/debian",
        ),
        (
            "copy-from",
            20,
            "docker.io/library/busybox:1.36",
            "docker.io/library/busybox",
        ),
    ];
    let want: Vec<(String, u64, String, String)> = want
        .iter()
        .map(|(k, l, r, p)| (k.to_string(), *l, r.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn build_args_change_the_answer() {
    let out = kiln(&[
        "dockerfile",
        "images",
        &example(),
        "--build-arg",
        "BASE=alpine:3.20",
        "--build-arg",
        "GO_VERSION=1.23",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v[1]["reference"], "docker.io/library/golang:1.23-bookworm");
    assert_eq!(v[3]["reference"], "docker.io/library/alpine:3.20");
}

#[test]
fn buildkit_errors_exit_non_zero_with_the_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["dockerfile", "images", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ARG BASE\nFROM $BASE\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: base name ($BASE) should not be blank"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn rewrite_only_the_chosen_reference() {
    let edits = std::env::temp_dir().join(format!("kiln-edits-{}.json", std::process::id()));
    let out = kiln(&[
        "dockerfile",
        "rewrite",
        &example(),
        "--mirror",
        "127.0.0.1:5000/mirror",
        "--only",
        "busybox:1.36",
        "--edits",
        edits.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = std::fs::read_to_string(example()).unwrap();
    let want = original.replace(
        "--from=busybox:1.36",
        "--from=127.0.0.1:5000/mirror/docker.io/library/busybox:1.36",
    );
    assert_ne!(want, original);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    let edits_json: Value = serde_json::from_slice(&std::fs::read(&edits).unwrap()).unwrap();
    assert_eq!(edits_json[0]["line"], 20);
    assert_eq!(edits_json[0]["original"], "busybox:1.36");
    std::fs::remove_file(&edits).ok();
}

#[test]
fn rewrite_rejects_a_bad_mirror() {
    let out = kiln(&["dockerfile", "rewrite", &example(), "--mirror", "http://x"]);
    assert!(!out.status.success());
}

/// `kiln dockerfile parse` gives, for every synthetic FROM/ARG case, the
/// instructions current BuildKit gives (ENV/LABEL without separators).
#[test]
fn parse_matches_buildkit_for_synthetic_cases() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("corpus/dockerfile");
    let expected = std::fs::read_to_string(dir.join("synthetic-from/expected-head.jsonl")).unwrap();
    let mut checked = 0;
    for line in expected.lines() {
        let want: Value = serde_json::from_str(line).unwrap();
        let file = want["file"].as_str().unwrap().trim_start_matches("corpus/");
        let path = dir.join(file);
        let out = kiln(&["dockerfile", "parse", path.to_str().unwrap()]);
        if want["ok"] == false {
            assert!(!out.status.success(), "{file}");
            continue;
        }
        let got = stdout_json(&out);
        let want_ins = want["instructions"].as_array().unwrap();
        let got_ins = got.as_array().unwrap();
        assert_eq!(got_ins.len(), want_ins.len(), "{file}");
        for (g, w) in got_ins.iter().zip(want_ins) {
            for key in [
                "cmd",
                "sub_cmd",
                "json",
                "original",
                "start_line",
                "end_line",
                "flags",
            ] {
                assert_eq!(g[key], w[key], "{file}: {key}");
            }
            let mut values: Vec<Value> = w["value"].as_array().unwrap().clone();
            let cmd = w["cmd"].as_str().unwrap().to_lowercase();
            if cmd == "env" || cmd == "label" {
                values = values.chunks(3).flat_map(|c| c[..2].to_vec()).collect();
            }
            assert_eq!(g["value"], Value::Array(values), "{file}");
            let docs = w["heredocs"].as_array().cloned().unwrap_or_default();
            let got_docs = g["heredocs"].as_array().unwrap();
            assert_eq!(got_docs.len(), docs.len(), "{file}");
            for (gd, wd) in got_docs.iter().zip(&docs) {
                assert_eq!((&gd["name"], &gd["content"]), (&wd["name"], &wd["content"]));
            }
        }
        checked += 1;
    }
    assert!(checked >= 50);
}
