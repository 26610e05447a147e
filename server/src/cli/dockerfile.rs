//! `kiln dockerfile parse | images | rewrite`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_dockerfile::{
    Dockerfile, ImageRef, Instruction, Mirror, Platform, ResolveOptions, SkipReason,
};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print BuildKit's parse of FILE as JSON (one object per instruction).
    Parse {
        /// The Dockerfile (`-` for standard input).
        file: PathBuf,
    },
    /// Print the external images a build of FILE pulls, in file order.
    Images {
        /// The Dockerfile (`-` for standard input).
        file: PathBuf,
        #[command(flatten)]
        resolve: Resolve,
    },
    /// Print FILE with its external image references pointed at a mirror.
    Rewrite {
        /// The Dockerfile (`-` for standard input).
        file: PathBuf,
        /// Mirror location: `HOST[:PORT][/PREFIX]`.
        #[arg(long)]
        mirror: Mirror,
        /// Rewrite only this reference (as normalised, e.g. `alpine:3.20`);
        /// repeatable. Default: all external references.
        #[arg(long = "only", value_name = "REF")]
        only: Vec<ImageRef>,
        /// Also write the list of edits as JSON to this file.
        #[arg(long, value_name = "FILE")]
        edits: Option<PathBuf>,
        #[command(flatten)]
        resolve: Resolve,
    },
}

/// What a build invocation decides.
#[derive(Debug, Args)]
pub(crate) struct Resolve {
    /// A build argument KEY=VALUE (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = parse_build_arg)]
    build_args: Vec<(String, String)>,
    /// Target platform `os/arch[/variant]` (default: this machine's).
    #[arg(long)]
    platform: Option<Platform>,
    /// Target stage (`--target`), which sets TARGETSTAGE.
    #[arg(long)]
    target: Option<String>,
}

fn parse_build_arg(s: &str) -> Result<(String, String), String> {
    // Like `docker build --build-arg KEY` without `=`, an empty value is
    // not taken from the environment here: be explicit.
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl Resolve {
    fn options(&self) -> ResolveOptions {
        let mut o = ResolveOptions::new();
        for (k, v) in &self.build_args {
            o = o.build_arg(k, v);
        }
        if let Some(p) = &self.platform {
            o = o.target_platform(p.clone());
        }
        if let Some(t) = &self.target {
            o = o.target_stage(t);
        }
        o
    }
}

/// One instruction in the shape the PyPI `dockerfile` package exposes.
#[derive(Debug, Serialize)]
struct InstructionJson<'a> {
    cmd: &'a str,
    sub_cmd: Option<&'a str>,
    json: bool,
    original: &'a str,
    start_line: usize,
    end_line: usize,
    flags: Vec<&'a str>,
    value: Vec<&'a str>,
    heredocs: Vec<HeredocJson<'a>>,
}

#[derive(Debug, Serialize)]
struct HeredocJson<'a> {
    name: &'a str,
    fd: u64,
    content: &'a str,
}

impl<'a> From<&'a Instruction> for InstructionJson<'a> {
    fn from(i: &'a Instruction) -> Self {
        Self {
            cmd: i.keyword(),
            sub_cmd: i.trigger_keyword(),
            json: i.is_json(),
            original: i.original(),
            start_line: i.start_line(),
            end_line: i.end_line(),
            flags: i.flags().collect(),
            value: i.values_without_separators(),
            heredocs: i
                .heredocs()
                .iter()
                .map(|h| HeredocJson {
                    name: &h.name,
                    fd: h.file_descriptor,
                    content: &h.content,
                })
                .collect(),
        }
    }
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        return Ok(buf);
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn load(file: &Path) -> anyhow::Result<Dockerfile> {
    let bytes = read(file)?;
    Dockerfile::parse_bytes(&bytes).with_context(|| file.display().to_string())
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Parse { file } => {
            let df = load(&file)?;
            let items: Vec<InstructionJson<'_>> = df
                .instructions()
                .iter()
                .map(InstructionJson::from)
                .collect();
            print_json(&items)
        }
        Command::Images { file, resolve } => {
            let df = load(&file)?;
            let images = df
                .images(&resolve.options())
                .with_context(|| file.display().to_string())?;
            print_json(&images)
        }
        Command::Rewrite {
            file,
            mirror,
            only,
            edits,
            resolve,
        } => {
            let df = load(&file)?;
            let wanted: BTreeSet<String> = only.iter().map(ToString::to_string).collect();
            let mut seen = BTreeSet::new();
            let out = df
                .rewrite(&resolve.options(), &mirror, |u| {
                    let r = u.reference.to_string();
                    let take = wanted.is_empty() || wanted.contains(&r);
                    seen.insert(r);
                    take
                })
                .with_context(|| file.display().to_string())?;
            for s in &out.skipped {
                let why = match s.reason {
                    SkipReason::NotPlainToken => "is not a plain token in the file",
                    SkipReason::NotMirrorable => "has no valid mirrored name",
                    SkipReason::PlatformDependent => {
                        "depends on the target platform (pass --platform to pin it)"
                    }
                    _ => "cannot be rewritten",
                };
                eprintln!(
                    "warning: line {}: {} {why}; left as written",
                    s.image.line, s.image.reference
                );
            }
            for w in wanted.difference(&seen) {
                eprintln!("warning: --only {w}: no such external reference");
            }
            if let Some(path) = edits {
                let json = serde_json::to_vec_pretty(&out.edits)?;
                std::fs::write(&path, json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            std::io::stdout().lock().write_all(out.text.as_bytes())?;
            Ok(())
        }
    }
}
