//! The Dockerfile fuzz check, shared by the fuzz target and the corpus
//! replay in `cargo test` (`dockerfile/tests/integration/fuzz_corpus.rs`).

use kiln_dockerfile::{Dockerfile, Mirror, ResolveOptions};

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
    // Every byte outside the edited spans is kept; the replacement stands
    // where the token's last piece was.
    let mut at = 0;
    let mut text_at = 0;
    for e in &out.edits {
        for span in &e.spans {
            let kept = &df.source()[at..span.start];
            assert_eq!(&out.text[text_at..text_at + kept.len()], kept);
            text_at += kept.len();
            at = span.end;
        }
        assert_eq!(
            &out.text[text_at..text_at + e.replacement.len()],
            e.replacement
        );
        text_at += e.replacement.len();
    }
    assert_eq!(&out.text[text_at..], &df.source()[at..]);
    // The result parses to the same instructions, and its external images
    // are the mirrored originals (already-mirrored names stay as they are).
    let again = Dockerfile::parse(&out.text).expect("rewritten text parses");
    assert_eq!(again.instructions().len(), df.instructions().len());
    for (a, b) in df.instructions().iter().zip(again.instructions()) {
        assert_eq!(a.keyword(), b.keyword());
        assert_eq!(
            (a.start_line(), a.end_line()),
            (b.start_line(), b.end_line())
        );
    }
    let after = again.images(&opts).expect("rewritten file resolves");
    assert_eq!(images.len(), after.len());
    for (before, now) in images.iter().zip(&after) {
        assert_eq!((before.kind, before.line), (now.kind, now.line));
        if out.skipped.iter().any(|s| &s.image == before) {
            assert_eq!(now.reference, before.reference);
        } else {
            let want = before.reference.mirrored(&mirror).expect("mirrored");
            assert_eq!(now.reference, want);
        }
    }
    true
}
