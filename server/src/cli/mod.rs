//! Command-line interface: one module per crate's subcommands.

mod build;
mod cache;
mod dockerfile;
mod ext4;
mod gc;
mod mirror;
mod run;
mod server;
mod token;
pub(crate) mod vm;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Kiln: OCI images, build caches and microVMs.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse Dockerfiles exactly as BuildKit does.
    #[command(subcommand)]
    Dockerfile(dockerfile::Command),
    /// Plan two-tier BuildKit build caches.
    #[command(subcommand)]
    Cache(cache::Command),
    /// Convert OCI images into bootable ext4 disk images.
    #[command(subcommand)]
    Ext4(ext4::Command),
    /// Copy an image (or index) between registries.
    Mirror(mirror::MirrorArgs),
    /// Run images in microVMs.
    #[command(subcommand)]
    Vm(vm::Command),
    /// Mint and verify per-repository registry tokens.
    #[command(subcommand)]
    Token(token::Command),
    /// Build a source directory or tarball on a `kiln serve` (the log to
    /// standard error, the pushed image to standard output; Ctrl-C cancels
    /// the build).
    Build(build::BuildArgs),
    /// Run an image of a `kiln serve` registry as a microVM instance there
    /// (console to standard output, its exit status as this command's).
    Run(run::RunArgs),
    /// Collect garbage in a `kiln serve` store: unreferenced blobs past the
    /// grace period, stale uploads, untagged manifests by retention (safe
    /// while servers run on it).
    Gc(gc::GcArgs),
    /// Re-read every blob of a `kiln serve` store and check its digest, and
    /// every manifest's references (exit status 1 on any problem).
    Scrub(gc::ScrubArgs),
    /// Run the reference server: an OCI registry with token auth and
    /// tenants (zero configuration: 127.0.0.1:5000, ./kiln-data).
    Serve(crate::serve::ServeArgs),
}

/// Runs the chosen subcommand.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dockerfile(cmd) => dockerfile::run(cmd),
        Command::Cache(cmd) => cache::run(cmd),
        Command::Ext4(cmd) => ext4::run(cmd),
        Command::Mirror(args) => mirror::run(args),
        Command::Token(cmd) => token::run(cmd),
        Command::Vm(cmd) => vm::run_cmd(cmd),
        Command::Serve(args) => crate::serve::run(args),
        Command::Run(args) => run::run(args),
        Command::Build(args) => build::run(args),
        Command::Gc(args) => gc::gc(args),
        Command::Scrub(args) => gc::scrub(args),
    }
}

/// A duration as `90`, `90s`, `10m`, `2h` or `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration {s:?}: use s, m, h or d")),
    };
    let secs = n
        .checked_mul(factor)
        .ok_or_else(|| format!("duration {s:?} too long"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
