//! How the client subcommands (`kiln build`, `kiln run`) reach a `kiln
//! serve`: its URL and a tenant's (or the admin's) credentials.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// The server and the credentials to use there.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The server.
    #[arg(long, env = "KILN_SERVER", default_value = "http://127.0.0.1:5000")]
    pub server: String,
    /// Username (a tenant, or admin).
    #[arg(long, env = "KILN_USER")]
    pub user: String,
    /// A file holding the password (else `KILN_PASSWORD`).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The password, from the file or the environment.
    pub(crate) fn password(&self) -> anyhow::Result<String> {
        match &self.password_file {
            Some(f) => Ok(std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned()),
            None => std::env::var("KILN_PASSWORD")
                .context("no password: --password-file or KILN_PASSWORD"),
        }
    }

    /// The server's URL without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        self.server.trim_end_matches('/')
    }
}

/// A client for the server (rustls chosen).
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The reason in a refusal's JSON body (`error`, or the registry's
/// `errors[0].message`).
pub(crate) fn reason(v: &serde_json::Value) -> &str {
    v["error"]
        .as_str()
        .or_else(|| v["errors"][0]["message"].as_str())
        .unwrap_or("no reason given")
}

/// On Ctrl-C, posts to `url` (a cancel or stop) with the credentials, after
/// saying `what` on standard error. Abort the handle when done.
fn post_on_ctrl_c(
    http: &reqwest::Client,
    url: String,
    user: &str,
    password: &str,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    let (http, user, password) = (http.clone(), user.to_owned(), password.to_owned());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("kiln: {what}");
            let _ = http.post(url).basic_auth(user, Some(password)).send().await;
        }
    })
}

/// Copies a streamed response body to `out` as it arrives.
async fn copy_body(
    response: reqwest::Response,
    out: &mut (dyn std::io::Write + Send),
    what: &str,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading {what}"))?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

/// Follows a job of the server at `{base}{path}` (a build, an instance):
/// streams `{path}/{stream}` to `out` until it ends (Ctrl-C posts
/// `{path}/{on_ctrl_c}`, saying `what`), then returns the job's record.
pub(crate) async fn follow(
    http: &reqwest::Client,
    server: &ServerArgs,
    password: &str,
    path: &str,
    stream: (&str, &mut (dyn std::io::Write + Send)),
    on_ctrl_c: (&str, &'static str),
) -> anyhow::Result<serde_json::Value> {
    let base = server.base();
    let user = &server.user;
    let interrupt = post_on_ctrl_c(
        http,
        format!("{base}{path}/{}", on_ctrl_c.0),
        user,
        password,
        on_ctrl_c.1,
    );
    let body = http
        .get(format!("{base}{path}/{}", stream.0))
        .basic_auth(user, Some(password))
        .send()
        .await?;
    let copied = copy_body(body, stream.1, stream.0).await;
    interrupt.abort();
    copied?;
    Ok(http
        .get(format!("{base}{path}"))
        .basic_auth(user, Some(password))
        .send()
        .await?
        .json()
        .await?)
}
