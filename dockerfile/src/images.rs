//! External images a build pulls, in file order: the `# syntax=` frontend,
//! each FROM that is neither a stage nor `scratch`, and `COPY --from=` /
//! `RUN --mount=...,from=` values that name neither a stage nor an index.
//! ONBUILD triggers belong to later builds and are not included.

use std::collections::HashSet;
use std::ops::Range;

use serde::Serialize;

use crate::directives::detect_syntax;
use crate::error::{Error, ErrorKind};
use crate::mount;
use crate::parser::Dockerfile;
use crate::reference::ImageRef;
use crate::shell::Lexer;
use crate::stages::{Base, EnvList, ResolveOptions, Stage};

/// Where an image reference comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ImageKind {
    /// `FROM image`.
    From,
    /// `COPY --from=image`.
    CopyFrom,
    /// `RUN --mount=...,from=image`.
    MountFrom,
    /// `# syntax=image` (the BuildKit frontend).
    Syntax,
}

/// Where the reference's text is, for rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// Bytes of an instruction's logical line.
    Logical {
        instruction: usize,
        range: Range<usize>,
    },
    /// Bytes of the source.
    Source(Range<usize>),
    /// Not a plain token in the file (quoted or escaped flag value).
    Unrewritable,
}

/// One external image reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageUse {
    /// Which construct names it.
    pub kind: ImageKind,
    /// The 1-based line of that construct.
    pub line: usize,
    /// The normalised reference (`docker.io/library/alpine:3.20`).
    pub reference: ImageRef,
    /// The repository without tag/digest, for token scopes.
    pub repository: String,
    /// The stage the reference appears in (for FROM: the stage it starts).
    pub stage: Option<String>,
    /// For FROM: the base depends on a platform the caller did not fix.
    #[serde(skip)]
    pub(crate) platform_dependent: bool,
    #[serde(skip)]
    pub(crate) location: Location,
}

impl ImageUse {
    /// Whether this FROM resolves differently per platform (it used
    /// `TARGETARCH` & co. while no platform was chosen): rewriting it to one
    /// literal would pin the build to this machine's platform.
    pub fn platform_dependent(&self) -> bool {
        self.platform_dependent
    }
}

/// `strconv.Atoi`: an optional sign and decimal digits that fit an i64.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Dockerfile {
    /// External image references in file order.
    ///
    /// # Errors
    ///
    /// The first error BuildKit would fail the build with: invalid
    /// instructions, blank or invalid base names, invalid `--from` images,
    /// bad `--platform` values, an invalid `# syntax=` reference.
    pub fn images(&self, opts: &ResolveOptions) -> Result<Vec<ImageUse>, Error> {
        let stages = self.stages(opts)?;
        let mut out = Vec::new();
        if let Some((value, line, span)) = detect_syntax(&self.source) {
            let reference = value.parse::<ImageRef>().map_err(|reason| {
                Error::at(
                    ErrorKind::InvalidReference {
                        name: value.clone(),
                        reason,
                    },
                    line,
                )
            })?;
            let location = if span.is_empty() {
                Location::Unrewritable
            } else {
                Location::Source(span)
            };
            out.push(ImageUse {
                kind: ImageKind::Syntax,
                line,
                repository: reference.repository(),
                reference,
                stage: None,
                platform_dependent: false,
                location,
            });
        }
        let outline = self.outline()?;
        let (meta_env, _, _) = self.meta_env(&outline, opts);
        let mut current: Option<&Stage> = None;
        let mut stage_env = EnvList::default();
        let names: HashSet<String> = stages.iter().filter_map(|s| s.name.clone()).collect();
        let mut next_stage = stages.iter().peekable();
        for (i, ins) in self.instructions.iter().enumerate() {
            if let Some(s) = next_stage.next_if(|s| s.instruction == i) {
                current = Some(s);
                stage_env = EnvList::default();
                if let Base::Image(r) = &s.base {
                    out.push(ImageUse {
                        kind: ImageKind::From,
                        line: s.line,
                        reference: r.clone(),
                        repository: r.repository(),
                        stage: s.name.clone(),
                        platform_dependent: s.platform_dependent,
                        location: match &s.base_range {
                            Some(range) => Location::Logical {
                                instruction: i,
                                range: range.clone(),
                            },
                            None => Location::Unrewritable,
                        },
                    });
                }
                continue;
            }
            let Some(stage) = current else { continue };
            let line = ins.start_line();
            if ins.is("arg") || ins.is("env") {
                self.track_stage_env(ins, &meta_env, opts, &mut stage_env);
            } else if ins.is("copy") {
                for flag in ins.node.flags.iter().rev() {
                    let Some(value) = flag.text.strip_prefix("--from=") else {
                        continue;
                    };
                    if value.is_empty() {
                        // BuildKit: an empty --from is no --from.
                        break;
                    }
                    let raw = ins.original.get(flag.raw.clone()).unwrap_or_default();
                    let location = match raw.strip_prefix("--from=") {
                        Some(v) if v == value => Location::Logical {
                            instruction: i,
                            range: flag.raw.end - v.len()..flag.raw.end,
                        },
                        _ => Location::Unrewritable,
                    };
                    let column = self.column_in(i, flag.raw.start);
                    if let Some(r) = external(value, stages.len(), &names, line)
                        .map_err(|e| e.with_column(column))?
                    {
                        out.push(use_of(ImageKind::CopyFrom, line, r, stage, location));
                    }
                    break;
                }
            } else if ins.is("run") {
                for flag in &ins.node.flags {
                    let Some(value) = flag.text.strip_prefix("--mount=") else {
                        continue;
                    };
                    let raw = ins.original.get(flag.raw.clone()).unwrap_or_default();
                    let Some(from) = mount::from_field(value).map_err(|k| Error::at(k, line))?
                    else {
                        continue;
                    };
                    if from.value.is_empty() {
                        continue;
                    }
                    let lex = Lexer::new(self.escape);
                    let expanded = lex
                        .process_word(&from.value, &stage_env)
                        .map_err(|reason| {
                            let kind = ErrorKind::Expansion {
                                word: from.value.clone(),
                                reason,
                            };
                            Error::at(kind, line)
                        })?;
                    let location = match (raw.strip_prefix("--mount="), &from.range) {
                        (Some(v), Some(r)) if v == value => {
                            let start = flag.raw.start + "--mount=".len();
                            Location::Logical {
                                instruction: i,
                                range: start + r.start..start + r.end,
                            }
                        }
                        _ => Location::Unrewritable,
                    };
                    let column = self.column_in(i, flag.raw.start);
                    if let Some(r) = external(&expanded.result, stages.len(), &names, line)
                        .map_err(|e| e.with_column(column))?
                    {
                        out.push(use_of(ImageKind::MountFrom, line, r, stage, location));
                    }
                }
            }
        }
        Ok(out)
    }

    /// ARG/ENV inside a stage, for expanding `--mount` values.
    fn track_stage_env(
        &self,
        ins: &crate::Instruction,
        meta: &EnvList,
        opts: &ResolveOptions,
        env: &mut EnvList,
    ) {
        use crate::shell::Env;
        let lex = Lexer::new(self.escape);
        let expand = |w: &str, env: &EnvList| lex.process_word(w, env).map(|e| e.result).ok();
        if ins.is("arg") {
            for word in ins.values() {
                let (key, default) = match word.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (word.as_str(), None),
                };
                let value = opts
                    .build_args()
                    .get(key)
                    .cloned()
                    .or_else(|| default.and_then(|d| expand(d, env)))
                    .or_else(|| meta.get(key).map(str::to_owned));
                if let Some(v) = value {
                    env.set(key, v);
                }
            }
        } else {
            for pair in ins.values().chunks(3) {
                if let [k, v, ..] = pair
                    && let Some(v) = expand(v, env)
                {
                    env.set(k, v);
                }
            }
        }
    }
}

fn use_of(
    kind: ImageKind,
    line: usize,
    r: ImageRef,
    stage: &Stage,
    location: Location,
) -> ImageUse {
    ImageUse {
        kind,
        line,
        repository: r.repository(),
        reference: r,
        stage: stage.name.clone(),
        platform_dependent: false,
        location,
    }
}

/// A `--from` value: `None` for a stage name (case-insensitive) or index.
fn external(
    value: &str,
    stage_count: usize,
    names: &HashSet<String>,
    line: usize,
) -> Result<Option<ImageRef>, Error> {
    if let Some(index) = atoi(value) {
        if usize::try_from(index).is_ok_and(|i| i < stage_count) {
            return Ok(None);
        }
        return Err(Error::at(
            ErrorKind::InvalidStageIndex(value.to_owned()),
            line,
        ));
    }
    if names.contains(&value.to_lowercase()) {
        return Ok(None);
    }
    value.parse::<ImageRef>().map(Some).map_err(|reason| {
        Error::at(
            ErrorKind::InvalidReference {
                name: value.to_owned(),
                reason,
            },
            line,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(src: &str) -> Vec<(ImageKind, usize, String, Option<String>)> {
        let df = Dockerfile::parse(src).unwrap();
        let opts = ResolveOptions::new().target_platform("linux/amd64".parse().unwrap());
        df.images(&opts)
            .unwrap()
            .into_iter()
            .map(|u| (u.kind, u.line, u.reference.to_string(), u.stage))
            .collect()
    }

    #[test]
    fn finds_every_external_image_in_order() {
        let src = "# syntax=docker/dockerfile:1\nFROM golang:1.22 AS build\nCOPY --from=BUILD /a /b\nCOPY --from=nginx:1 /c /d\nRUN --mount=type=bind,from=busybox,target=/x true\nRUN --mount=from=0 true\nONBUILD COPY --from=evil /a /b\nFROM scratch\nCOPY --from=1 /a /b\n";
        assert_eq!(
            refs(src),
            [
                (
                    ImageKind::Syntax,
                    1,
                    "docker.io/docker/dockerfile:1".into(),
                    None
                ),
                (
                    ImageKind::From,
                    2,
                    "docker.io/library/golang:1.22".into(),
                    Some("build".into())
                ),
                (
                    ImageKind::CopyFrom,
                    4,
                    "docker.io/library/nginx:1".into(),
                    Some("build".into())
                ),
                (
                    ImageKind::MountFrom,
                    5,
                    "docker.io/library/busybox:latest".into(),
                    Some("build".into())
                ),
            ]
        );
    }

    #[test]
    fn bad_from_values_fail_like_buildkit() {
        let df = Dockerfile::parse("FROM a\nCOPY --from=5 /a /b\n").unwrap();
        let e = df.images(&ResolveOptions::new()).unwrap_err();
        assert_eq!(e.to_string(), "line 2: invalid stage index 5");
        assert_eq!(e.column(), Some(6));
        let df = Dockerfile::parse("FROM a\nCOPY --from=Bad:Ref /a /b\n").unwrap();
        assert!(df.images(&ResolveOptions::new()).is_err());
    }

    #[test]
    fn mount_from_expands_stage_args() {
        let src = "ARG IMG=alpine:3\nFROM scratch\nARG IMG\nRUN --mount=from=$IMG,target=/x true\n";
        assert_eq!(refs(src)[0].2, "docker.io/library/alpine:3");
    }
}
