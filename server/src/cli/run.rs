//! `kiln run`: an image of a `kiln serve` registry as a microVM instance,
//! over the server's instances API — the console streamed to standard
//! output, the workload's exit status as this command's.

use anyhow::{Context, bail};
use clap::Args;

use super::server::{ServerArgs, client, follow, reason};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The image: REPOSITORY:TAG or REPOSITORY@DIGEST in the server's
    /// registry (converted to ext4 by the server).
    image: String,
    #[command(flatten)]
    server: ServerArgs,
    /// `NAME=value` added to the image's environment (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Guest memory, e.g. 256M.
    #[arg(long)]
    memory: Option<String>,
    /// vCPUs.
    #[arg(long)]
    cpus: Option<u8>,
    /// Seconds the instance may run.
    #[arg(long)]
    timeout: Option<u64>,
    /// Replaces the image's `Cmd` (the entrypoint stays), as `docker run`.
    #[arg(last = true)]
    cmd: Vec<String>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let password = args.server.password()?;
    let code = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(instance(&args, &password))?;
    std::process::exit(code & 0xff);
}

async fn instance(args: &RunArgs, password: &str) -> anyhow::Result<i32> {
    let http = client();
    let base = args.server.base();
    let user = &args.server.user;
    let mut launch = serde_json::json!({"image": args.image, "cmd": args.cmd, "env": args.env});
    if let Some(m) = &args.memory {
        launch["memory"] = m.clone().into();
    }
    if let Some(c) = args.cpus {
        launch["cpus"] = c.into();
    }
    if let Some(t) = args.timeout {
        launch["timeout"] = t.into();
    }
    let r = http
        .post(format!("{base}/kiln/v1/instances"))
        .basic_auth(user, Some(password))
        .json(&launch)
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the server refused the instance ({status}): {}", reason(&v));
    }
    let id = v["id"]
        .as_str()
        .context("no instance id in the answer")?
        .to_owned();
    // Ctrl-C stops the instance; the console then ends with it.
    let v = follow(
        &http,
        &args.server,
        password,
        &format!("/kiln/v1/instances/{id}"),
        ("console", &mut std::io::stdout()),
        ("stop", "stopping the instance"),
    )
    .await?;
    match v["state"].as_str() {
        Some("exited") => Ok(v["exit_code"].as_i64().unwrap_or(0) as i32),
        Some("stopped") => Ok(130),
        Some("failed") => bail!("the instance failed: {}", v["error"].as_str().unwrap_or("")),
        other => bail!("the instance ended in state {other:?}"),
    }
}
