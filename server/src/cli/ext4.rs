//! `kiln ext4 convert`: an OCI image into a bootable ext4 disk image.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_ext4::{FreeSpace, Image, OciLayout, Options, Platform, Reference, Selector, convert};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write an image's root file system as ext4, plus its run config JSON.
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// `oci:DIR[:TAG|@DIGEST]`, an OCI image layout directory.
    source: String,
    /// The ext4 image to write (replaced only when conversion succeeds).
    #[arg(short, long)]
    output: PathBuf,
    /// Platform to pick from an image index.
    #[arg(long, default_value = "linux/amd64")]
    platform: Platform,
    /// Free space beyond the content: `10%` (of the file system), `512M`,
    /// `2G` (default none).
    #[arg(long, default_value = "0")]
    free: FreeSpace,
    /// Free inodes beyond the content.
    #[arg(long, default_value_t = 0)]
    free_inodes: u32,
    /// Where to write the run config (default: OUTPUT with `.json`).
    #[arg(long)]
    metadata: Option<PathBuf>,
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Convert(args) => convert_cmd(args),
    }
}

/// Splits `oci:DIR[:TAG|@DIGEST]`.
pub(crate) fn parse_source(source: &str) -> anyhow::Result<(PathBuf, Option<Reference>)> {
    let Some(rest) = source.strip_prefix("oci:") else {
        bail!("source must be oci:DIR[:TAG|@DIGEST], got {source:?}");
    };
    if let Some((dir, digest)) = rest.rsplit_once('@') {
        let digest = digest
            .parse()
            .with_context(|| format!("invalid digest {digest:?}"))?;
        return Ok((dir.into(), Some(Reference::Digest(digest))));
    }
    if let Some((dir, tag)) = rest.rsplit_once(':') {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if valid {
            return Ok((dir.into(), Some(Reference::Tag(tag.into()))));
        }
    }
    Ok((rest.into(), None))
}

fn temp_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    output.with_file_name(name)
}

fn convert_cmd(args: ConvertArgs) -> anyhow::Result<()> {
    let (dir, reference) = parse_source(&args.source)?;
    let layout = OciLayout::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let selector = Selector {
        reference,
        platform: args.platform,
    };
    let image = Image::resolve(&layout, &selector).context("resolving the image")?;
    let total: u64 = image.layers().iter().map(|l| l.size()).sum();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let tmp = temp_path(&args.output);
    let options = Options {
        free_space: args.free,
        free_inodes: args.free_inodes,
        ..Options::default()
    };
    let result = (|| -> anyhow::Result<kiln_ext4::Summary> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let (out, summary) = convert(&layout, &image, BufWriter::new(file), options, &mut |p| {
            bar.set_message(format!("layer {}/{}", p.layer + 1, p.layers));
            bar.set_position(p.earlier_bytes_read + p.layer_bytes_read);
        })?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .context("flushing the image")?;
        Ok(summary)
    })();
    bar.finish_and_clear();
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("renaming to {}", args.output.display()))?;
    let metadata = args
        .metadata
        .unwrap_or_else(|| args.output.with_extension("json"));
    std::fs::write(&metadata, image.run_config_json() + "\n")
        .with_context(|| format!("writing {}", metadata.display()))?;
    eprintln!(
        "wrote {} ({} bytes, {} of {} inodes used) from {}; run config in {}",
        args.output.display(),
        summary.bytes,
        summary.used_inodes,
        summary.inodes,
        image.manifest_digest(),
        metadata.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_split_into_dir_and_reference() {
        let (dir, r) = parse_source("oci:/tmp/x:latest").unwrap();
        assert_eq!(dir, PathBuf::from("/tmp/x"));
        assert_eq!(r, Some(Reference::Tag("latest".into())));
        let (dir, r) = parse_source("oci:img").unwrap();
        assert_eq!(dir, PathBuf::from("img"));
        assert_eq!(r, None);
        let digest = format!("sha256:{}", "a".repeat(64));
        let (_, r) = parse_source(&format!("oci:img@{digest}")).unwrap();
        assert!(matches!(r, Some(Reference::Digest(_))));
        assert!(parse_source("docker://x").is_err());
        assert!(parse_source("oci:img@sha256:zz").is_err());
    }
}
