//! Lossless rewriting of external image references to a mirror: only the
//! bytes of each chosen image token change; comments, continuations, flags
//! (including `--platform`), the `AS` clause and everything else stay.

use std::ops::Range;

use serde::Serialize;

use crate::error::Error;
use crate::images::{ImageKind, ImageUse, Location};
use crate::parser::Dockerfile;
use crate::reference::Mirror;
use crate::stages::ResolveOptions;

/// One replaced token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edit {
    /// What kind of reference it was.
    pub kind: ImageKind,
    /// Its line.
    pub line: usize,
    /// Byte ranges of the original token in the source (several when a
    /// line continuation split it; the replacement takes the last one's
    /// place and the others are removed).
    pub spans: Vec<Range<usize>>,
    /// The token as written (pieces joined).
    pub original: String,
    /// What it became.
    pub replacement: String,
}

/// Why a chosen reference was left as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SkipReason {
    /// A quoted or escaped flag value, not a plain token in the file.
    NotPlainToken,
    /// The mirrored name is not a valid reference (e.g. too long).
    NotMirrorable,
    /// The FROM depends on `TARGETARCH` & co. and no platform was chosen:
    /// one literal would pin every platform's build to this machine's.
    PlatformDependent,
}

/// A chosen reference that was not rewritten, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The reference.
    pub image: ImageUse,
    /// Why.
    pub reason: SkipReason,
}

/// The rewritten file and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The new Dockerfile text.
    pub text: String,
    /// The edits, in file order.
    pub edits: Vec<Edit>,
    /// Chosen references left as written (the build then pulls them from
    /// their origin, as it would without a mirror).
    pub skipped: Vec<Skipped>,
}

impl Dockerfile {
    /// Rewrites every external reference `choose` accepts to
    /// `{mirror}/{registry}/{repository}[:tag][@digest]`.
    ///
    /// An ARG-based FROM that resolves is replaced by its resolved literal;
    /// stage references, `scratch` and failed expansions are never touched.
    ///
    /// References that cannot be rewritten are listed in
    /// [`Rewrite::skipped`] with the reason; the rest still are.
    ///
    /// # Errors
    ///
    /// As [`Dockerfile::images`].
    pub fn rewrite(
        &self,
        opts: &ResolveOptions,
        mirror: &Mirror,
        mut choose: impl FnMut(&ImageUse) -> bool,
    ) -> Result<Rewrite, Error> {
        let mut edits = Vec::new();
        let mut skipped = Vec::new();
        for image in self.images(opts)? {
            if !choose(&image) {
                continue;
            }
            if image.platform_dependent() {
                skipped.push(Skipped {
                    image,
                    reason: SkipReason::PlatformDependent,
                });
                continue;
            }
            let spans = match &image.location {
                Location::Logical { instruction, range } => {
                    self.instructions[*instruction].source_ranges(range.clone())
                }
                Location::Source(r) => vec![r.clone()],
                Location::Unrewritable => Vec::new(),
            };
            if spans.is_empty() {
                skipped.push(Skipped {
                    image,
                    reason: SkipReason::NotPlainToken,
                });
                continue;
            }
            let Ok(mirrored) = image.reference.mirrored(mirror) else {
                skipped.push(Skipped {
                    image,
                    reason: SkipReason::NotMirrorable,
                });
                continue;
            };
            let replacement = mirrored.to_string();
            let original = spans.iter().map(|r| &self.source[r.clone()]).collect();
            edits.push(Edit {
                kind: image.kind,
                line: image.line,
                spans,
                original,
                replacement,
            });
        }
        edits.sort_by_key(|e| e.spans[0].start);
        let mut text = String::with_capacity(self.source.len() + edits.len() * 32);
        let mut at = 0;
        for edit in &edits {
            // A token split by line continuations: earlier pieces go, the
            // replacement takes the last piece's place, so no line becomes
            // empty (an empty line would not end the continuation).
            for span in &edit.spans {
                text.push_str(&self.source[at..span.start]);
                at = span.end;
            }
            text.push_str(&edit.replacement);
        }
        text.push_str(&self.source[at..]);
        Ok(Rewrite {
            text,
            edits,
            skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_dependent_and_unmirrorable_references_are_skipped_not_fatal() {
        // A name that fits, and would not under the mirror (over 255).
        let long = format!("localhost:5000/{}", "a".repeat(235));
        let src = format!(
            "FROM alpine-$TARGETARCH\nFROM {long}:1\nFROM debian:12\nFROM localhost:5000/app:1\n"
        );
        let df = Dockerfile::parse(&src).unwrap();
        let mirror: Mirror = "127.0.0.1:5000".parse().unwrap();
        let out = df
            .rewrite(&ResolveOptions::new(), &mirror, |_| true)
            .unwrap();
        let reasons: Vec<SkipReason> = out.skipped.iter().map(|s| s.reason.clone()).collect();
        assert_eq!(
            reasons,
            [SkipReason::PlatformDependent, SkipReason::NotMirrorable]
        );
        assert_eq!(out.edits.len(), 2);
        assert!(out.text.ends_with(
            "FROM 127.0.0.1:5000/docker.io/library/debian:12\nFROM 127.0.0.1:5000/localhost__5000/app:1\n"
        ));
        // With the platform chosen, the FROM is rewritten for it.
        let opts = ResolveOptions::new().target_platform("linux/arm64".parse().unwrap());
        let out = df.rewrite(&opts, &mirror, |_| true).unwrap();
        assert!(
            out.text
                .starts_with("FROM 127.0.0.1:5000/docker.io/library/alpine-arm64:latest\n")
        );
    }

    fn rewrite(src: &str) -> String {
        let df = Dockerfile::parse(src).unwrap();
        let mirror: Mirror = "127.0.0.1:5000".parse().unwrap();
        let opts = ResolveOptions::new().target_platform("linux/amd64".parse().unwrap());
        df.rewrite(&opts, &mirror, |_| true).unwrap().text
    }

    #[test]
    fn only_image_tokens_change() {
        let src = "# syntax=docker/dockerfile:1\n# keep\nFROM --platform=$BUILDPLATFORM alpine:3.20 as Build\nFROM build\nCOPY --from=nginx:1 /a /b\n";
        assert_eq!(
            rewrite(src),
            "# syntax=127.0.0.1:5000/docker.io/docker/dockerfile:1\n# keep\nFROM --platform=$BUILDPLATFORM 127.0.0.1:5000/docker.io/library/alpine:3.20 as Build\nFROM build\nCOPY --from=127.0.0.1:5000/docker.io/library/nginx:1 /a /b\n"
        );
    }

    #[test]
    fn arg_based_and_split_tokens() {
        let src = "ARG BASE=debian:12\nFROM $BASE\nFROM alp\\\n  # c\nine:3.19 AS x\n";
        // The continuation line must not become empty.
        let split = "FROM alp\\\n\n  \nine:3\nRUN b\n";
        assert_eq!(
            rewrite(split),
            "FROM \\\n\n  \n127.0.0.1:5000/docker.io/library/alpine:3\nRUN b\n"
        );
        assert_eq!(
            rewrite(src),
            "ARG BASE=debian:12\nFROM 127.0.0.1:5000/docker.io/library/debian:12\nFROM \\\n  # c\n127.0.0.1:5000/docker.io/library/alpine:3.19 AS x\n"
        );
    }
}
