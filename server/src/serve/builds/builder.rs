//! Builders behind one trait. [`Buildah`] runs Debian's `buildah` on the
//! host: as root with `--isolation chroot` and the `vfs` storage driver (no
//! overlay or user namespaces needed), a fresh image store per build (no
//! build sees another's layers: the registry cache is the only one), and
//! the build token as the only credential it has, for this registry.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio_util::sync::CancellationToken;

/// One build, as a builder gets it.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: String,
    /// The unpacked source.
    pub context: PathBuf,
    /// The (rewritten) Dockerfile.
    pub dockerfile: PathBuf,
    /// Scratch space of the builder's own, removed afterwards.
    pub work: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    /// This registry as the builder reaches it (`host:port`).
    pub registry: String,
    /// The `kiln-build` password: the build token.
    pub credential: String,
    /// Whether the registry is reached over HTTPS with verification.
    pub tls_verify: bool,
    /// The one cache repository imported from (buildah takes one).
    pub cache_from: Option<String>,
    /// BuildKit's `--import-cache`/`--export-cache` arguments.
    pub buildctl_cache_args: Vec<String>,
    pub cache_to: String,
    /// `host/builds/<id>`, pushed as `:latest`.
    pub result: String,
    /// `host/repo:tag`, pushed as well.
    pub tag: Option<String>,
    /// Longest the build may run.
    pub timeout: Duration,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildFailure {
    #[error("cancelled")]
    Cancelled,
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(String),
}

pub(crate) type BuildFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, BuildFailure>> + Send + 'a>>;

/// A way to run builds: builds `job`, writes its output to `log` and
/// returns the digest of the pushed result.
pub(crate) trait Builder: Send + Sync + std::fmt::Debug {
    /// The name recorded with each build.
    fn name(&self) -> &'static str;
    /// Runs the build; `cancel` stops it (the builder's processes with it).
    fn build<'a>(
        &'a self,
        job: &'a Job,
        log: &'a Path,
        cancel: CancellationToken,
    ) -> BuildFuture<'a>;
}

/// `buildah` on the host.
#[derive(Debug)]
pub(crate) struct Buildah {
    pub binary: PathBuf,
}

impl Builder for Buildah {
    fn name(&self) -> &'static str {
        "buildah"
    }

    fn build<'a>(
        &'a self,
        job: &'a Job,
        log: &'a Path,
        cancel: CancellationToken,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            tracing::info!(id = %job.id, "buildah build starting");
            let result = self.run(job, log, &cancel).await;
            unmount_under(&job.work);
            let _ = tokio::fs::remove_dir_all(job.work.join("storage")).await;
            result
        })
    }
}

/// Short names resolve as BuildKit resolves them: on docker.io.
pub(crate) const REGISTRIES_CONF: &str =
    "unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n";

/// The auth file that gives buildah the build credential for this registry
/// (and nothing else).
pub(crate) fn auth_json(job: &Job) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        crate::serve::auth::BUILD_USER,
        job.credential
    ));
    serde_json::json!({"auths": {&job.registry: {"auth": basic}}}).to_string()
}

/// Where `buildah bud` finds its inputs (on the host or in a builder VM).
pub(crate) struct Paths<'a> {
    pub auth: &'a Path,
    pub dockerfile: &'a Path,
    pub iid: &'a Path,
    pub context: &'a Path,
}

/// `buildah bud` arguments (after the global ones) for `job`.
pub(crate) fn bud_args(job: &Job, paths: &Paths<'_>) -> Vec<String> {
    let mut bud: Vec<String> = vec![
        "bud".into(),
        "--isolation=chroot".into(),
        "--layers".into(),
        format!("--authfile={}", paths.auth.display()),
        format!("--tls-verify={}", job.tls_verify),
        format!("--cache-to={}", job.cache_to),
        format!("--file={}", paths.dockerfile.display()),
        format!("--iidfile={}", paths.iid.display()),
    ];
    if let Some(from) = &job.cache_from {
        bud.push(format!("--cache-from={from}"));
    }
    for (k, v) in &job.build_args {
        bud.push(format!("--build-arg={k}={v}"));
    }
    if let Some(t) = &job.target {
        bud.push(format!("--target={t}"));
    }
    if let Some(p) = &job.platform {
        bud.push(format!("--platform={p}"));
    }
    bud.push(paths.context.display().to_string());
    bud
}

/// Where a build's result goes: `builds/<id>:latest`, then the tag if any.
pub(crate) fn push_targets(job: &Job) -> Vec<String> {
    std::iter::once(format!("{}:latest", job.result))
        .chain(job.tag.clone())
        .collect()
}

impl Buildah {
    async fn run(
        &self,
        job: &Job,
        log: &Path,
        cancel: &CancellationToken,
    ) -> Result<String, BuildFailure> {
        let io = |e: std::io::Error| BuildFailure::Failed(format!("preparing the build: {e}"));
        std::fs::create_dir_all(&job.work).map_err(io)?;
        let auth = job.work.join("auth.json");
        crate::serve::write_atomically(&auth, auth_json(job).as_bytes(), 0o600).map_err(io)?;
        let conf = job.work.join("registries.conf");
        std::fs::write(&conf, REGISTRIES_CONF).map_err(io)?;
        let tls = format!("--tls-verify={}", job.tls_verify);
        let iid = job.work.join("image-id");
        let bud = bud_args(
            job,
            &Paths {
                auth: &auth,
                dockerfile: &job.dockerfile,
                iid: &iid,
                context: &job.context,
            },
        );
        let deadline = tokio::time::Instant::now() + job.timeout;
        self.step(job, log, &conf, &bud, cancel, deadline).await?;
        let image = std::fs::read_to_string(&iid)
            .map_err(|e| BuildFailure::Failed(format!("buildah wrote no image id: {e}")))?;
        let digest_file = job.work.join("digest");
        let mut digest = String::new();
        for target in push_targets(job) {
            let push = vec![
                "push".into(),
                format!("--authfile={}", auth.display()),
                tls.clone(),
                "--format=oci".into(),
                format!("--digestfile={}", digest_file.display()),
                image.trim().to_owned(),
                format!("docker://{target}"),
            ];
            self.step(job, log, &conf, &push, cancel, deadline).await?;
            digest = std::fs::read_to_string(&digest_file)
                .map_err(|e| BuildFailure::Failed(format!("buildah wrote no digest: {e}")))?
                .trim()
                .to_owned();
        }
        Ok(digest)
    }

    /// Runs one buildah command (`args` after the storage options).
    async fn step(
        &self,
        job: &Job,
        log: &Path,
        conf: &Path,
        args: &[String],
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Result<(), BuildFailure> {
        let storage = job.work.join("storage");
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg(format!("--root={}", storage.join("root").display()))
            .arg(format!("--runroot={}", storage.join("run").display()))
            .arg("--storage-driver=vfs")
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", conf)
            .env("BUILDAH_ISOLATION", "chroot");
        let what = format!("buildah {}", args[0]);
        run_logged(cmd, &what, log, cancel, deadline, job.timeout).await
    }
}

/// Runs `cmd` with its output appended to `log`; kills its process group on
/// cancel, at the deadline, or when the future is dropped.
pub(crate) async fn run_logged(
    mut cmd: tokio::process::Command,
    what: &str,
    log: &Path,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), BuildFailure> {
    let out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| BuildFailure::Failed(format!("opening the log: {e}")))?;
    let err = out
        .try_clone()
        .map_err(|e| BuildFailure::Failed(format!("opening the log: {e}")))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BuildFailure::Failed(format!("starting {what}: {e}")))?;
    // The whole process group goes when this future ends early: cancelled,
    // timed out, or dropped at the server's shutdown.
    let mut group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let outcome = tokio::select! {
        status = child.wait() => {
            // Reaped: its group id may be reused from now on.
            group.0 = None;
            let status = status.map_err(|e| BuildFailure::Failed(e.to_string()))?;
            if status.success() {
                Ok(())
            } else {
                Err(BuildFailure::Failed(format!("{what} exited with {status}")))
            }
        }
        () = cancel.cancelled() => Err(BuildFailure::Cancelled),
        () = tokio::time::sleep_until(deadline) => Err(BuildFailure::TimedOut(timeout)),
    };
    drop(group);
    let _ = child.wait().await;
    outcome
}

/// Kills a process group when dropped, unless disarmed (its leader reaped).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Unmounts whatever a killed build left mounted under `dir`.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}
