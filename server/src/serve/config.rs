//! `kiln serve`'s configuration: a TOML file (see
//! `server/kiln.example.toml`), overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kiln_registry_token::{RepositoryName, RepositoryPattern};
use serde::Deserialize;

/// Everything `kiln serve` reads from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Where to listen (default `127.0.0.1:5000`).
    pub listen: SocketAddr,
    /// The data directory (default `./kiln-data`).
    pub data_dir: PathBuf,
    /// Registry content in an S3-compatible bucket, `s3://BUCKET[/PREFIX]`
    /// (default: `<data_dir>/registry`). Replicas may share one.
    pub storage: Option<String>,
    /// The URL clients reach this server at, for token realms (default
    /// `http://<listen>`).
    pub public_url: Option<String>,
    /// The token service name and audience (default `kiln`).
    pub service: String,
    /// Lifetime of access tokens in seconds (default 300).
    pub token_ttl_secs: u64,
    /// Serve HTTPS with this certificate chain (PEM), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// No authentication at all (every client may do everything): for a
    /// registry on a trusted loopback only. Default false.
    pub open: bool,
    /// Repository patterns anyone may pull without credentials
    /// (`public/*`, `*`); default none.
    pub anonymous_pull: Vec<RepositoryPattern>,
    /// The namespace of mirrored base images (default `mirror`): tenants
    /// may pull it, only the admin may push.
    pub mirror_prefix: String,
    /// Largest manifest accepted, in bytes (default 4 MiB).
    pub max_manifest_bytes: usize,
    /// How long a client may take to send a request's headers, in seconds
    /// (default 30).
    pub header_timeout_secs: u64,
    /// How long a request body may send nothing before the request fails,
    /// in seconds (default 120).
    pub body_idle_timeout_secs: u64,
    /// Conversions to ext4 run at once (default 1).
    pub conversion_workers: usize,
    /// Redirect authorized blob GETs to a presigned URL of the bucket valid
    /// this many seconds, so bytes flow from the store, not through the
    /// server (default 0: off; only with an S3 `storage`, whose endpoint
    /// clients must then reach).
    pub blob_redirect_secs: u64,
    /// How long tags, manifests' records and blob sizes are served from
    /// memory, in milliseconds (default 1000; 0: never): a replica sees
    /// another's tag change or deletion after at most this long.
    pub cache_ttl_ms: u64,
    /// A conversion's lease in the store, in seconds (default 30): renewed
    /// every third of it while the conversion runs; a replica takes up a
    /// conversion whose holder stopped renewing.
    pub conversion_lease_secs: u64,
    /// Tenants: each owns `<name>/*` and `cache/<name>`.
    pub tenants: Vec<Tenant>,
    /// How to reach upstream registries the mirror copies from (others:
    /// HTTPS, anonymous).
    pub upstreams: Vec<Upstream>,
    /// How long a pulled-through tag is served before it is checked
    /// upstream again, in seconds (default 300).
    pub pull_through_tag_ttl_secs: u64,
    /// Instances (`/kiln/v1/instances`): where the guest kernel and init
    /// are (default: not configured, instances off).
    pub vm: Option<VmSettings>,
    /// Builds (`/kiln/v1/builds`).
    pub builds: BuildSettings,
    /// Garbage collection (`[gc]`).
    pub gc: GcSettings,
    /// Accept tokens in Kiln's legacy format (`{build_id, repos, scope}`,
    /// HS256) signed with this secret (default: not accepted).
    pub legacy_tokens: Option<LegacyTokens>,
}

/// How instances boot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VmSettings {
    /// The guest kernel (a `vmlinuz` with its modules beside it, as an
    /// unpacked `linux-image-*-cloud-amd64`).
    pub kernel: PathBuf,
    /// The static `kiln-init` binary.
    pub init: PathBuf,
    /// The QEMU binary (default `qemu-system-x86_64`).
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    /// `auto` (KVM when a canary guest boots under it, else TCG), `kvm` or
    /// `tcg` (default `auto`).
    #[serde(default = "default_accel")]
    pub accel: String,
    /// Instances running at once (default 4).
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// Most memory one instance may ask for, in MiB (default 2048).
    #[serde(default = "default_max_memory")]
    pub max_memory_mib: u64,
    /// Most vCPUs one instance may ask for (default 2).
    #[serde(default = "default_max_cpus")]
    pub max_cpus: u8,
    /// The longest an instance may run, in seconds (default 3600).
    #[serde(default = "default_max_timeout")]
    pub max_timeout_secs: u64,
}

/// Garbage collection: the online collector and what `kiln gc` uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GcSettings {
    /// Seconds between runs of the online collector (default 3600; 0: no
    /// online collection, `kiln gc` only). With several replicas on one
    /// store, one runs it per interval.
    pub interval_secs: u64,
    /// Unreferenced blobs stored or linked more recently than this many
    /// seconds are kept (default 3600).
    pub grace_secs: u64,
    /// Manifests no tag reaches are deleted once older than this many
    /// seconds (default: kept forever).
    pub untagged_retention_secs: Option<u64>,
    /// Upload sessions without a write for this many seconds are removed
    /// (default 86400).
    pub upload_ttl_secs: u64,
    /// Longest a manifest PUT, upload completion or mount may take, in
    /// seconds (default 600); the collector waits this long before it
    /// marks. Every replica of one store must use the same value, and the
    /// grace period must be longer.
    pub write_deadline_secs: u64,
}

impl Default for GcSettings {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            grace_secs: 3600,
            untagged_retention_secs: None,
            upload_ttl_secs: 86_400,
            write_deadline_secs: 600,
        }
    }
}

impl GcSettings {
    /// The library's options for a run.
    pub(crate) fn options(&self) -> kiln_registry::GcOptions {
        let mut o = kiln_registry::GcOptions::default();
        o.grace = std::time::Duration::from_secs(self.grace_secs);
        o.untagged_after = self
            .untagged_retention_secs
            .map(std::time::Duration::from_secs);
        o.upload_ttl = std::time::Duration::from_secs(self.upload_ttl_secs);
        o
    }
}

/// How builds run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BuildSettings {
    /// The builder: `buildah` (default) or `buildctl` (BuildKit, against a
    /// running `buildkitd`); builds answer 503 when it is not installed.
    pub builder: String,
    /// The `buildah` binary (default `buildah`, on `PATH`).
    pub buildah: PathBuf,
    /// The `buildctl` binary (default `buildctl`, on `PATH`).
    pub buildctl: PathBuf,
    /// `buildkitd`'s address (default `unix:///run/buildkit/buildkitd.sock`).
    pub buildkit_addr: String,
    /// Builds running at once (default 1).
    pub workers: usize,
    /// Builds one principal may have queued or running (default 4).
    pub max_per_principal: usize,
    /// Largest source upload, in bytes (default 512 MiB).
    pub max_upload_bytes: u64,
    /// Largest unpacked source, in bytes (default 2 GiB).
    pub max_context_bytes: u64,
    /// Most entries in a source (default 100000).
    pub max_context_entries: usize,
    /// The longest a build may run, in seconds (default 3600).
    pub timeout_secs: u64,
    /// Where builds run: `host` (buildah as root on this machine, chroot
    /// isolation: for trusted builds) or `vm` (buildah in a builder microVM
    /// per build: needs `[vm]` and `vm_image`). Default `host`.
    pub mode: String,
    /// The builder image for `vm` mode, `repository:tag` in this registry
    /// (`scripts/builder-image` builds one).
    pub vm_image: Option<String>,
    /// A builder VM's memory in MiB (default 2048; its writable root is a
    /// tmpfs of half of it).
    pub vm_memory_mib: u64,
    /// A builder VM's vCPUs (default 2).
    pub vm_cpus: u8,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            builder: "buildah".into(),
            buildah: "buildah".into(),
            buildctl: "buildctl".into(),
            buildkit_addr: "unix:///run/buildkit/buildkitd.sock".into(),
            workers: 1,
            max_per_principal: 4,
            max_upload_bytes: 512 << 20,
            max_context_bytes: 2 << 30,
            max_context_entries: 100_000,
            timeout_secs: 3600,
            mode: "host".into(),
            vm_image: None,
            vm_memory_mib: 2048,
            vm_cpus: 2,
        }
    }
}

fn default_qemu() -> PathBuf {
    "qemu-system-x86_64".into()
}
fn default_accel() -> String {
    "auto".into()
}
fn default_max_instances() -> usize {
    4
}
fn default_max_memory() -> u64 {
    2048
}
fn default_max_cpus() -> u8 {
    2
}
fn default_max_timeout() -> u64 {
    3600
}

/// Where the legacy tokens' secret is, and whom they come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LegacyTokens {
    /// A file holding the HS256 secret.
    pub secret_file: PathBuf,
    /// Their `iss` (default `kiln`).
    #[serde(default = "default_legacy_issuer")]
    pub issuer: String,
}

fn default_legacy_issuer() -> String {
    "kiln".into()
}

/// An upstream registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    /// `host[:port]`, as image references name it.
    pub registry: String,
    /// Plain HTTP instead of HTTPS (default false).
    #[serde(default)]
    pub insecure: bool,
    /// Username, with `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Serve pulls of `<mirror_prefix>/<registry>/<repository>` that miss
    /// by fetching them from this upstream (default false).
    #[serde(default)]
    pub pull_through: bool,
}

impl Upstream {
    /// The password from `password_file` (trailing newline dropped).
    pub(crate) fn password(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.password_file.as_ref()?).ok()?;
        Some(text.trim_end_matches(['\n', '\r']).to_owned())
    }
}

/// A tenant and its credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tenant {
    /// The tenant's name: one repository path component, also its
    /// username.
    pub name: String,
    /// Lowercase hex SHA-256 of the tenant's password (a random secret:
    /// `openssl rand -base64 32`; hash it with `kiln serve hash-password`).
    pub password_sha256: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("kiln-data"),
            storage: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            service: "kiln".into(),
            token_ttl_secs: 300,
            open: false,
            anonymous_pull: Vec::new(),
            mirror_prefix: "mirror".into(),
            max_manifest_bytes: 4 << 20,
            conversion_workers: 1,
            conversion_lease_secs: 30,
            cache_ttl_ms: 1000,
            blob_redirect_secs: 0,
            header_timeout_secs: 30,
            body_idle_timeout_secs: 120,
            tenants: Vec::new(),
            upstreams: Vec::new(),
            legacy_tokens: None,
            vm: None,
            builds: BuildSettings::default(),
            pull_through_tag_ttl_secs: 300,
            gc: GcSettings::default(),
        }
    }
}

/// Names a tenant may not take: they are namespaces of their own.
const RESERVED: &[&str] = &["cache", "global", "builds", "admin", "anonymous"];

impl Config {
    /// Reads a file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.mirror_prefix.parse::<RepositoryName>().is_err() || self.mirror_prefix.contains('/')
        {
            bail!(
                "mirror_prefix {:?} is not one repository path component",
                self.mirror_prefix
            );
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tenants {
            if t.name.contains('/') || t.name.parse::<RepositoryName>().is_err() {
                bail!(
                    "tenant name {:?} is not one repository path component",
                    t.name
                );
            }
            // Its cache scope (`cache/<name>`) must be one too.
            if let Err(e) = kiln_cache_key::TenantScope::parse(&t.name) {
                bail!("tenant name {:?} cannot be a cache scope: {e}", t.name);
            }
            if RESERVED.contains(&t.name.as_str()) || t.name == self.mirror_prefix {
                bail!("tenant name {:?} is reserved", t.name);
            }
            if t.password_sha256.len() != 64
                || !t.password_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                bail!("tenant {:?}: password_sha256 must be 64 hex digits", t.name);
            }
            if !seen.insert(&t.name) {
                bail!("tenant {:?} configured twice", t.name);
            }
        }
        for u in &self.upstreams {
            if kiln_dockerfile::registry_component(&u.registry).is_none() {
                bail!("upstream registry {:?} is not host[:port]", u.registry);
            }
            if u.username.is_some() != u.password_file.is_some() {
                bail!(
                    "upstream {:?}: username and password_file go together",
                    u.registry
                );
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together");
        }
        if let Some(vm) = &self.vm
            && (!["auto", "kvm", "tcg"].contains(&vm.accel.as_str())
                || vm.max_instances == 0
                || vm.max_cpus == 0)
        {
            bail!("[vm]: accel must be auto, kvm or tcg; max_instances and max_cpus at least 1");
        }
        if self.header_timeout_secs == 0 || self.body_idle_timeout_secs == 0 {
            bail!("timeouts must be at least 1 s");
        }
        if !(1..=64).contains(&self.conversion_workers) {
            bail!("conversion_workers must be 1..=64");
        }
        if self.blob_redirect_secs > 0 && self.storage.is_none() {
            bail!("blob_redirect_secs needs an S3 storage");
        }
        if self.blob_redirect_secs > 7 * 86_400 {
            bail!("blob_redirect_secs must be at most 604800 (S3's longest presigned URL)");
        }
        if self.cache_ttl_ms > 60_000 {
            bail!("cache_ttl_ms must be at most 60000");
        }
        if !(3..=3600).contains(&self.conversion_lease_secs) {
            bail!("conversion_lease_secs must be 3..=3600");
        }
        let b = &self.builds;
        match (b.mode.as_str(), &b.vm_image, &self.vm) {
            ("host", _, _) | ("vm", Some(_), Some(_)) => {}
            ("vm", _, _) => bail!("[builds] mode = \"vm\" needs vm_image and a [vm] section"),
            (other, _, _) => bail!("[builds] mode {other:?}: host or vm"),
        }
        if b.vm_cpus == 0 || b.vm_memory_mib < 128 {
            bail!("[builds]: vm_cpus at least 1, vm_memory_mib at least 128");
        }
        if !["buildah", "buildctl"].contains(&b.builder.as_str())
            || (b.mode == "vm" && b.builder != "buildah")
            || !(1..=64).contains(&b.workers)
            || b.max_per_principal == 0
            || b.timeout_secs == 0
            || b.timeout_secs > 86_400
        {
            bail!(
                "[builds]: builder must be buildah or buildctl (buildah in vm mode); workers 1..=64; max_per_principal at least 1; timeout_secs 1..=86400"
            );
        }
        let g = &self.gc;
        if g.write_deadline_secs == 0
            || g.grace_secs <= g.write_deadline_secs
            || g.upload_ttl_secs == 0
        {
            bail!(
                "[gc]: write_deadline_secs at least 1, grace_secs longer than it, upload_ttl_secs at least 1"
            );
        }
        if self.token_ttl_secs == 0 || self.token_ttl_secs > 86_400 {
            bail!("token_ttl_secs must be 1..=86400");
        }
        Ok(())
    }

    /// The URL token realms are built on.
    pub(crate) fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if self.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", self.listen)
            })
            .trim_end_matches('/')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_bad_ones_do_not() {
        let example = include_str!("../../kiln.example.toml");
        let c: Config = toml::from_str(example).unwrap();
        c.validate().unwrap();
        assert_eq!(c.tenants.len(), 1);
        let hash = "0".repeat(64);
        for bad in [
            format!("[[tenants]]\nname = \"cache\"\npassword_sha256 = \"{hash}\""),
            format!("[[tenants]]\nname = \"a/b\"\npassword_sha256 = \"{hash}\""),
            "[[tenants]]\nname = \"abc\"\npassword_sha256 = \"xyz\"".to_owned(),
            format!(
                "[[tenants]]\nname = \"abc\"\npassword_sha256 = \"{hash}\"\n[[tenants]]\nname = \"abc\"\npassword_sha256 = \"{hash}\""
            ),
            format!("[[tenants]]\nname = \"ab\"\npassword_sha256 = \"{hash}\""),
            "[builds]\nmode = \"vm\"".to_owned(),
            "[builds]\nbuilder = \"docker\"".to_owned(),
            "mirror_prefix = \"a/b\"".to_owned(),
            "[gc]\ngrace_secs = 60\nwrite_deadline_secs = 60".to_owned(),
        ] {
            let parsed: Result<Config, _> = toml::from_str(&bad);
            assert!(
                parsed.is_err() || parsed.unwrap().validate().is_err(),
                "{bad}"
            );
        }
        assert!(toml::from_str::<Config>("unknown_key = 1").is_err());
    }
}
