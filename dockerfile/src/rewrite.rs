//! Lossless rewriting of external image references to a mirror: only the
//! bytes of each chosen image token change; comments, continuations, flags
//! (including `--platform`), the `AS` clause and everything else stay.

use std::ops::Range;

use serde::Serialize;

use crate::error::{Error, ErrorKind};
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

/// The rewritten file and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The new Dockerfile text.
    pub text: String,
    /// The edits, in file order.
    pub edits: Vec<Edit>,
    /// Chosen references whose text is not a plain token (a quoted or
    /// escaped flag value) and were left alone.
    pub skipped: Vec<ImageUse>,
}

impl Dockerfile {
    /// Rewrites every external reference `choose` accepts to
    /// `{mirror}/{registry}/{repository}[:tag][@digest]`.
    ///
    /// An ARG-based FROM that resolves is replaced by its resolved literal;
    /// stage references, `scratch` and failed expansions are never touched.
    ///
    /// # Errors
    ///
    /// As [`Dockerfile::images`], and when a mirrored name is not a valid
    /// reference (e.g. too long).
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
            let spans = match &image.location {
                Location::Logical { instruction, range } => {
                    self.instructions[*instruction].source_ranges(range.clone())
                }
                Location::Source(r) => vec![r.clone()],
                Location::Unrewritable => Vec::new(),
            };
            if spans.is_empty() {
                skipped.push(image);
                continue;
            }
            let replacement = image
                .reference
                .mirrored(mirror)
                .map_err(|reason| {
                    let name = format!("{mirror}/{}", image.reference);
                    Error::at(ErrorKind::InvalidReference { name, reason }, image.line)
                })?
                .to_string();
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
