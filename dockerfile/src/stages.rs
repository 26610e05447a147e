//! The stage model and FROM resolution: BuildKit's `instructions.Parse`
//! checks, meta args (global `ARG`s) with caller build args and automatic
//! platform args, expansion of each base name and `--platform`, and the
//! lookup that decides stage / `scratch` / image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::error::{Error, ErrorKind};
use crate::flags::{self, FlagType};
use crate::gostr::GoQuoted;
use crate::parser::Dockerfile;
use crate::platform::{self, Platform};
use crate::reference::ImageRef;
use crate::shell::{Env, Lexer};

/// What the caller of a build decides: build args, platforms, target.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    build_args: BTreeMap<String, String>,
    target_platform: Option<Platform>,
    build_platform: Option<Platform>,
    target_stage: Option<String>,
}

impl ResolveOptions {
    /// Defaults: no build args, host platform for build and target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `--build-arg KEY=VALUE`.
    #[must_use]
    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(key.into(), value.into());
        self
    }

    /// Sets the target platform (`--platform`).
    #[must_use]
    pub fn target_platform(mut self, p: Platform) -> Self {
        self.target_platform = Some(p);
        self
    }

    /// Sets the build (builder's) platform.
    #[must_use]
    pub fn build_platform(mut self, p: Platform) -> Self {
        self.build_platform = Some(p);
        self
    }

    /// Sets the target stage (`--target`).
    #[must_use]
    pub fn target_stage(mut self, name: impl Into<String>) -> Self {
        self.target_stage = Some(name.into());
        self
    }

    pub(crate) fn build_args(&self) -> &BTreeMap<String, String> {
        &self.build_args
    }
}

/// Variables with BuildKit's `AddOrReplace`, plus which of them depend on
/// a platform the caller did not fix (so a FROM using them resolves
/// differently per platform).
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvList {
    vars: HashMap<String, String>,
    platform_dependent: HashSet<String>,
}

impl EnvList {
    pub(crate) fn set(&mut self, key: &str, value: String) {
        self.vars.insert(key.to_owned(), value);
    }

    fn set_dependent(&mut self, key: &str, dependent: bool) {
        if dependent {
            self.platform_dependent.insert(key.to_owned());
        } else {
            self.platform_dependent.remove(key);
        }
    }

    /// Whether any of `names` depends on an unfixed platform.
    pub(crate) fn depends_on_platform<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> bool {
        names
            .into_iter()
            .any(|n| self.platform_dependent.contains(n))
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// A global `ARG` (before the first `FROM`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaArg {
    /// Its name.
    pub key: String,
    /// The default as written (quotes kept), if any.
    pub value: Option<String>,
    /// The value FROM lines see (build arg, or expanded default), if any.
    pub expanded: Option<String>,
}

/// What a stage's base resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Base {
    /// An external image.
    Image(ImageRef),
    /// An earlier stage, by index.
    Stage(usize),
    /// The empty image.
    Scratch,
    /// BuildKit fails on this base.
    Error(Error),
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among stages.
    pub index: usize,
    /// Lower-cased `AS` name, if any.
    pub name: Option<String>,
    /// Index of the FROM instruction in [`Dockerfile::instructions`].
    pub instruction: usize,
    /// Line of the FROM.
    pub line: usize,
    /// The base as written.
    pub base_raw: String,
    /// Byte range of the base in the FROM's logical line (`None` in the
    /// rare lines BuildKit itself cuts mid-character).
    pub base_range: Option<Range<usize>>,
    /// The base after expansion (empty when expansion failed).
    pub base_expanded: String,
    /// Variables the base used that were not set.
    pub unmatched_vars: Vec<String>,
    /// `--platform` as written.
    pub platform_raw: Option<String>,
    /// `--platform` after expansion.
    pub platform_expanded: Option<String>,
    /// Whether the base name used a platform argument (`TARGETARCH`, ...,
    /// directly or through a global ARG) that the caller did not fix: it
    /// resolves differently per platform.
    pub platform_dependent: bool,
    /// What the base resolved to.
    pub base: Base,
}

/// The outcome of FROM resolution over a whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// Global ARGs in order.
    pub meta_args: Vec<MetaArg>,
    /// Stages up to the first fatal error.
    pub stages: Vec<Stage>,
    /// The first fatal error BuildKit reports before resolving images
    /// (invalid instructions, blank base names, bad platforms).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub error: Option<Error>,
}

fn display<S: Serializer>(e: &Option<Error>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}

impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("index", &self.index)?;
        m.serialize_entry("name", self.name.as_deref().unwrap_or(""))?;
        m.serialize_entry("line", &self.line)?;
        m.serialize_entry("base_raw", &self.base_raw)?;
        m.serialize_entry("base_expanded", &self.base_expanded)?;
        if !self.unmatched_vars.is_empty() {
            m.serialize_entry("unmatched_vars", &self.unmatched_vars)?;
        }
        if let Some(p) = &self.platform_raw {
            m.serialize_entry("platform_raw", p)?;
        }
        if let Some(p) = &self.platform_expanded {
            m.serialize_entry("platform_expanded", p)?;
        }
        match &self.base {
            Base::Image(r) => {
                m.serialize_entry("kind", "image")?;
                m.serialize_entry("normalized", &r.to_string())?;
            }
            Base::Stage(i) => {
                m.serialize_entry("kind", "stage")?;
                m.serialize_entry("stage_ref", i)?;
            }
            Base::Scratch => m.serialize_entry("kind", "scratch")?,
            Base::Error(e) => {
                m.serialize_entry("kind", "error")?;
                m.serialize_entry("error", &e.kind().to_string())?;
            }
        }
        m.end()
    }
}

const KNOWN: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// A FROM as `instructions.parseFrom` reads it.
#[derive(Debug)]
pub(crate) struct FromLine {
    pub(crate) instruction: usize,
    pub(crate) line: usize,
    pub(crate) base: String,
    pub(crate) base_range: Option<Range<usize>>,
    pub(crate) name: Option<String>,
    pub(crate) platform: Option<String>,
    /// Columns of the base token and of the `--platform` flag.
    pub(crate) base_column: Option<usize>,
    pub(crate) platform_column: Option<usize>,
}

/// An `ARG` name with its default as written.
pub(crate) type ArgPair = (String, Option<String>);

/// The instruction-level view: meta args and FROM lines, after BuildKit's
/// per-instruction checks.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    pub(crate) meta_args: Vec<ArgPair>,
    pub(crate) froms: Vec<FromLine>,
}

fn parse_arg(values: &[String]) -> Result<Vec<ArgPair>, ErrorKind> {
    if values.is_empty() {
        return Err(ErrorKind::AtLeastOneArgument("ARG"));
    }
    values
        .iter()
        .map(|a| match a.split_once('=') {
            Some(("", _)) => Err(ErrorKind::BlankArgName),
            Some((k, v)) => Ok((k.to_owned(), Some(v.to_owned()))),
            None => Ok((a.clone(), None)),
        })
        .collect()
}

fn stage_name(args: &[String]) -> Result<Option<String>, ErrorKind> {
    match args {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if valid {
                Ok(Some(lower))
            } else {
                Err(ErrorKind::InvalidStageName(name.clone()))
            }
        }
        [_] => Ok(None),
        _ => Err(ErrorKind::FromArity),
    }
}

impl Dockerfile {
    /// BuildKit's `instructions.Parse` checks, collecting meta args and FROMs.
    pub(crate) fn outline(&self) -> Result<Outline, Error> {
        let mut out = Outline::default();
        for (i, ins) in self.instructions.iter().enumerate() {
            let at = |k| Error::at(k, ins.start_line());
            let keyword = ins.keyword().to_ascii_lowercase();
            if !KNOWN.contains(&keyword.as_str()) {
                return Err(at(ErrorKind::UnknownInstruction(ins.keyword().to_owned())));
            }
            match keyword.as_str() {
                "from" => {
                    let values = &ins.node.values;
                    let name = stage_name(values).map_err(at)?;
                    let flag_words: Vec<String> = ins.flags().map(str::to_owned).collect();
                    let platform = flags::parse(&flag_words, &[("platform", FlagType::String)])
                        .map_err(at)?
                        .remove(0)
                        .pop()
                        // BuildKit only evaluates a non-empty `--platform`.
                        .filter(|p| !p.is_empty());
                    let base_range = ins.node.rest.clone().and_then(|rest| {
                        let text = ins.original.get(rest.clone())?;
                        let first = crate::args::split_ws(text).into_iter().next()?;
                        Some(rest.start + first.start..rest.start + first.end)
                    });
                    let base_column = base_range.as_ref().and_then(|r| self.column_in(i, r.start));
                    let platform_column = ins
                        .node
                        .flags
                        .iter()
                        .find(|f| f.text.starts_with("--platform"))
                        .and_then(|f| self.column_in(i, f.raw.start));
                    out.froms.push(FromLine {
                        instruction: i,
                        line: ins.start_line(),
                        base: values[0].clone(),
                        base_range,
                        name,
                        platform,
                        base_column,
                        platform_column,
                    });
                    continue;
                }
                "arg" => {
                    let pairs = parse_arg(&ins.node.values).map_err(at)?;
                    if out.froms.is_empty() {
                        out.meta_args.extend(pairs);
                        continue;
                    }
                }
                "onbuild" => check_onbuild(ins).map_err(at)?,
                _ => {}
            }
            if out.froms.is_empty() {
                return Err(at(ErrorKind::NoBuildStage));
            }
        }
        Ok(out)
    }

    /// Resolves every stage's base as BuildKit does, without failing: errors
    /// are recorded in the result (per stage, or as the fatal `error`).
    pub fn resolve(&self, opts: &ResolveOptions) -> Resolution {
        let outline = match self.outline() {
            Ok(o) => o,
            Err(e) => {
                return Resolution {
                    meta_args: Vec::new(),
                    stages: Vec::new(),
                    error: Some(e),
                };
            }
        };
        let (env, meta_args, error) = self.meta_env(&outline, opts);
        let mut res = Resolution {
            meta_args,
            stages: Vec::new(),
            error,
        };
        if res.error.is_some() {
            return res;
        }
        let lex = Lexer::new(self.escape);
        // Earlier stages by name; a later duplicate wins, as in BuildKit.
        let mut by_name = HashMap::new();
        for (index, from) in outline.froms.iter().enumerate() {
            let (stage, fatal) = resolve_stage(&lex, &env, index, from, &by_name);
            if let Some(n) = &stage.name {
                by_name.insert(n.clone(), index);
            }
            res.stages.push(stage);
            if fatal.is_some() {
                res.error = fatal;
                break;
            }
        }
        res
    }

    /// The stages, or the first error BuildKit would fail the build with
    /// (including an invalid image reference in any stage).
    ///
    /// # Errors
    ///
    /// The first fatal error in file order.
    pub fn stages(&self, opts: &ResolveOptions) -> Result<Vec<Stage>, Error> {
        let res = self.resolve(opts);
        if let Some(e) = res.error {
            return Err(e);
        }
        for s in &res.stages {
            if let Base::Error(e) = &s.base {
                return Err(e.clone());
            }
        }
        Ok(res.stages)
    }

    /// Automatic args, then meta args, as FROM lines see them.
    pub(crate) fn meta_env(
        &self,
        outline: &Outline,
        opts: &ResolveOptions,
    ) -> (EnvList, Vec<MetaArg>, Option<Error>) {
        let target = opts.target_platform.clone().unwrap_or_else(Platform::host);
        let build = opts.build_platform.clone().unwrap_or_else(Platform::host);
        let target_stage = opts
            .target_stage
            .clone()
            .or_else(|| outline.froms.last().and_then(|f| f.name.clone()))
            .unwrap_or_else(|| "default".to_owned());
        let mut env = EnvList::default();
        for (k, v) in platform::automatic_args(&build, &target, &target_stage) {
            let fixed = opts.build_args.contains_key(&k)
                || (k.starts_with("TARGET") && opts.target_platform.is_some())
                || (k.starts_with("BUILD") && opts.build_platform.is_some())
                || k == "TARGETSTAGE";
            env.set_dependent(&k, !fixed);
            let v = opts.build_args.get(&k).cloned().unwrap_or(v);
            env.set(&k, v);
        }
        let lex = Lexer::new(self.escape);
        let arg_lines: Vec<usize> = self
            .instructions
            .iter()
            .take_while(|i| !i.is("from"))
            .filter(|i| i.is("arg"))
            .flat_map(|i| std::iter::repeat_n(i.start_line(), i.node.values.len()))
            .collect();
        let mut meta = Vec::new();
        for (n, (key, value)) in outline.meta_args.iter().enumerate() {
            let mut dependent = false;
            let expanded = match (opts.build_args.get(key), value) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => match lex.process_word(def, &env) {
                    Ok(e) => {
                        dependent = env.depends_on_platform(&e.matched);
                        Some(e.result)
                    }
                    Err(reason) => {
                        let line = arg_lines.get(n).copied().unwrap_or(0);
                        let kind = ErrorKind::Expansion {
                            word: def.clone(),
                            reason,
                        };
                        return (env, meta, Some(Error::at(kind, line)));
                    }
                },
                (None, None) => None,
            };
            if let Some(v) = &expanded {
                env.set(key, v.clone());
                env.set_dependent(key, dependent);
            }
            meta.push(MetaArg {
                key: key.clone(),
                value: value.clone(),
                expanded,
            });
        }
        (env, meta, None)
    }
}

fn check_onbuild(ins: &crate::Instruction) -> Result<(), ErrorKind> {
    let Some(trigger) = ins.node.trigger.as_deref() else {
        return Err(ErrorKind::AtLeastOneArgument("ONBUILD"));
    };
    let words: Vec<String> = ins.flags().map(str::to_owned).collect();
    flags::parse(&words, &[])?;
    let upper = crate::gostr::trim_space(&trigger.keyword).to_uppercase();
    match upper.as_str() {
        "ONBUILD" => Err(ErrorKind::OnbuildChain),
        "MAINTAINER" | "FROM" => Err(ErrorKind::OnbuildTrigger(upper)),
        _ => Ok(()),
    }
}

/// One stage: expand the base and platform, then stage / scratch / image.
/// The second value is a fatal error that stops the build here.
fn resolve_stage(
    lex: &Lexer,
    env: &EnvList,
    index: usize,
    from: &FromLine,
    by_name: &HashMap<String, usize>,
) -> (Stage, Option<Error>) {
    let mut stage = Stage {
        index,
        name: from.name.clone(),
        instruction: from.instruction,
        line: from.line,
        base_raw: from.base.clone(),
        base_range: from.base_range.clone(),
        base_expanded: String::new(),
        unmatched_vars: Vec::new(),
        platform_raw: from.platform.clone(),
        platform_expanded: None,
        platform_dependent: false,
        base: Base::Scratch,
    };
    let fatal = |stage: &mut Stage, kind: ErrorKind| {
        let column = match kind {
            ErrorKind::EmptyPlatform(_) | ErrorKind::InvalidPlatform { .. } => from.platform_column,
            _ => from.base_column,
        };
        let e = Error::at(kind, from.line).with_column(column);
        stage.base = Base::Error(e.clone());
        Some(e)
    };
    match lex.process_word(&from.base, env) {
        Ok(e) => {
            stage.platform_dependent = env.depends_on_platform(&e.matched);
            stage.base_expanded = e.result;
            stage.unmatched_vars = e.unmatched.into_iter().collect();
        }
        Err(reason) => {
            // BuildKit records what it had not found before failing.
            stage.unmatched_vars = lex
                .unmatched_until_error(&from.base, env)
                .into_iter()
                .collect();
            let kind = ErrorKind::Expansion {
                word: from.base.clone(),
                reason,
            };
            let f = fatal(&mut stage, kind);
            return (stage, f);
        }
    }
    if stage.base_expanded.is_empty() {
        let f = fatal(&mut stage, ErrorKind::BlankBaseName(from.base.clone()));
        return (stage, f);
    }
    if let Some(raw) = &from.platform {
        match lex.process_word(raw, env) {
            Ok(e) if e.result.is_empty() => {
                let f = fatal(&mut stage, ErrorKind::EmptyPlatform(raw.clone()));
                return (stage, f);
            }
            Ok(e) => {
                if let Err(why) = e.result.parse::<Platform>() {
                    let kind = ErrorKind::InvalidPlatform {
                        expression: raw.clone(),
                        reason: why.to_string(),
                    };
                    stage.platform_expanded = Some(e.result);
                    let f = fatal(&mut stage, kind);
                    return (stage, f);
                }
                stage.platform_expanded = Some(e.result);
            }
            Err(reason) => {
                let kind = ErrorKind::InvalidPlatform {
                    expression: raw.clone(),
                    reason: format!("failed to process {}: {reason}", GoQuoted(raw)),
                };
                let f = fatal(&mut stage, kind);
                return (stage, f);
            }
        }
    }
    let name = &stage.base_expanded;
    stage.base = if let Some(&index) = by_name.get(name) {
        Base::Stage(index)
    } else if name == "scratch" {
        Base::Scratch
    } else {
        match name.parse::<ImageRef>() {
            Ok(r) => Base::Image(r),
            Err(reason) => Base::Error(
                Error::at(
                    ErrorKind::InvalidReference {
                        name: name.clone(),
                        reason,
                    },
                    from.line,
                )
                .with_column(from.base_column),
            ),
        }
    };
    (stage, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> ResolveOptions {
        ResolveOptions::new()
            .target_platform("linux/amd64".parse().unwrap())
            .build_platform("linux/amd64".parse().unwrap())
    }

    fn kinds(src: &str, opts: &ResolveOptions) -> Vec<String> {
        let df = Dockerfile::parse(src).unwrap();
        df.stages(opts)
            .unwrap()
            .iter()
            .map(|s| match &s.base {
                Base::Image(r) => r.to_string(),
                Base::Stage(i) => format!("stage {i}"),
                Base::Scratch => "scratch".into(),
                Base::Error(e) => format!("error {e}"),
            })
            .collect()
    }

    #[test]
    fn stage_lookup_is_exact_and_backwards() {
        let src = "FROM alpine AS Build\nFROM build\nFROM later\nFROM scratch AS later\nFROM alpine:3 AS alpine\nFROM alpine\n";
        assert_eq!(
            kinds(src, &amd64()),
            [
                "docker.io/library/alpine:latest",
                "stage 0",
                "docker.io/library/later:latest",
                "scratch",
                "docker.io/library/alpine:3",
                "stage 4"
            ]
        );
    }

    #[test]
    fn build_args_and_platform_args() {
        let src = "ARG REG=docker.io\nARG TAG\nFROM ${REG}/library/alpine:${TAG:-3.20}\nFROM --platform=$BUILDPLATFORM golang:1.22-$TARGETARCH\n";
        let opts = amd64()
            .build_arg("TAG", "3.21")
            .target_platform("linux/arm64".parse().unwrap());
        assert_eq!(
            kinds(src, &opts),
            [
                "docker.io/library/alpine:3.21",
                "docker.io/library/golang:1.22-arm64"
            ]
        );
    }

    #[test]
    fn platform_dependence_is_tracked_through_meta_args() {
        let src = "ARG IMG=golang:1.22-${TARGETARCH}\nARG FIXED=alpine\nFROM $IMG\nFROM alpine-$TARGETOS\nFROM $FIXED\nFROM --platform= busybox\n";
        let df = Dockerfile::parse(src).unwrap();
        let host_default = df.stages(&ResolveOptions::new()).unwrap();
        let dependent: Vec<bool> = host_default.iter().map(|s| s.platform_dependent).collect();
        assert_eq!(dependent, [true, true, false, false]);
        assert_eq!(host_default[3].platform_raw, None);
        let fixed = df.stages(&amd64()).unwrap();
        assert!(fixed.iter().all(|s| !s.platform_dependent));
    }

    #[test]
    fn fatal_errors_stop_resolution() {
        let df = Dockerfile::parse("ARG B\nFROM $B\nFROM alpine\n").unwrap();
        let res = df.resolve(&amd64());
        assert_eq!(res.stages.len(), 1);
        let e = res.error.unwrap();
        assert_eq!(e.to_string(), "line 2: base name ($B) should not be blank");
        assert_eq!(e.column(), Some(6));
        let df = Dockerfile::parse("FROM a\nONBUILD FROM b\n").unwrap();
        assert_eq!(
            df.resolve(&amd64()).error.unwrap().kind(),
            &ErrorKind::OnbuildTrigger("FROM".into())
        );
        let df = Dockerfile::parse("RUN x\n").unwrap();
        assert_eq!(
            df.resolve(&amd64()).error.unwrap().kind(),
            &ErrorKind::NoBuildStage
        );
    }
}
