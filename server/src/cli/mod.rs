//! Command-line interface: one module per crate's subcommands.

mod cache;
mod dockerfile;
mod ext4;
mod mirror;
mod token;
mod vm;

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
    }
}
