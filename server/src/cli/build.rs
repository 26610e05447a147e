//! `kiln build`: a source directory (or tarball) built by a `kiln serve`
//! over its builds API — the upload with a progress bar, the build's log
//! streamed to standard error, and the pushed image (`builds/<id>@<digest>`)
//! printed on standard output at the end.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::server::{ServerArgs, client, follow, reason};

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The source: a directory (sent as a gzip tarball) or a tarball
    /// (plain, gzip or zstd).
    source: PathBuf,
    /// The Dockerfile's path inside the source [default: Dockerfile].
    #[arg(long, short = 'f')]
    file: Option<String>,
    /// The cache scope: a tenant's own (the default for tenants); the
    /// admin names one for a non-admin build.
    #[arg(long)]
    cache_scope: Option<String>,
    /// Import the shared global cache `cache/global/KEY` (admin builds
    /// export to it).
    #[arg(long)]
    global_cache_key: Option<String>,
    /// An admin build: writes the global cache (admin credentials only).
    #[arg(long)]
    admin: bool,
    /// A build argument (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    target: Option<String>,
    /// The target platform, e.g. linux/amd64.
    #[arg(long)]
    platform: Option<String>,
    /// Also push the result as REPOSITORY:TAG (in your namespace).
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let password = args.server.password()?;
    let ok = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(build(&args, &password))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// The source as a tarball on disk: itself, or a directory packed into a
/// temporary file.
fn tarball(source: &Path) -> anyhow::Result<(PathBuf, Option<tempfile::TempPath>)> {
    if !source.is_dir() {
        return Ok((source.to_owned(), None));
    }
    let file = tempfile::NamedTempFile::new()?;
    let gz = flate2::write::GzEncoder::new(file.reopen()?, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", source)
        .with_context(|| format!("packing {}", source.display()))?;
    std::io::Write::flush(&mut tar.into_inner()?.finish()?)?;
    let path = file.into_temp_path();
    Ok((path.to_path_buf(), Some(path)))
}

async fn build(args: &BuildArgs, password: &str) -> anyhow::Result<bool> {
    let http = client();
    let base = args.server.base();
    let user = &args.server.user;
    let (path, _temp) = tarball(&args.source)?;
    let size = std::fs::metadata(&path)?.len();
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let file = tokio::fs::File::open(&path).await?;
    let counted = {
        let bar = bar.clone();
        tokio_util::io::ReaderStream::new(file).inspect(move |c| {
            if let Ok(c) = c {
                bar.inc(c.len() as u64);
            }
        })
    };
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(counted), size)
            .file_name("source.tar");
    let mut form = reqwest::multipart::Form::new().part("context", part);
    let fields = [
        ("file", &args.file),
        ("cache_scope", &args.cache_scope),
        ("global_cache_key", &args.global_cache_key),
        ("target", &args.target),
        ("platform", &args.platform),
        ("tag", &args.tag),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            form = form.text(name, v.clone());
        }
    }
    for a in &args.build_args {
        form = form.text("build_arg", a.clone());
    }
    if args.admin {
        form = form.text("is_admin_build", "true");
    }
    let r = http
        .post(format!("{base}/kiln/v1/builds"))
        .basic_auth(user, Some(password))
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    bar.finish_and_clear();
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        let line = v["line"]
            .as_u64()
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        bail!(
            "the server refused the build ({status}): {}{line}",
            reason(&v)
        );
    }
    let id = v["id"]
        .as_str()
        .context("no build id in the answer")?
        .to_owned();
    eprintln!("kiln: build {id} queued");
    // Ctrl-C cancels the build; its log then ends with it.
    let v = follow(
        &http,
        &args.server,
        password,
        &format!("/kiln/v1/builds/{id}"),
        ("logs", &mut std::io::stderr()),
        ("cancel", "cancelling the build"),
    )
    .await?;
    match v["state"].as_str() {
        Some("succeeded") => {
            eprintln!(
                "kiln: built {} in {} ms",
                v["image"].as_str().unwrap_or("?"),
                v["timings"]["build_ms"]
            );
            if let Some(tag) = v["plan"]["tag"].as_str() {
                eprintln!("kiln: also pushed as {tag}");
            }
            println!("{}", v["image"].as_str().unwrap_or_default());
            Ok(true)
        }
        Some(state) => {
            eprintln!(
                "kiln: build {id} {state}{}",
                v["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            Ok(false)
        }
        None => bail!("no state in the build's record"),
    }
}
