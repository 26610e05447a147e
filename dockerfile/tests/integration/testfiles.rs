//! BuildKit's parser testfiles: each `Dockerfile` dumps to its `result`
//! (BuildKit's `Node.Dump` format); the negative ones fail.

use kiln_dockerfile::{Dockerfile, GoQuoted, Instruction};

use crate::corpus::shared_dir;

/// BuildKit's `Node.Dump` of one instruction.
fn dump(i: &Instruction) -> String {
    let mut s = i.keyword().to_lowercase();
    let flags: Vec<String> = i.flags().map(|f| GoQuoted(f).to_string()).collect();
    if !flags.is_empty() {
        s.push_str(&format!(" [{}]", flags.join(" ")));
    }
    let values = i
        .values()
        .iter()
        .map(|v| format!(" {}", GoQuoted(v)))
        .collect::<String>();
    match i.trigger_keyword() {
        Some(t) => {
            let mut inner = t.to_lowercase();
            let tflags: Vec<String> = i
                .effective_flags()
                .map(|f| GoQuoted(f).to_string())
                .collect();
            if !tflags.is_empty() {
                inner.push_str(&format!(" [{}]", tflags.join(" ")));
            }
            inner.push_str(&values);
            s.push_str(&format!(" ({inner})"));
        }
        None => s.push_str(&values),
    }
    format!("({})", s.trim())
}

#[test]
fn positive_testfiles_reproduce_results() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("corpus/dockerfile/buildkit-testfiles/testfiles");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let src = std::fs::read(case.join("Dockerfile")).unwrap();
        let want = std::fs::read_to_string(case.join("result")).unwrap();
        let df =
            Dockerfile::parse_bytes(&src).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let got: String = df.instructions().iter().map(|i| dump(i) + "\n").collect();
        assert_eq!(got, want, "{}", case.display());
        checked += 1;
    }
    assert_eq!(checked, 33);
}

#[test]
fn negative_testfiles_fail() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("corpus/dockerfile/buildkit-testfiles/testfiles-negative");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let src = std::fs::read(case.join("Dockerfile")).unwrap();
        assert!(
            Dockerfile::parse_bytes(&src).is_err(),
            "{} should fail",
            case.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
