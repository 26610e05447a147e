//! The Dockerfile fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`dockerfile/tests/integration/fuzz_corpus.rs`).

use kiln_dockerfile::{Dockerfile, ImageKind, Mirror, ResolveOptions};

/// Parses `data` and, when it is a valid Dockerfile, resolves it and checks
/// that rewriting every external image to a mirror changes only those
/// tokens. Returns whether the input parsed (worth keeping in a corpus).
/// Panics on any broken invariant.
pub(crate) fn check(data: &[u8]) -> bool {
    let Ok(df) = Dockerfile::parse_bytes(data) else {
        return false;
    };
    let opts = ResolveOptions::new()
        .target_platform("linux/amd64".parse().expect("platform"))
        .build_platform("linux/amd64".parse().expect("platform"));
    let _ = df.resolve(&opts);
    let Ok(images) = df.images(&opts) else {
        return true;
    };
    let mirror: Mirror = "127.0.0.1:5000/m".parse().expect("mirror");
    let Ok(out) = df.rewrite(&opts, &mirror, |_| true) else {
        return true;
    };
    // Every byte outside the edited spans is kept.
    let mut at = 0;
    let mut rebuilt = String::new();
    let mut text_at = 0;
    for e in &out.edits {
        for (n, span) in e.spans.iter().enumerate() {
            let kept = &df.source()[at..span.start];
            assert_eq!(&out.text[text_at..text_at + kept.len()], kept);
            rebuilt.push_str(kept);
            text_at += kept.len();
            if n == 0 {
                assert_eq!(&out.text[text_at..text_at + e.replacement.len()], e.replacement);
                text_at += e.replacement.len();
            }
            rebuilt.push_str(&df.source()[span.clone()]);
            at = span.end;
        }
    }
    assert_eq!(&out.text[text_at..], &df.source()[at..]);
    // The result parses to the same instructions, and its external images
    // are the mirrored originals (already-mirrored names stay as they are).
    let again = Dockerfile::parse(&out.text).expect("rewritten text parses");
    assert_eq!(again.instructions().len(), df.instructions().len());
    for (a, b) in df.instructions().iter().zip(again.instructions()) {
        assert_eq!(a.keyword(), b.keyword());
        assert_eq!((a.start_line(), a.end_line()), (b.start_line(), b.end_line()));
    }
    let after = again.images(&opts).expect("rewritten file resolves");
    let rewritten: Vec<_> = images
        .iter()
        .filter(|u| out.skipped.iter().all(|s| s != *u))
        .collect();
    let after_kept: Vec<_> = after
        .iter()
        .filter(|u| out.skipped.iter().all(|s| s.line != u.line || s.kind != u.kind))
        .collect();
    assert_eq!(rewritten.len(), after_kept.len());
    for (before, now) in rewritten.iter().zip(&after_kept) {
        assert_eq!(before.kind, now.kind);
        assert_eq!(before.line, now.line);
        let want = before.reference.mirrored(&mirror).expect("mirrored");
        if before.kind != ImageKind::Syntax {
            assert_eq!(now.reference, want);
        }
    }
    true
}
