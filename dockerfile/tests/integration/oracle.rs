//! Every file of the shared corpus against BuildKit's answers: current
//! BuildKit (`oracle-head.jsonl`, `synthetic-from/expected-head.jsonl`: AST,
//! warnings and FROM resolution) and BuildKit 0.12.5 via the PyPI
//! `dockerfile` package (`oracle.jsonl`, `expected-pypi-v0.12.5.jsonl`: AST
//! modulo the ENV/LABEL separator nodes it lacks).

use std::path::Path;

use kiln_dockerfile::{Dockerfile, Instruction, ResolveOptions};
use serde_json::{Value, json};

use crate::corpus::{jsonl, shared_dir};

/// Versions differences documented in synthetic-from/README.md.
pub(crate) const V0_12_5_DIFFERENCES: [&str; 3] = ["/37-", "/51-", "/52-"];

fn amd64() -> ResolveOptions {
    ResolveOptions::new()
        .target_platform("linux/amd64".parse().unwrap())
        .build_platform("linux/amd64".parse().unwrap())
}

/// One instruction in the oracle's shape; `separators` keeps the ENV/LABEL
/// separator values current BuildKit has.
fn instruction(i: &Instruction, separators: bool, head: bool) -> Value {
    let mut values: Vec<&str> = if separators {
        i.values().iter().map(String::as_str).collect()
    } else {
        i.values_without_separators()
    };
    if !head {
        // The PyPI binding passes values through C strings: a NUL ends them.
        for v in &mut values {
            *v = v.split('\0').next().unwrap_or_default();
        }
    }
    let mut original = i.original().to_owned();
    if !head {
        // BuildKit 0.12.5 appended each heredoc body and terminator to
        // `Node.Original`; current BuildKit does not.
        for h in i.heredocs() {
            original = format!("{original}\n{}{}\n", h.content, h.name);
        }
    }
    let mut o = json!({
        "cmd": i.keyword(),
        "sub_cmd": i.trigger_keyword(),
        "json": i.is_json(),
        "original": original,
        "start_line": i.start_line(),
        "end_line": i.end_line(),
        "flags": i.flags().collect::<Vec<_>>(),
        "value": values,
    });
    if !i.heredocs().is_empty() {
        let docs: Vec<Value> = i
            .heredocs()
            .iter()
            .map(|h| {
                if head {
                    json!({"name": h.name, "fd": h.file_descriptor, "expand": h.expand, "chomp": h.chomp, "content": h.content})
                } else {
                    json!({"name": h.name, "fd": h.file_descriptor, "content": h.content})
                }
            })
            .collect();
        o["heredocs"] = docs.into();
    }
    if head && i.is("from") && i.trigger_keyword().is_none() {
        let v = i.values();
        let name = match v {
            [_, a, n] if a.eq_ignore_ascii_case("as") => n.to_lowercase(),
            _ => String::new(),
        };
        o["stage_name"] = name.into();
    }
    o
}

/// Our answer for a file's bytes in the PyPI (BuildKit 0.12.5) shape.
pub(crate) fn answer_for(bytes: &[u8]) -> Value {
    answer_bytes(bytes, false)
}

/// Drops what the PyPI oracle script adds beyond BuildKit's answer.
pub(crate) fn normalize_pypi(want: &mut Value) {
    let obj = want.as_object_mut().unwrap();
    obj.remove("file");
    obj.remove("error_kind");
    obj.remove("dockerfile_parse");
    // Fields the oracle script computes itself, not BuildKit's.
    for ins in obj
        .get_mut("instructions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for k in ["stage_name", "stage_name_valid", "from_arity_ok"] {
            ins.as_object_mut().unwrap().remove(k);
        }
    }
}

/// Our answer for one file, in the oracle's shape.
fn answer(path: &Path, head: bool) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    answer_bytes(&bytes, head)
}

fn answer_bytes(bytes: &[u8], head: bool) -> Value {
    match Dockerfile::parse_bytes(bytes) {
        Err(e) => {
            let mut o = json!({"ok": false, "error": e.kind().to_string()});
            // The PyPI binding reports no line.
            if let Some(l) = e.line().filter(|_| head) {
                o["error_line"] = l.into();
            }
            o
        }
        Ok(df) => {
            let ins: Vec<Value> = df
                .instructions()
                .iter()
                .map(|i| instruction(i, head, head))
                .collect();
            let mut o = json!({"ok": true, "instructions": ins});
            if head {
                o["escape"] = df.escape().to_string().into();
                o["resolve"] = serde_json::to_value(df.resolve(&amd64())).unwrap();
                if !df.warnings().is_empty() {
                    o["warnings"] = df.warnings().into();
                }
            }
            o
        }
    }
}

/// Compares every entry; returns the mismatches (file and first difference).
fn check(expected: &[Value], base: &Path, head: bool, skip: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut compared = 0;
    for want in expected {
        let file = want["file"].as_str().expect("file");
        if skip.iter().any(|s| file.contains(s)) {
            continue;
        }
        let rel = file.strip_prefix("corpus/").unwrap_or(file);
        let path = base.join(rel);
        let mut want = want.clone();
        if head {
            let obj = want.as_object_mut().unwrap();
            obj.remove("file");
        } else {
            normalize_pypi(&mut want);
        }
        let got = answer(&path, head);
        compared += 1;
        if got != want {
            failures.push(format!(
                "{file}:\n  want {}\n  got  {}",
                first_difference(&want, &got).0,
                first_difference(&want, &got).1
            ));
        }
    }
    assert!(compared > 0, "no oracle entries compared");
    failures
}

fn first_difference(a: &Value, b: &Value) -> (String, String) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                if y.get(k) != Some(v) {
                    return match y.get(k) {
                        Some(w) => {
                            let (p, q) = first_difference(v, w);
                            (format!("{k}: {p}"), format!("{k}: {q}"))
                        }
                        None => (format!("{k}: {v}"), format!("{k}: <missing>")),
                    };
                }
            }
            let extra: Vec<&String> = y.keys().filter(|k| !x.contains_key(*k)).collect();
            ("<no extra keys>".into(), format!("extra keys {extra:?}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                if v != w {
                    let (p, q) = first_difference(v, w);
                    return (format!("[{i}] {p}"), format!("[{i}] {q}"));
                }
            }
            unreachable!("arrays differ")
        }
        _ => (a.to_string(), b.to_string()),
    }
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} file(s) differ from BuildKit:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_matches_current_buildkit() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("corpus/dockerfile");
    report(check(
        &jsonl(&dir.join("oracle-head.jsonl")),
        &dir,
        true,
        &[],
    ));
}

#[test]
fn synthetic_from_cases_match_current_buildkit() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("corpus/dockerfile");
    let expected = jsonl(&dir.join("synthetic-from/expected-head.jsonl"));
    assert_eq!(expected.len(), 54);
    report(check(&expected, &dir, true, &[]));
}

#[test]
fn corpus_matches_buildkit_0_12_5() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("corpus/dockerfile");
    report(check(&jsonl(&dir.join("oracle.jsonl")), &dir, false, &[]));
}

#[test]
fn synthetic_from_cases_match_buildkit_0_12_5_except_documented_versions() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("corpus/dockerfile");
    let expected = jsonl(&dir.join("synthetic-from/expected-pypi-v0.12.5.jsonl"));
    report(check(&expected, &dir, false, &V0_12_5_DIFFERENCES));
}
