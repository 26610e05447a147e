//! Builds inside a builder microVM (`[builds] mode = "vm"`): the builder
//! image is an ordinary image of this registry (`scripts/builder-image`:
//! Debian with buildah), converted to ext4 like any push and booted through
//! `kiln-vmm` with QEMU's user-mode network. The guest fetches the source
//! with the build credential (`GET /kiln/v1/builds/<id>/source`), runs the
//! same buildah command lines as a host build and pushes to this registry;
//! its console is the build's log and its exit status the build's.
//!
//! The VM, not buildah's chroot, is the isolation boundary: an untrusted
//! Dockerfile reaches only the guest and what the build token grants.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_registry::{Reference, Registry};
use kiln_registry_token::RepositoryName;
use kiln_vmm::{Accel, GuestKernel, GuestVm, InitConfig, Machine, MemorySize, Network, RunSpec};
use tokio_util::sync::CancellationToken;

use super::builder::{
    BuildFailure, BuildFuture, Builder, Job, Paths, REGISTRIES_CONF, auth_json, bud_args,
    push_targets,
};
use crate::serve::config::VmSettings;
use crate::serve::convert::{Conversions, State as ConversionState};
use crate::serve::store::Store;

/// What the guest runs: `$@` are `buildah bud`'s arguments; the rest comes
/// in `KILN_*` variables.
const SCRIPT: &str = r#"set -euo pipefail
if [ -n "${KILN_FORWARD_PORT:-}" ]; then
  # This registry is the host's loopback: reach it at the same address.
  socat "TCP-LISTEN:$KILN_FORWARD_PORT,bind=127.0.0.1,fork,reuseaddr" "TCP:10.0.2.2:$KILN_FORWARD_PORT" &
  for _ in $(seq 50); do curl -s -o /dev/null "$KILN_SOURCE" && break; sleep 0.1; done
fi
mkdir -p /work/src
curl -fsS -u "kiln-build:$KILN_CREDENTIAL" "$KILN_SOURCE" | tar -x -C /work/src
printf '%s' "$KILN_AUTH_JSON" > /work/auth.json
printf '%s' "$KILN_REGISTRIES_CONF" > /work/registries.conf
export CONTAINERS_REGISTRIES_CONF=/work/registries.conf BUILDAH_ISOLATION=chroot
B=(buildah --storage-driver=vfs --root=/work/storage --runroot=/work/run)
# Piped: not a terminal, so no progress bars in the log.
"${B[@]}" "$@" 2>&1 | cat
for target in $KILN_PUSH; do
  "${B[@]}" push --authfile=/work/auth.json "--tls-verify=$KILN_TLS_VERIFY" --format=oci \
    "$(cat /work/iid)" "docker://$target" 2>&1 | cat
done
"#;

/// Buildah in a builder microVM.
pub(crate) struct VmBuildah {
    pub vm: VmSettings,
    /// The builder image, `repository:tag` in this registry.
    pub image: String,
    pub memory_mib: u64,
    pub cpus: u8,
    pub registry: Arc<Registry<Store>>,
    pub conversions: Arc<Conversions>,
    pub accel: tokio::sync::OnceCell<Accel>,
}

impl std::fmt::Debug for VmBuildah {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmBuildah")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl Builder for VmBuildah {
    fn name(&self) -> &'static str {
        "buildah-vm"
    }

    fn build<'a>(
        &'a self,
        job: &'a Job,
        log: &'a Path,
        cancel: CancellationToken,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let failed = |m: String| BuildFailure::Failed(m);
            let (disk, run_config) = self.builder_disk().await.map_err(failed)?;
            std::fs::create_dir_all(&job.work).map_err(|e| failed(e.to_string()))?;
            let source = job.work.join("source.tar");
            let (context, dockerfile) = (job.context.clone(), job.dockerfile.clone());
            let packed = source.clone();
            tokio::task::spawn_blocking(move || pack_source(&context, &dockerfile, &packed))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("packing the source: {e}")))?;
            let spec = self.spec(job, disk, &run_config).await?;
            let outcome = self.boot(&spec, log, &cancel, job.timeout).await;
            let _ = std::fs::remove_dir_all(&spec.work_dir);
            let _ = std::fs::remove_file(&source);
            let code = outcome?;
            if code != 0 {
                return Err(failed(format!("the builder VM exited with {code}")));
            }
            self.result_digest(job).await.map_err(failed)
        })
    }
}

/// The source as the guest fetches it: `context/` and the `Dockerfile`.
fn pack_source(context: &Path, dockerfile: &Path, out: &Path) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    tar.follow_symlinks(false);
    tar.append_dir_all("context", context)?;
    tar.append_path_with_name(dockerfile, "Dockerfile")?;
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

impl VmBuildah {
    /// The builder image's ext4 and run configuration, once converted.
    async fn builder_disk(&self) -> Result<(PathBuf, kiln_ext4::RunConfig), String> {
        let (repo, reference) = super::super::instances::parse_image(&self.image)
            .ok_or_else(|| format!("vm_image {:?} is not repository:tag", self.image))?;
        let info = self
            .registry
            .manifest_info(&repo, &reference)
            .await
            .map_err(|_| format!("no builder image {} in this registry", self.image))?;
        let digest = info.digest.to_string();
        match self.conversions.get(&digest).await.map(|r| r.state) {
            Some(ConversionState::Ready) => {}
            state => {
                return Err(format!(
                    "the builder image {}'s conversion is {}",
                    self.image,
                    state.map_or("absent".into(), |s| format!("{s:?}").to_lowercase())
                ));
            }
        }
        let (disk, run_json) = self
            .conversions
            .outputs(&digest)
            .await
            .map_err(|e| format!("the builder image's disk: {e}"))?;
        let config = std::fs::read(&run_json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the builder image's run configuration is unreadable")?;
        Ok((disk, config))
    }

    async fn spec(
        &self,
        job: &Job,
        disk: PathBuf,
        run_config: &kiln_ext4::RunConfig,
    ) -> Result<RunSpec, BuildFailure> {
        let failed = |m: String| BuildFailure::Failed(m);
        let kernel =
            GuestKernel::from_image(&self.vm.kernel).map_err(|e| failed(format!("kernel: {e}")))?;
        let accel = *self
            .accel
            .get_or_init(|| async {
                let work = std::env::temp_dir().join("kiln-serve-canary");
                let accel =
                    crate::cli::vm::accel_for(&self.vm.accel, &kernel, &self.vm.init, &work).await;
                let _ = std::fs::remove_dir_all(&work);
                accel
            })
            .await;
        let (scheme, tls_verify) = if job.tls_verify {
            ("https", "true")
        } else {
            ("http", "false")
        };
        let mut env = run_config.env.clone();
        env.extend([
            format!(
                "KILN_SOURCE={scheme}://{}/kiln/v1/builds/{}/source",
                job.registry, job.id
            ),
            format!("KILN_CREDENTIAL={}", job.credential),
            format!("KILN_AUTH_JSON={}", auth_json(job)),
            format!("KILN_REGISTRIES_CONF={REGISTRIES_CONF}"),
            format!("KILN_TLS_VERIFY={tls_verify}"),
            format!("KILN_PUSH={}", push_targets(job).join(" ")),
        ]);
        if let Some(port) = loopback_port(&job.registry) {
            env.push(format!("KILN_FORWARD_PORT={port}"));
        }
        let paths = Paths {
            auth: Path::new("/work/auth.json"),
            dockerfile: Path::new("/work/src/Dockerfile"),
            iid: Path::new("/work/iid"),
            context: Path::new("/work/src/context"),
        };
        let mut argv = vec![
            "/bin/bash".to_owned(),
            "-c".to_owned(),
            SCRIPT.to_owned(),
            "kiln-builder".to_owned(),
        ];
        argv.extend(bud_args(job, &paths));
        let short: String = job.id.chars().take(12).collect();
        Ok(RunSpec {
            qemu: self.vm.qemu.clone(),
            kernel,
            init: self.vm.init.clone(),
            disk,
            workload: InitConfig {
                argv,
                env,
                working_dir: "/".into(),
                user: "0:0".into(),
                stop_signal: "SIGTERM".into(),
                ..InitConfig::default()
            },
            memory: format!("{}M", self.memory_mib)
                .parse::<MemorySize>()
                .map_err(|e| failed(e.to_string()))?,
            cpus: self.cpus,
            machine: Machine::Microvm,
            network: Network::User,
            accel,
            work_dir: std::env::temp_dir().join(format!("kiln-b-{short}")),
            timeout: job.timeout,
        })
    }

    /// Boots the builder, copies its console to `log` as it comes, and
    /// returns the workload's exit status.
    async fn boot(
        &self,
        spec: &RunSpec,
        log: &Path,
        cancel: &CancellationToken,
        timeout: Duration,
    ) -> Result<i32, BuildFailure> {
        let _ = std::fs::remove_dir_all(&spec.work_dir);
        std::fs::create_dir_all(&spec.work_dir).map_err(|e| BuildFailure::Failed(e.to_string()))?;
        let vm = GuestVm::start(spec)
            .await
            .map_err(|e| BuildFailure::Failed(format!("starting the builder VM: {e}")))?;
        let console = spec.work_dir.join("console.log");
        let mut sent = 0usize;
        let finish = vm.finish(timeout);
        tokio::pin!(finish);
        let outcome = loop {
            tokio::select! {
                r = &mut finish => break r.map_err(|e| BuildFailure::Failed(format!("the builder VM: {e}"))),
                // Dropping the guest kills QEMU.
                () = cancel.cancelled() => break Err(BuildFailure::Cancelled),
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    sent = copy_console(&console, sent, log);
                }
            }
        };
        copy_console(&console, sent, log);
        outcome.map(|o| o.exit_code)
    }

    /// The digest `builds/<id>:latest` names now.
    async fn result_digest(&self, job: &Job) -> Result<String, String> {
        let repo: RepositoryName = format!("builds/{}", job.id)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let latest = Reference::Tag("latest".parse().map_err(|e| format!("{e}"))?);
        let info = self
            .registry
            .manifest_info(&repo, &latest)
            .await
            .map_err(|_| "the builder VM exited 0 but pushed no result".to_owned())?;
        Ok(info.digest.to_string())
    }
}

/// The port of a loopback `host:port`, which the guest must forward.
fn loopback_port(host: &str) -> Option<u16> {
    let (name, port) = host.rsplit_once(':')?;
    let loopback = name == "localhost"
        || name
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| port.parse().ok()).flatten()
}

/// Appends the console's new bytes (up to the guest's report line, which
/// is never shown) to `log`; the count sent so far.
fn copy_console(console: &Path, sent: usize, log: &Path) -> usize {
    use std::io::Write as _;
    let raw = std::fs::read(console).unwrap_or_default();
    let upto = kiln_vmm::streamable(&raw);
    if upto <= sent {
        return sent;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = f.write_all(&raw[sent..upto]);
    }
    upto
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_forwarded() {
        assert_eq!(loopback_port("127.0.0.1:5000"), Some(5000));
        assert_eq!(loopback_port("localhost:443"), Some(443));
        assert_eq!(loopback_port("[::1]:5000"), Some(5000));
        assert_eq!(loopback_port("registry.example.com:5000"), None);
        assert_eq!(loopback_port("10.1.2.3:5000"), None);
    }
}
