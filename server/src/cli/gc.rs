//! `kiln gc` and `kiln scrub`: garbage collection and digest checks over a
//! `kiln serve` store, by hand. Both are safe while servers run on the
//! same store (the collector follows the registry's protocol with writers;
//! a scrub only reads).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::serve::convert::Conversions;
use crate::serve::{Config, open_registry};

/// Where the store is: the server's configuration, overridden by flags.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The server's TOML configuration file (its data directory, storage
    /// and `[gc]` settings).
    #[arg(long, short, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./kiln-data].
    #[arg(long, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Registry content in an S3-compatible bucket, `s3://BUCKET[/PREFIX]`
    /// (`AWS_*` environment) [default: DATA_DIR/registry].
    #[arg(long, env = "KILN_STORAGE")]
    storage: Option<String>,
}

impl StoreArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir.clone_from(d);
        }
        if let Some(s) = &self.storage {
            config.storage = Some(s.clone());
        }
        if config.storage.is_none() {
            let root = config.data_dir.join("registry");
            anyhow::ensure!(
                root.is_dir(),
                "no registry at {} (give --data-dir or --storage)",
                root.display()
            );
        }
        Ok(config)
    }
}

/// `kiln gc`.
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Report what would be removed; remove nothing (conversions of deleted
    /// manifests are pruned by a real run only).
    #[arg(long)]
    dry_run: bool,
    /// Keep unreferenced blobs stored or linked more recently than this
    /// [default: the config's `[gc] grace_secs`, 1h].
    #[arg(long, value_parser = super::parse_duration)]
    grace: Option<Duration>,
    /// Delete manifests no tag reaches once older than this (`7d`)
    /// [default: the config's `untagged_retention_secs`, or keep them].
    #[arg(long, value_parser = super::parse_duration)]
    delete_untagged_after: Option<Duration>,
    /// Remove upload sessions idle this long [default: the config's, 24h].
    #[arg(long, value_parser = super::parse_duration)]
    upload_ttl: Option<Duration>,
    /// Print the report as JSON (with every untagged manifest removed).
    #[arg(long)]
    json: bool,
}

/// `kiln scrub`.
#[derive(Debug, Args)]
pub(crate) struct ScrubArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs `kiln gc`: exit status 0 when the run completed.
pub(crate) fn gc(args: GcArgs) -> anyhow::Result<()> {
    let config = args.store.config()?;
    let mut options = config.gc.options();
    options.dry_run = args.dry_run;
    if let Some(g) = args.grace {
        options.grace = g;
    }
    if let Some(u) = args.delete_untagged_after {
        options.untagged_after = Some(u);
    }
    if let Some(t) = args.upload_ttl {
        options.upload_ttl = t;
    }
    let (report, pruned) = runtime()?.block_on(async {
        let registry = Arc::new(open_registry(&config)?);
        let spinner = ProgressBar::new_spinner().with_message(if args.dry_run {
            "collecting garbage (dry run)"
        } else {
            "collecting garbage (first waiting out the write deadline)"
        });
        spinner.enable_steady_tick(Duration::from_millis(200));
        let report = registry.collect(&options).await;
        spinner.finish_and_clear();
        let report = report.context("garbage collection")?;
        // Then the conversions of manifests no repository holds any more
        // (as the online collector does after each run).
        let pruned = if args.dry_run {
            None
        } else {
            let (conversions, _) = Conversions::open(
                config.data_dir.join("conversions"),
                registry,
                Duration::from_secs(config.conversion_lease_secs),
            )?;
            Some(conversions.prune().await.context("pruning conversions")?)
        };
        anyhow::Ok((report, pruned))
    })?;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        if let (Some(n), Some(map)) = (pruned, json.as_object_mut()) {
            map.insert("conversions_pruned".into(), n.into());
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for p in &report.problems {
            eprintln!("problem: {p}");
        }
        println!("{report}");
        if let Some(n) = pruned {
            println!("conversions of deleted manifests removed: {n}");
        }
    }
    Ok(())
}

/// Runs `kiln scrub`: exit status 1 when anything is corrupt or missing.
pub(crate) fn scrub(args: ScrubArgs) -> anyhow::Result<()> {
    let config = args.store.config()?;
    let report = runtime()?.block_on(async {
        let registry = open_registry(&config)?;
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} scrubbing: {bytes} read ({bytes_per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let report = registry.scrub(|n| bar.inc(n)).await;
        bar.finish_and_clear();
        report.context("scrub")
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.corrupt {
            println!("corrupt blob {c}");
        }
        for b in &report.broken {
            println!("broken manifest {b}");
        }
        println!(
            "{} blobs ({} bytes) verified, {} manifests checked: {} corrupt, {} broken, {:.2} s",
            report.blobs,
            report.bytes,
            report.manifests,
            report.corrupt.len(),
            report.broken.len(),
            report.seconds
        );
    }
    anyhow::ensure!(
        report.is_clean(),
        "the store has {} corrupt blobs and {} broken manifests",
        report.corrupt.len(),
        report.broken.len()
    );
    Ok(())
}
