//! `kiln cache plan | access`.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kiln_cache_key::{
    BuildId, CachePlan, Compression, CompressionType, GlobalKey, Registry, Repository, TenantScope,
};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the BuildKit cache options of a build.
    ///
    /// `buildctl` and `buildx` print one argument per line (an argument
    /// never contains a line break), ready for
    /// `mapfile -t cache < <(kiln cache plan ...)` and
    /// `buildctl build ... "${cache[@]}"`; `json` prints the plan.
    Plan {
        #[command(flatten)]
        plan: PlanArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Buildctl)]
        format: PlanFormat,
    },
    /// Print the repository access a build's registry token must carry.
    ///
    /// `scopes` prints one distribution token scope per line
    /// (`repository:cache/acme:pull,push`); `json` prints
    /// `[{"repository", "actions"}]`.
    Access {
        #[command(flatten)]
        plan: PlanArgs,
        /// The build id: the result goes to `builds/{id}`.
        #[arg(long, value_name = "ID")]
        build_id: BuildId,
        /// A base-image repository as named in the registry (e.g. the
        /// mirrored `docker.io/library/alpine`); repeatable.
        #[arg(long = "base-image", value_name = "REPOSITORY")]
        base_images: Vec<Repository>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = AccessFormat::Scopes)]
        format: AccessFormat,
    },
}

/// Who builds, where, and how the cache is exported.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The registry: `HOST[:PORT][/PREFIX]`.
    #[arg(long)]
    registry: Registry,
    #[command(flatten)]
    who: Who,
    /// Global cache key (`node`, `python`...): tenant builds also import
    /// `cache/global/{key}`; admin builds need one to export to.
    #[arg(long, value_name = "KEY")]
    global_key: Option<GlobalKey>,
    /// Layer compression of the exported cache.
    #[arg(long, value_parser = parse_compression)]
    compression: Option<CompressionType>,
    /// Compression level (0..=9 for gzip and estargz, 0..=22 for zstd).
    #[arg(long, value_name = "N", requires = "compression")]
    compression_level: Option<u8>,
    /// Recompress layers that exist with another compression.
    #[arg(long, requires = "compression")]
    force_compression: bool,
    /// Whether a failed cache export is ignored (default: true for tenant
    /// builds, false for admin builds).
    #[arg(long, value_name = "BOOL")]
    ignore_error: Option<bool>,
    /// The registry speaks plain HTTP (`registry.insecure=true`).
    #[arg(long)]
    insecure: bool,
}

/// Exactly one of `--tenant` and `--admin`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Who {
    /// A tenant build: imports the global cache (with --global-key) and
    /// its own, exports its own.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<TenantScope>,
    /// An admin build: imports and exports the global cache. The server
    /// grants this only to admin credentials; this offline tool trusts
    /// whoever runs it.
    #[arg(long)]
    admin: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PlanFormat {
    /// `--import-cache V ... --export-cache V`, one item per line.
    Buildctl,
    /// `--cache-from V ... --cache-to V`, one item per line.
    Buildx,
    /// The plan as JSON.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AccessFormat {
    /// One token scope per line.
    Scopes,
    /// JSON.
    Json,
}

fn parse_compression(s: &str) -> Result<CompressionType, String> {
    s.parse()
        .map_err(|_| "expected one of uncompressed, gzip, estargz, zstd, zstd:chunked".to_owned())
}

impl PlanArgs {
    fn plan(&self) -> anyhow::Result<CachePlan> {
        let mut plan = match &self.who.tenant {
            Some(t) => CachePlan::tenant(self.registry.clone(), t.clone(), self.global_key.clone()),
            None => CachePlan::admin(self.registry.clone(), self.global_key.clone())
                .context("--admin needs --global-key")?,
        };
        if let Some(kind) = self.compression {
            let mut c = Compression::new(kind).forced(self.force_compression);
            if let Some(level) = self.compression_level {
                c = c.with_level(level)?;
            }
            plan = plan.with_compression(c);
        }
        if let Some(ignore) = self.ignore_error {
            plan = plan.with_ignore_error(ignore);
        }
        Ok(plan.with_insecure(self.insecure))
    }
}

fn print_lines(lines: impl IntoIterator<Item = impl std::fmt::Display>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Plan { plan, format } => {
            let plan = plan.plan()?;
            match format {
                PlanFormat::Buildctl => print_lines(plan.buildctl_args()),
                PlanFormat::Buildx => print_lines(plan.buildx_args()),
                PlanFormat::Json => print_json(&plan),
            }
        }
        Command::Access {
            plan,
            build_id,
            base_images,
            format,
        } => {
            let access = plan.plan()?.access(&build_id, &base_images)?;
            match format {
                AccessFormat::Scopes => print_lines(&access),
                AccessFormat::Json => print_json(&access),
            }
        }
    }
}
