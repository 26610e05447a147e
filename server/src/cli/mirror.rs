//! `kiln mirror SRC DST`: copy an image (or index) between registries.

use anyhow::{Context, bail};
use clap::Args;
use kiln_oci_mirror::{
    CopyOptions, Credentials, ImageLocation, Platforms, RegistryClient, RegistryConfig, copy,
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
    /// Blobs in flight at once.
    #[arg(long)]
    jobs: Option<usize>,
    /// Fail fast on HTTP 429 instead of retrying after `Retry-After`.
    #[arg(long)]
    no_retry_rate_limited: bool,
}

fn creds(s: &Option<String>) -> anyhow::Result<Option<Credentials>> {
    match s {
        None => Ok(None),
        Some(s) => match s.split_once(':') {
            Some((u, p)) => Ok(Some(Credentials::new(u, p))),
            None => bail!("credentials must be USER:PASSWORD"),
        },
    }
}

pub(crate) fn run(args: MirrorArgs) -> anyhow::Result<()> {
    let mut src_cfg = RegistryConfig::new(args.src.registry());
    src_cfg.insecure = args.src_insecure;
    src_cfg.credentials = creds(&args.src_creds)?;
    src_cfg.retry_rate_limited = !args.no_retry_rate_limited;
    let mut dst_cfg = RegistryConfig::new(args.dst.registry());
    dst_cfg.insecure = args.dest_insecure;
    dst_cfg.credentials = creds(&args.dest_creds)?;
    dst_cfg.retry_rate_limited = !args.no_retry_rate_limited;
    let mut options = CopyOptions::default();
    if !args.platform.is_empty() {
        options.platforms = Platforms::Only(args.platform.clone());
    }
    if let Some(j) = args.jobs {
        options.jobs = j;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let src = RegistryClient::new(src_cfg)?;
        let dst = RegistryClient::new(dst_cfg)?;
        copy(&src, &args.src, &dst, &args.dst, &options).await
    })?;
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
