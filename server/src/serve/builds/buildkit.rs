//! BuildKit's `buildctl` against a running `buildkitd` (`[builds] builder =
//! "buildctl"`): the Dockerfile frontend, the cache arguments
//! `kiln-cache-key` renders (both imports, `image-manifest=true,
//! oci-mediatypes=true` on the export), the result pushed by BuildKit and
//! its digest read from `--metadata-file`. The build credential reaches
//! BuildKit's registry auth through a Docker config of the build's own.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::builder::{
    BuildFailure, BuildFuture, Builder, Job, auth_json, push_targets, run_logged,
};

/// `buildctl` and the `buildkitd` it talks to.
#[derive(Debug)]
pub(crate) struct Buildctl {
    pub binary: PathBuf,
    /// `buildkitd`'s address (`unix:///run/buildkit/buildkitd.sock`).
    pub addr: String,
}

/// `buildctl` arguments for `job`, its Dockerfile in `dockerfile`, the
/// metadata written to `metadata`.
pub(crate) fn buildctl_args(addr: &str, job: &Job, metadata: &Path) -> Vec<String> {
    let dir = job.dockerfile.parent().unwrap_or(Path::new("."));
    let file = job
        .dockerfile
        .file_name()
        .map_or("Dockerfile".into(), |f| f.to_string_lossy().into_owned());
    let mut args = vec![
        format!("--addr={addr}"),
        "build".into(),
        "--progress=plain".into(),
        "--frontend=dockerfile.v0".into(),
        format!("--local=context={}", job.context.display()),
        format!("--local=dockerfile={}", dir.display()),
        format!("--opt=filename={file}"),
    ];
    for (k, v) in &job.build_args {
        args.push(format!("--opt=build-arg:{k}={v}"));
    }
    if let Some(t) = &job.target {
        args.push(format!("--opt=target={t}"));
    }
    if let Some(p) = &job.platform {
        args.push(format!("--opt=platform={p}"));
    }
    // Several names are one CSV field, quoted.
    let mut output = format!(
        "type=image,\"name={}\",push=true",
        push_targets(job).join(",")
    );
    if !job.tls_verify {
        output.push_str(",registry.insecure=true");
    }
    args.push(format!("--output={output}"));
    args.push(format!("--metadata-file={}", metadata.display()));
    args.extend(job.buildctl_cache_args.iter().cloned());
    args
}

impl Builder for Buildctl {
    fn name(&self) -> &'static str {
        "buildctl"
    }

    fn build<'a>(
        &'a self,
        job: &'a Job,
        log: &'a Path,
        cancel: CancellationToken,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let failed = |m: String| BuildFailure::Failed(m);
            let docker_config = job.work.join("docker");
            std::fs::create_dir_all(&docker_config).map_err(|e| failed(e.to_string()))?;
            crate::serve::write_atomically(
                &docker_config.join("config.json"),
                auth_json(job).as_bytes(),
                0o600,
            )
            .map_err(|e| failed(e.to_string()))?;
            let metadata = job.work.join("metadata.json");
            let mut cmd = tokio::process::Command::new(&self.binary);
            cmd.args(buildctl_args(&self.addr, job, &metadata))
                .env("DOCKER_CONFIG", &docker_config);
            let deadline = tokio::time::Instant::now() + job.timeout;
            run_logged(cmd, "buildctl build", log, &cancel, deadline, job.timeout).await?;
            let meta: serde_json::Value = std::fs::read(&metadata)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| failed("buildctl wrote no metadata".into()))?;
            meta["containerimage.digest"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| failed("no image digest in buildctl's metadata".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn the_command_line_carries_the_plan() {
        let job = Job {
            id: "b1".into(),
            context: "/data/builds/b1/context".into(),
            dockerfile: "/data/builds/b1/Dockerfile.kiln".into(),
            work: "/data/builds/b1/work".into(),
            build_args: BTreeMap::from([("V".into(), "1=2".into())]),
            target: Some("app".into()),
            platform: Some("linux/amd64".into()),
            registry: "127.0.0.1:5000".into(),
            credential: "secret".into(),
            tls_verify: false,
            cache_from: None,
            buildctl_cache_args: vec!["--import-cache".into(), "type=registry,ref=x".into()],
            cache_to: "127.0.0.1:5000/cache/acme".into(),
            result: "127.0.0.1:5000/builds/b1".into(),
            tag: Some("127.0.0.1:5000/acme/app:v1".into()),
            timeout: Duration::from_secs(60),
        };
        let args = buildctl_args("unix:///run/buildkit.sock", &job, Path::new("/m.json"));
        assert_eq!(
            args,
            [
                "--addr=unix:///run/buildkit.sock",
                "build",
                "--progress=plain",
                "--frontend=dockerfile.v0",
                "--local=context=/data/builds/b1/context",
                "--local=dockerfile=/data/builds/b1",
                "--opt=filename=Dockerfile.kiln",
                "--opt=build-arg:V=1=2",
                "--opt=target=app",
                "--opt=platform=linux/amd64",
                "--output=type=image,\"name=127.0.0.1:5000/builds/b1:latest,127.0.0.1:5000/acme/app:v1\",push=true,registry.insecure=true",
                "--metadata-file=/m.json",
                "--import-cache",
                "type=registry,ref=x",
            ]
        );
    }
}
