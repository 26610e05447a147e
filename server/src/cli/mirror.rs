//! `kiln mirror SRC DST`: copy an image (or index) between registries.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_oci_mirror::{
    CopyOptions, Credentials, ImageLocation, Platforms, Progress, RegistryClient, RegistryConfig,
    copy,
};

/// Copy an image between registries; never leaves a tag on half-copied
/// content, and a re-run resumes by skipping what is there.
#[derive(Debug, Args)]
pub(crate) struct MirrorArgs {
    /// Source `[docker://]HOST/REPO[:TAG][@DIGEST]`.
    src: ImageLocation,
    /// Destination `[docker://]HOST/REPO[:TAG]`.
    dst: ImageLocation,
    /// Copy every platform of an index (the default).
    #[arg(long, conflicts_with = "platform")]
    all_platforms: bool,
    /// Copy only this platform of an index (repeatable); the written index
    /// then lists only these, so its digest differs from the source's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Vec<String>,
    /// Plain HTTP to the source.
    #[arg(long)]
    src_insecure: bool,
    /// Plain HTTP to the destination.
    #[arg(long)]
    dest_insecure: bool,
    /// Source credentials `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    src_creds: Option<String>,
    /// Destination credentials `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    dest_creds: Option<String>,
    /// Extra CA certificate(s) (PEM) trusted for the source.
    #[arg(long, value_name = "PEM")]
    src_ca: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) trusted for the destination.
    #[arg(long, value_name = "PEM")]
    dest_ca: Option<PathBuf>,
    /// Docker client config with credentials (default:
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), used when
    /// no `--*-creds` are given: `auths`, `credHelpers` and `credsStore`
    /// (helpers run as `docker-credential-NAME get`).
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,
    /// Blobs in flight at once.
    #[arg(long)]
    jobs: Option<usize>,
    /// Fail fast on HTTP 429 instead of retrying after `Retry-After`.
    #[arg(long)]
    no_retry_rate_limited: bool,
    /// Attempts per request (and per blob) on connection errors, 5xx and
    /// 429, with exponential backoff.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    retries: Option<u32>,
    /// Give up when the whole copy has not finished within this long
    /// (`90s`, `10m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Also copy referrers (signatures, SBOMs) of the copied manifests.
    #[arg(long)]
    referrers: bool,
}

fn docker_config_path(explicit: &Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.clone());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

pub(super) fn creds(
    given: &Option<String>,
    registry: &str,
    config: &Option<PathBuf>,
) -> anyhow::Result<Option<Credentials>> {
    if let Some(s) = given {
        return match s.split_once(':') {
            Some((u, p)) => Ok(Some(Credentials::new(u, p))),
            None => bail!("credentials must be USER:PASSWORD"),
        };
    }
    let Some(path) = docker_config_path(config) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(json) => Credentials::from_docker_config(&json, registry)
            .with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.is_none() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn ca(path: &Option<PathBuf>) -> anyhow::Result<Vec<Vec<u8>>> {
    path.iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// A byte progress bar on a terminal; nothing otherwise.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub(crate) fn run(args: MirrorArgs) -> anyhow::Result<()> {
    let mut src_cfg = RegistryConfig::new(args.src.registry());
    src_cfg.insecure = args.src_insecure;
    src_cfg.credentials = creds(&args.src_creds, args.src.registry(), &args.docker_config)?;
    src_cfg.ca_certificates = ca(&args.src_ca)?;
    src_cfg.retry_rate_limited = !args.no_retry_rate_limited;
    let mut dst_cfg = RegistryConfig::new(args.dst.registry());
    dst_cfg.insecure = args.dest_insecure;
    dst_cfg.credentials = creds(&args.dest_creds, args.dst.registry(), &args.docker_config)?;
    dst_cfg.ca_certificates = ca(&args.dest_ca)?;
    dst_cfg.retry_rate_limited = !args.no_retry_rate_limited;
    if let Some(n) = args.retries {
        src_cfg.attempts = n;
        dst_cfg.attempts = n;
    }
    let mut options = CopyOptions {
        referrers: args.referrers,
        deadline: args.timeout,
        ..CopyOptions::default()
    };
    if !args.platform.is_empty() {
        options.platforms = Platforms::Only(args.platform.clone());
    }
    if let Some(j) = args.jobs {
        options.jobs = j;
    }
    let bar = progress_bar();
    let events = bar.clone();
    options.progress = Some(Arc::new(move |event: &Progress| match event {
        Progress::Planned { bytes, .. } => events.inc_length(*bytes),
        Progress::BlobSkipped { size, .. } => events.inc(*size),
        Progress::BlobBytes { bytes, .. } => events.inc(*bytes),
        Progress::BlobRestarted { bytes, .. } => {
            events.set_position(events.position().saturating_sub(*bytes));
        }
        Progress::ManifestWritten { reference } => events.set_message(format!("wrote {reference}")),
        _ => {}
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let src = RegistryClient::new(src_cfg)?;
        let dst = RegistryClient::new(dst_cfg)?;
        copy(&src, &args.src, &dst, &args.dst, &options).await
    });
    bar.finish_and_clear();
    let report = report?;
    eprintln!(
        "copied {} blobs ({} bytes), skipped {}, wrote {} manifests",
        report.blobs_copied, report.bytes_copied, report.blobs_skipped, report.manifests
    );
    if report.digest_changed {
        eprintln!("note: the filtered index has a new digest");
    }
    println!("{}", report.digest);
    Ok(())
}
