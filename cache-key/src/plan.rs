//! Cache plans: what a build imports, what it exports, and the access that
//! takes.

use serde::Serialize;

use crate::access::RepositoryAccess;
use crate::args::{CacheArgs, Client, Direction};
use crate::error::Error;
use crate::names::{BuildId, GlobalKey, TenantScope};
use crate::option::{Backend, CacheMode, CacheOption, CompressionType};
use crate::repository::{Registry, Repository};

/// Layer compression for the exported cache.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::{Compression, CompressionType};
/// let c = Compression::new(CompressionType::Zstd).with_level(19)?.forced(true);
/// assert_eq!(c.level(), Some(19));
/// assert!(Compression::new(CompressionType::Gzip).with_level(10).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compression {
    kind: CompressionType,
    level: Option<u8>,
    force: bool,
}

impl Compression {
    /// An algorithm at its default level, not forced.
    pub fn new(kind: CompressionType) -> Self {
        Self {
            kind,
            level: None,
            force: false,
        }
    }

    /// Sets the level, checked against the algorithm
    /// ([`CompressionType::max_level`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCompressionLevel`] above the algorithm's maximum, or
    /// for `uncompressed`, which takes no level.
    pub fn with_level(mut self, level: u8) -> Result<Self, Error> {
        match self.kind.max_level() {
            Some(max) if level <= max => {
                self.level = Some(level);
                Ok(self)
            }
            Some(max) => Err(Error::InvalidCompressionLevel {
                compression: self.kind,
                level,
                expected: if max == 9 { "0..=9" } else { "0..=22" },
            }),
            None => Err(Error::InvalidCompressionLevel {
                compression: self.kind,
                level,
                expected: "no level",
            }),
        }
    }

    /// Sets `force-compression`: recompress layers that exist with another
    /// compression.
    #[must_use]
    pub fn forced(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// The algorithm.
    pub fn kind(&self) -> CompressionType {
        self.kind
    }

    /// The level, if set.
    pub fn level(&self) -> Option<u8> {
        self.level
    }

    /// Whether compression is forced.
    pub fn force(&self) -> bool {
        self.force
    }
}

/// Whose build it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tier {
    /// An operator build: imports and exports the global tier.
    Admin { key: GlobalKey },
    /// A tenant build: imports global (when keyed) and its own cache,
    /// exports its own cache.
    Tenant {
        tenant: TenantScope,
        key: Option<GlobalKey>,
    },
}

/// Where a build's registry cache comes from and goes to.
///
/// | plan | imports | exports |
/// |---|---|---|
/// | [`tenant`](Self::tenant) with key | `cache/global/{key}`, `cache/{tenant}` | `cache/{tenant}` |
/// | [`tenant`](Self::tenant) without key | `cache/{tenant}` | `cache/{tenant}` |
/// | [`admin`](Self::admin) | `cache/global/{key}` | `cache/global/{key}` |
///
/// Repositories are under the registry's prefix. Imports are listed global
/// first.
///
/// Every export carries `mode=max,image-manifest=true,oci-mediatypes=true`:
/// `mode=max` caches every stage, and with an OCI image manifest the cache
/// is a proper image whose layer blobs are pushed into our registry, instead
/// of an index that only *references* base layers living elsewhere (which
/// made every fresh, ephemeral builder re-download them). The export also
/// always states `ignore-error` explicitly: `true` by default for tenant
/// builds (the cache is an optimisation; a tenant build must not fail
/// because exporting it did), `false` by default for admin builds (filling
/// the global cache is the point of the build, so failing to should be
/// loud). With [`with_insecure`](Self::with_insecure), every option gets
/// `registry.insecure=true` (plain HTTP, for an internal registry).
///
/// # Admin plans
///
/// Admin power must come from credentials, never from a request field:
/// call [`admin`](Self::admin) only for a request authenticated with admin
/// credentials. For the same reason `CachePlan` implements `Serialize`
/// (to show a plan) but not `Deserialize`: a plan is built by the server
/// from the caller's identity, never accepted from a request.
///
/// ```
/// # fn main() -> Result<(), kiln_cache_key::Error> {
/// use kiln_cache_key::CachePlan;
/// let plan = CachePlan::tenant("10.0.0.1:5000".parse()?, "acme".parse()?, Some("node".parse()?));
/// assert_eq!(
///     plan.buildctl_args(),
///     [
///         "--import-cache",
///         "type=registry,ref=10.0.0.1:5000/cache/global/node",
///         "--import-cache",
///         "type=registry,ref=10.0.0.1:5000/cache/acme",
///         "--export-cache",
///         "type=registry,ref=10.0.0.1:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true",
///     ]
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CachePlan {
    registry: Registry,
    tier: Tier,
    compression: Option<Compression>,
    ignore_error: bool,
    insecure: bool,
}

impl CachePlan {
    /// A tenant build's plan. Without a global key it imports only the
    /// tenant's own cache.
    pub fn tenant(registry: Registry, tenant: TenantScope, global_key: Option<GlobalKey>) -> Self {
        Self {
            registry,
            tier: Tier::Tenant {
                tenant,
                key: global_key,
            },
            compression: None,
            ignore_error: true,
            insecure: false,
        }
    }

    /// An admin (operator) build's plan: import and export the global cache
    /// `cache/global/{key}`.
    ///
    /// **Only for requests authenticated with admin credentials.** Do not
    /// derive the choice between this and [`tenant`](Self::tenant) from
    /// anything the caller sends: a tenant able to reach this constructor
    /// could poison every tenant's builds through the shared cache.
    ///
    /// # Errors
    ///
    /// [`Error::AdminWithoutGlobalKey`] when `global_key` is `None`: an admin
    /// build exports only to the global tier, so it needs a key.
    pub fn admin(registry: Registry, global_key: Option<GlobalKey>) -> Result<Self, Error> {
        let key = global_key.ok_or(Error::AdminWithoutGlobalKey)?;
        Ok(Self {
            registry,
            tier: Tier::Admin { key },
            compression: None,
            ignore_error: false,
            insecure: false,
        })
    }

    /// Sets the export's layer compression (default: BuildKit's, gzip).
    #[must_use]
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Sets the export's `ignore-error` (default: `true` for tenant plans,
    /// `false` for admin plans).
    #[must_use]
    pub fn with_ignore_error(mut self, ignore: bool) -> Self {
        self.ignore_error = ignore;
        self
    }

    /// Reaches the registry over plain HTTP (`registry.insecure=true` on
    /// every import and export). Default `false`.
    #[must_use]
    pub fn with_insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether this is an admin plan.
    pub fn is_admin(&self) -> bool {
        matches!(self.tier, Tier::Admin { .. })
    }

    /// The tenant, for tenant plans.
    pub fn tenant_scope(&self) -> Option<&TenantScope> {
        match &self.tier {
            Tier::Admin { .. } => None,
            Tier::Tenant { tenant, .. } => Some(tenant),
        }
    }

    /// The global key, if any (always for admin plans).
    pub fn global_key(&self) -> Option<&GlobalKey> {
        match &self.tier {
            Tier::Admin { key } => Some(key),
            Tier::Tenant { key, .. } => key.as_ref(),
        }
    }

    /// The export's compression, if set.
    pub fn compression(&self) -> Option<&Compression> {
        self.compression.as_ref()
    }

    /// The export's `ignore-error`.
    pub fn ignore_error(&self) -> bool {
        self.ignore_error
    }

    /// Whether the registry is reached over plain HTTP.
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The repositories imported from, in order.
    pub fn import_repositories(&self) -> Vec<Repository> {
        let global = self.global_key().map(|k| self.registry.global_cache(k));
        let tenant = self.tenant_scope().map(|t| self.registry.tenant_cache(t));
        global.into_iter().chain(tenant).collect()
    }

    /// The repository exported to.
    pub fn export_repository(&self) -> Repository {
        match &self.tier {
            Tier::Admin { key } => self.registry.global_cache(key),
            Tier::Tenant { tenant, .. } => self.registry.tenant_cache(tenant),
        }
    }

    /// The import options, in order.
    pub fn imports(&self) -> Vec<CacheOption> {
        self.import_repositories()
            .iter()
            .map(|r| {
                let mut o = self.registry_option(r);
                if self.insecure {
                    o.push_trusted("registry.insecure", "true");
                }
                o
            })
            .collect()
    }

    /// The export option.
    pub fn export(&self) -> CacheOption {
        let mut o = self.registry_option(&self.export_repository());
        o.push_trusted("mode", CacheMode::Max.as_str());
        o.push_trusted("image-manifest", "true");
        o.push_trusted("oci-mediatypes", "true");
        if let Some(c) = &self.compression {
            o.push_trusted("compression", c.kind.as_str());
            if let Some(level) = c.level {
                o.push_trusted("compression-level", level.to_string());
            }
            if c.force {
                o.push_trusted("force-compression", "true");
            }
        }
        o.push_trusted("ignore-error", self.ignore_error.to_string());
        if self.insecure {
            o.push_trusted("registry.insecure", "true");
        }
        o
    }

    /// Imports and export as [`CacheArgs`].
    pub fn cache_args(&self) -> CacheArgs {
        let args = self
            .imports()
            .into_iter()
            .fold(CacheArgs::new(), |a, o| a.with(Direction::Import, o));
        args.with(Direction::Export, self.export())
    }

    /// `buildctl build` arguments: `--import-cache V`... `--export-cache V`.
    pub fn buildctl_args(&self) -> Vec<String> {
        self.cache_args().to_args(Client::Buildctl)
    }

    /// `docker buildx build` arguments: `--cache-from V`... `--cache-to V`.
    pub fn buildx_args(&self) -> Vec<String> {
        self.cache_args().to_args(Client::Buildx)
    }

    /// The repositories and actions the build's registry token must carry:
    ///
    /// 1. `cache/global/{key}`: pull (pull and push for admin plans);
    /// 2. `cache/{tenant}` (tenant plans): pull and push;
    /// 3. `builds/{id}`: pull and push (the result image);
    /// 4. each base-image repository (as named in this registry, e.g. the
    ///    mirrored `docker.io/library/alpine`): pull.
    ///
    /// Push always comes with pull, since pushing clients check for
    /// existing blobs. A repository listed twice appears once, with the
    /// union of its actions, at its first position.
    ///
    /// Whether a base image under `builds/` (another build's result) may be
    /// pulled is the server's decision; this crate does not know build
    /// ownership.
    ///
    /// # Errors
    ///
    /// - [`Error::BaseImageIsCache`] when a base-image repository is in the
    ///   cache namespace ([`Registry::classify_path`]): a Dockerfile naming
    ///   `cache/other-tenant` must not earn a pull grant on it;
    /// - [`Error::InvalidRepository`] when `{host}/{prefix}/builds/{id}` is
    ///   over the name length limit.
    pub fn access(
        &self,
        build: &BuildId,
        base_images: &[Repository],
    ) -> Result<Vec<RepositoryAccess>, Error> {
        let mut out: Vec<RepositoryAccess> = Vec::with_capacity(3 + base_images.len());
        let mut add = |access: RepositoryAccess| match out
            .iter_mut()
            .find(|a| a.repository() == access.repository())
        {
            Some(existing) => existing.merge(access.actions()),
            None => out.push(access),
        };
        if let Some(key) = self.global_key() {
            let repo = self.registry.global_cache(key);
            add(if self.is_admin() {
                RepositoryAccess::pull_push(repo)
            } else {
                RepositoryAccess::pull(repo)
            });
        }
        if let Some(tenant) = self.tenant_scope() {
            add(RepositoryAccess::pull_push(
                self.registry.tenant_cache(tenant),
            ));
        }
        add(RepositoryAccess::pull_push(
            self.registry.build_repository(build)?,
        ));
        for image in base_images {
            if self.registry.classify_path(image).is_cache() {
                return Err(Error::BaseImageIsCache {
                    repository: image.to_string(),
                });
            }
            add(RepositoryAccess::pull(image.clone()));
        }
        Ok(out)
    }

    fn registry_option(&self, repository: &Repository) -> CacheOption {
        let mut o = CacheOption::new(Backend::Registry);
        o.push_trusted("ref", self.registry.reference(repository));
        o
    }
}

/// The JSON shape of a plan.
#[derive(Serialize)]
struct PlanView<'a> {
    registry: &'a Registry,
    role: &'static str,
    tenant: Option<&'a TenantScope>,
    global_key: Option<&'a GlobalKey>,
    imports: Vec<CacheOption>,
    export: CacheOption,
}

impl Serialize for CachePlan {
    /// `{"registry", "role": "admin"|"tenant", "tenant", "global_key",
    /// "imports": [csv...], "export": csv}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PlanView {
            registry: &self.registry,
            role: if self.is_admin() { "admin" } else { "tenant" },
            tenant: self.tenant_scope(),
            global_key: self.global_key(),
            imports: self.imports(),
            export: self.export(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Action;

    fn reg(s: &str) -> Registry {
        s.parse().unwrap()
    }

    fn key(s: &str) -> GlobalKey {
        s.parse().unwrap()
    }

    fn tenant(s: &str) -> TenantScope {
        s.parse().unwrap()
    }

    fn strs(v: &[CacheOption]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn tenant_without_key_imports_only_its_own_cache() {
        let p = CachePlan::tenant(reg("r:5000"), tenant("acme"), None);
        assert_eq!(strs(&p.imports()), ["type=registry,ref=r:5000/cache/acme"]);
        assert_eq!(
            p.export().to_string(),
            "type=registry,ref=r:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"
        );
        assert!(!p.is_admin());
        assert_eq!(p.global_key(), None);
    }

    #[test]
    fn admin_imports_and_exports_global() {
        let p = CachePlan::admin(reg("r:5000/kiln"), Some(key("node"))).unwrap();
        assert_eq!(
            strs(&p.imports()),
            ["type=registry,ref=r:5000/kiln/cache/global/node"]
        );
        assert_eq!(
            p.export().to_string(),
            "type=registry,ref=r:5000/kiln/cache/global/node,mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=false"
        );
        assert_eq!(p.tenant_scope(), None);
    }

    #[test]
    fn admin_without_key_is_an_error() {
        assert_eq!(
            CachePlan::admin(reg("r:1"), None).unwrap_err(),
            Error::AdminWithoutGlobalKey
        );
    }

    #[test]
    fn options_reach_the_export() {
        let p = CachePlan::tenant(reg("[::1]:5000"), tenant("acme"), Some(key("golang")))
            .with_compression(
                Compression::new(CompressionType::Zstd)
                    .with_level(3)
                    .unwrap()
                    .forced(true),
            )
            .with_ignore_error(false)
            .with_insecure(true);
        assert_eq!(
            strs(&p.imports()),
            [
                "type=registry,ref=[::1]:5000/cache/global/golang,registry.insecure=true",
                "type=registry,ref=[::1]:5000/cache/acme,registry.insecure=true"
            ]
        );
        let e = p.export();
        assert_eq!(
            e.to_string(),
            "type=registry,ref=[::1]:5000/cache/acme,mode=max,image-manifest=true,oci-mediatypes=true,compression=zstd,compression-level=3,force-compression=true,ignore-error=false,registry.insecure=true"
        );
        // What the plan renders, the parser reads back identically.
        assert_eq!(e.to_string().parse::<CacheOption>().unwrap(), e);
    }

    #[test]
    fn compression_levels_per_algorithm() {
        for (kind, max) in [
            (CompressionType::Gzip, Some(9)),
            (CompressionType::Estargz, Some(9)),
            (CompressionType::Zstd, Some(22)),
            (CompressionType::ZstdChunked, Some(22)),
            (CompressionType::Uncompressed, None),
        ] {
            let c = Compression::new(kind);
            match max {
                Some(m) => {
                    assert!(c.with_level(0).is_ok());
                    assert!(c.with_level(m).is_ok());
                    assert!(matches!(
                        c.with_level(m + 1),
                        Err(Error::InvalidCompressionLevel { .. })
                    ));
                }
                None => assert!(c.with_level(0).is_err()),
            }
        }
    }

    #[test]
    fn tenant_access() {
        let p = CachePlan::tenant(reg("r:5000/kiln"), tenant("acme"), Some(key("node")));
        let bases: Vec<Repository> = [
            "kiln/docker.io/library/alpine",
            "kiln/docker.io/library/alpine",
            "kiln/builds/7",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got: Vec<String> = p
            .access(&"7".parse().unwrap(), &bases)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "repository:kiln/cache/global/node:pull",
                "repository:kiln/cache/acme:pull,push",
                "repository:kiln/builds/7:pull,push",
                "repository:kiln/docker.io/library/alpine:pull",
            ]
        );
    }

    #[test]
    fn admin_access_pushes_global() {
        let p = CachePlan::admin(reg("r:1"), Some(key("node"))).unwrap();
        let got = p.access(&"b1".parse().unwrap(), &[]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].repository().as_str(), "cache/global/node");
        assert_eq!(got[0].actions(), [Action::Pull, Action::Push]);
        assert_eq!(got[1].repository().as_str(), "builds/b1");
    }

    #[test]
    fn base_images_in_the_cache_namespace_are_refused() {
        let p = CachePlan::tenant(reg("r:1"), tenant("acme"), None);
        for bad in ["cache/other", "cache/global/node", "cache/global", "cache"] {
            let repo: Repository = bad.parse().unwrap();
            assert_eq!(
                p.access(&"1".parse().unwrap(), &[repo]).unwrap_err(),
                Error::BaseImageIsCache {
                    repository: bad.to_owned()
                }
            );
        }
        // A mirrored Docker Hub repository that happens to be called cache
        // is not ours: it lives under docker.io/.
        let mirrored: Repository = "docker.io/cache/foo".parse().unwrap();
        assert!(p.access(&"1".parse().unwrap(), &[mirrored]).is_ok());
    }

    #[test]
    fn serialises_without_secrets_or_surprises() {
        let p = CachePlan::tenant(reg("r:5000"), tenant("acme"), Some(key("node")));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["role"], "tenant");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["global_key"], "node");
        assert_eq!(v["imports"].as_array().unwrap().len(), 2);
        let a = CachePlan::admin(reg("r:5000"), Some(key("node"))).unwrap();
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["role"], "admin");
        assert!(v["tenant"].is_null());
    }
}
