//! `kiln serve`: the reference server. An OCI registry (`kiln-registry`
//! over the local data directory) with token auth and tenants
//! (`kiln-registry-token`), health endpoints and graceful shutdown.

mod auth;
mod builds;
mod config;
pub(crate) mod convert;
mod gc;
mod images;
mod instances;
mod mirror;
mod ops;
mod store;
mod tls;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clap::{Args, Subcommand};
use kiln_registry::{Limits, Registry, Storage as _, api};

pub(crate) use auth::sha256_hex;
pub(crate) use config::Config;
pub(crate) use convert::host_platform;
pub(crate) use store::{Store, StoreBlobs};

/// `kiln serve`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServeArgs {
    #[command(subcommand)]
    command: Option<ServeCommand>,
    /// TOML configuration file (see server/kiln.example.toml for every
    /// key and its default).
    #[arg(long, short, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "KILN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./kiln-data].
    #[arg(long, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Registry content in an S3-compatible bucket, `s3://BUCKET[/PREFIX]`
    /// (credentials, region and endpoint from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`) [default:
    /// DATA_DIR/registry].
    #[arg(long, env = "KILN_STORAGE")]
    storage: Option<String>,
    /// URL clients reach this server at, for token realms [default:
    /// http://LISTEN].
    #[arg(long, env = "KILN_PUBLIC_URL")]
    public_url: Option<String>,
    /// No authentication (every client may do everything): for a trusted
    /// loopback only.
    #[arg(long)]
    open: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key", env = "KILN_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert", env = "KILN_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// How long shutdown waits for requests in flight (uploads) to finish.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration, env = "KILN_SHUTDOWN_GRACE")]
    shutdown_grace: Duration,
}

#[derive(Debug, Subcommand)]
enum ServeCommand {
    /// Print the SHA-256 of a password read from standard input (for a
    /// tenant's `password_sha256`).
    HashPassword,
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(ServeCommand::HashPassword) = args.command {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        println!("{}", sha256_hex(password.as_bytes()));
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(s) = args.storage {
        config.storage = Some(s);
    }
    if let Some(u) = args.public_url {
        config.public_url = Some(u);
    }
    config.open |= args.open;
    if let Some(c) = args.tls_cert {
        config.tls_cert = Some(c);
    }
    if let Some(k) = args.tls_key {
        config.tls_key = Some(k);
    }
    config.validate()?;
    // `KILN_LOG` or `info`, parsed alike: the code run at start is the same
    // either way (the release build lays code out by what runs at start).
    let filter = std::env::var("KILN_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config, args.shutdown_grace))
}

async fn serve(config: Config, grace: Duration) -> anyhow::Result<()> {
    let registry = Arc::new(open_registry(&config)?);
    let auth = Arc::new(auth::Auth::open(&config, &config.data_dir.join("auth"))?);
    let conversions = convert::Conversions::start(
        config.data_dir.join("conversions"),
        registry.clone(),
        config.conversion_workers,
        Duration::from_secs(config.conversion_lease_secs),
    )
    .context("starting the conversion queue")?;
    let collector = gc::Collector::start(registry.clone(), conversions.clone(), config.gc.clone());
    let mut options = api::ApiOptions::default();
    let hook = conversions.clone();
    options.on_manifest = Some(Arc::new(move |pushed| Some(hook.on_manifest(&pushed))));
    let metrics = Arc::new(ops::Metrics::new(Duration::from_secs(
        config.body_idle_timeout_secs,
    )));
    let metrics_page = {
        let (metrics, registry, conversions, auth, collector) = (
            metrics.clone(),
            registry.clone(),
            conversions.clone(),
            auth.clone(),
            collector.clone(),
        );
        move || async move {
            let uploads = registry
                .storage()
                .list_docs("uploads")
                .await
                .map_or(0, |u| u.len() as u64);
            let (by_state, seconds, ran) = conversions.summary();
            metrics.render(&ops::Gauges {
                auth_failures: auth.failures_total(),
                upload_sessions: uploads,
                conversions: by_state,
                conversion_seconds_sum: seconds,
                conversion_seconds_count: ran,
                gc: collector.totals(),
            })
        }
    };
    let tls = config.tls_cert.clone().zip(config.tls_key.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let timing = Timing {
        headers: Duration::from_secs(config.header_timeout_secs),
        grace,
    };
    // Copies into this server (mirroring) go through a plain listener on a
    // loopback port of its own that serves the registry routes to the
    // server's own credential only: no certificate has to name a loopback
    // address, and no token flow runs against ourselves.
    let internal = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the internal loopback listener")?;
    let copy_host = internal.local_addr()?.to_string();
    // It has no pull-through hook: the copies it serves must never start
    // another.
    let internal_app = api::router(
        registry.clone(),
        Arc::new(auth::InternalAccess::new(&auth)),
        options.clone(),
    );
    tokio::spawn(async move {
        if let Err(e) = serve_on(internal, internal_app, timing).await {
            tracing::error!(error = %e, "internal loopback listener failed");
        }
    });
    let mirroring = Arc::new(mirror::Mirroring::new(
        auth.clone(),
        copy_host,
        public_host(&config.public_url()),
        config.mirror_prefix.clone(),
        config.upstreams.clone(),
        Duration::from_secs(config.pull_through_tag_ttl_secs),
        registry.clone(),
    ));
    let pull_through = mirroring.clone();
    options.before_manifest_read = Some(Arc::new(move |repo, reference| {
        pull_through.before_read(repo, reference)
    }));
    let builds = builds::Builds::start(builds::Wiring {
        settings: config.builds.clone(),
        dir: config.data_dir.join("builds"),
        auth: auth.clone(),
        registry: registry.clone(),
        conversions: conversions.clone(),
        mirroring: mirroring.clone(),
        public_url: config.public_url(),
        mirror_prefix: config.mirror_prefix.clone(),
        vm: config.vm.clone(),
    })
    .context("starting the build queue")?;
    let instances = instances::Instances::new(
        config.vm.clone(),
        auth.clone(),
        registry.clone(),
        conversions.clone(),
        config.data_dir.join("instances"),
    )?;
    let app = Router::new()
        .merge(api::router(registry, auth.clone(), {
            // Clients (not the internal listener) may be sent to the store.
            let mut public = options;
            public.redirect_blobs = (config.blob_redirect_secs > 0)
                .then(|| Duration::from_secs(config.blob_redirect_secs));
            public
        }))
        .merge(instances::router(instances))
        .merge(builds::router(builds))
        .merge(mirror::router(mirroring))
        .merge(images::router(conversions, auth.clone()))
        .merge(token::router(auth))
        .route("/metrics", axum::routing::get(metrics_page))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ready\n" }))
        .layer(axum::middleware::from_fn_with_state(metrics, ops::observe));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, data_dir = %config.data_dir.display(), open = config.open, scheme, "kiln serve listening");
    eprintln!("kiln: listening on {scheme}://{addr}");
    match tls {
        Some((cert, key)) => {
            serve_on(tls::TlsListener::new(listener, &cert, &key)?, app, timing).await
        }
        None => serve_on(listener, app, timing).await,
    }
}

/// The registry a configuration names (its data directory created when
/// missing), with the configured limits.
pub(crate) fn open_registry(config: &Config) -> anyhow::Result<Registry<Store>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let storage = Store::open(config.storage.as_deref(), &config.data_dir)?;
    let mut limits = Limits::default();
    limits.max_manifest_bytes = config.max_manifest_bytes;
    limits.write_deadline = Duration::from_secs(config.gc.write_deadline_secs);
    limits.cache_ttl = Duration::from_millis(config.cache_ttl_ms);
    Ok(Registry::new(storage, limits))
}

/// A JSON response.
pub(crate) fn json(
    status: axum::http::StatusCode,
    v: &impl serde::Serialize,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = serde_json::to_string(v).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `{"error": message}` with `status`.
pub(crate) fn problem(
    status: axum::http::StatusCode,
    message: impl Into<String>,
) -> axum::response::Response {
    json(status, &serde_json::json!({"error": message.into()}))
}

/// Serves `app` on `listener` until SIGINT or SIGTERM (HTTP/1.1, and HTTP/2
/// by ALPN or prior knowledge), then stops accepting and lets requests in
/// flight finish for up to `grace`.
async fn serve_on<L>(mut listener: L, app: Router, timing: Timing) -> anyhow::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timing.headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(60));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    let grace = timing.grace;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("requests still in flight after {grace:?}: stopping"),
    }
    Ok(())
}

/// A listener's deadlines.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// For a request's headers.
    headers: Duration,
    /// For requests in flight at shutdown.
    grace: Duration,
}

/// Writes `bytes` to `path` through a temporary file beside it (created
/// with `mode`, less the umask), synced, then renamed over `path`: readers
/// see the old content or the new, never half.
pub(crate) fn write_atomically(
    path: &std::path::Path,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `host[:port]` of a URL.
fn public_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
