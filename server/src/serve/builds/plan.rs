//! A build's plan, decided before any builder runs: the Dockerfile's
//! external images, the FROM rewrite to copies in this registry, the cache
//! plan (`kiln-cache-key`) and the exact access of the build's token.
//!
//! [`plan`] is pure: the server finds out beforehand which mirrored copies
//! exist (mirroring them first for admin builds) and what the caller may
//! pull, and hands those answers in.

use std::collections::BTreeSet;

use kiln_cache_key::{BuildId, CachePlan, GlobalKey, Registry, Repository, TenantScope};
use kiln_dockerfile::{Dockerfile, ImageUse, Mirror, ResolveOptions};
use kiln_registry_token::{Action, Actions, Permission, RepositoryPattern};
use serde::{Deserialize, Serialize};

/// Whose build, as established from the caller's credentials (never from
/// what the request says).
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// Admin credentials and `is_admin_build`: the global cache tier.
    Admin { global_key: Option<GlobalKey> },
    /// Everyone else's build, caching in `cache/<scope>`.
    Tenant {
        scope: TenantScope,
        global_key: Option<GlobalKey>,
    },
}

/// Why a build cannot be planned: the caller's mistake (400) or a request
/// for access it does not have (403).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("{message}")]
    Dockerfile {
        message: String,
        line: Option<usize>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Denied(String),
}

/// One external image and what the build pulls instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlannedImage {
    pub reference: String,
    pub line: usize,
    /// The copy in this registry the Dockerfile now names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_to: Option<String>,
}

/// Everything a builder needs, persisted with the build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// The Dockerfile the builder gets (rewritten).
    pub dockerfile: String,
    pub images: Vec<PlannedImage>,
    /// Cache repositories imported from, most shared first
    /// (`host/cache/global/<key>`, `host/cache/<scope>`).
    pub cache_imports: Vec<String>,
    /// The cache repository exported to.
    pub cache_export: String,
    /// BuildKit's `--import-cache`/`--export-cache` arguments.
    pub buildctl_cache_args: Vec<String>,
    /// The build token's grants, as `repository:actions`.
    pub access: Vec<String>,
    /// `host/builds/<id>`.
    pub result: String,
    /// `host/<repository>:<tag>`, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Plan {
    /// The build token's grants as permissions.
    pub(crate) fn permissions(&self) -> Vec<Permission> {
        self.access
            .iter()
            .filter_map(|a| {
                let (repo, actions) = a.rsplit_once(':')?;
                let actions = actions.split(',').try_fold(Actions::NONE, |acc, a| {
                    Some(acc.with(a.parse::<Action>().ok()?))
                })?;
                Some(Permission::new(
                    repo.parse::<RepositoryPattern>().ok()?,
                    actions,
                ))
            })
            .collect()
    }
}

/// What [`plan`] is asked.
#[allow(missing_debug_implementations)]
pub(crate) struct PlanRequest<'a> {
    pub id: &'a BuildId,
    pub dockerfile: &'a Dockerfile,
    pub options: &'a ResolveOptions,
    pub role: Role,
    /// This registry as builders reach it (`host[:port]`).
    pub registry: &'a str,
    /// The mirror namespace (`mirror`).
    pub mirror_prefix: &'a str,
    /// References (as `ImageUse::reference` prints them) whose mirrored copy
    /// is in this registry.
    pub mirrored: &'a BTreeSet<String>,
    /// Whether builders reach this registry over plain HTTP.
    pub insecure: bool,
    /// Whether the caller may pull a repository of this registry.
    pub may_pull: &'a dyn Fn(&str) -> bool,
    /// `repository:tag` to push the result to as well, already checked
    /// against the caller's push rights.
    pub tag: Option<&'a str>,
}

/// The external images of a Dockerfile, with BuildKit's error otherwise.
pub(crate) fn images(
    dockerfile: &Dockerfile,
    options: &ResolveOptions,
) -> Result<Vec<ImageUse>, PlanError> {
    dockerfile
        .images(options)
        .map_err(|e| PlanError::Dockerfile {
            message: e.to_string(),
            line: e.line(),
        })
}

/// The mirrored name of `image` in the registry `host`
/// (`<prefix>/<registry>/<path>` with its tag or digest, without the host).
pub(crate) fn mirrored_name(image: &ImageUse, host: &str, mirror_prefix: &str) -> Option<String> {
    let mirror: Mirror = format!("{host}/{mirror_prefix}").parse().ok()?;
    let m = image
        .reference
        .clone()
        .with_default_tag()
        .mirrored(&mirror)
        .ok()?;
    Some(m.to_string().strip_prefix(&format!("{host}/"))?.to_owned())
}

fn repository(name: &str) -> Result<Repository, PlanError> {
    name.parse()
        .map_err(|e: kiln_cache_key::Error| PlanError::Invalid(e.to_string()))
}

/// The plan of one build.
///
/// # Errors
///
/// [`PlanError`]: the Dockerfile's (BuildKit's message and line), a bad
/// cache parameter, or a base image in this registry the caller may not
/// pull (or in the cache namespace).
pub(crate) fn plan(req: &PlanRequest<'_>) -> Result<Plan, PlanError> {
    let invalid = |e: kiln_cache_key::Error| PlanError::Invalid(e.to_string());
    let registry: Registry = req.registry.parse().map_err(invalid)?;
    let cache = match &req.role {
        Role::Admin { global_key } => {
            CachePlan::admin(registry.clone(), global_key.clone()).map_err(invalid)?
        }
        Role::Tenant { scope, global_key } => {
            CachePlan::tenant(registry.clone(), scope.clone(), global_key.clone())
        }
    }
    .with_insecure(req.insecure);
    let images = images(req.dockerfile, req.options)?;
    let mirror: Mirror = format!("{}/{}", req.registry, req.mirror_prefix)
        .parse()
        .map_err(|e: kiln_dockerfile::Error| PlanError::Invalid(e.to_string()))?;
    let rewrite = req
        .dockerfile
        .rewrite(req.options, &mirror, |u| {
            req.mirrored.contains(&u.reference.to_string())
        })
        .map_err(|e| PlanError::Dockerfile {
            message: e.to_string(),
            line: e.line(),
        })?;
    let skipped: BTreeSet<(usize, String)> = rewrite
        .skipped
        .iter()
        .map(|s| (s.image.line, s.image.reference.to_string()))
        .collect();
    let mut bases = Vec::new();
    let mut planned = Vec::new();
    for image in &images {
        let reference = image.reference.to_string();
        let rewritten_to = (req.mirrored.contains(&reference)
            && !skipped.contains(&(image.line, reference.clone())))
        .then(|| mirrored_name(image, req.registry, req.mirror_prefix))
        .flatten();
        let local = match &rewritten_to {
            Some(name) => Some(name.split([':', '@']).next().unwrap_or(name).to_owned()),
            // An image of this registry named directly: the caller's own.
            None if image.reference.domain() == req.registry => {
                Some(image.reference.path().to_owned())
            }
            None => None,
        };
        if let Some(repo) = local {
            if rewritten_to.is_none() && !(req.may_pull)(&repo) {
                return Err(PlanError::Denied(format!(
                    "line {}: you may not pull {repo} from this registry",
                    image.line
                )));
            }
            bases.push(repository(&repo)?);
        }
        planned.push(PlannedImage {
            reference,
            line: image.line,
            rewritten_to: rewritten_to.map(|n| format!("{}/{n}", req.registry)),
        });
    }
    let mut access: Vec<String> = cache
        .access(req.id, &bases)
        .map_err(|e| PlanError::Denied(e.to_string()))?
        .iter()
        .map(ToString::to_string)
        .map(|s| {
            s.strip_prefix("repository:")
                .map(str::to_owned)
                .unwrap_or(s)
        })
        .collect();
    let tag = match req.tag {
        Some(t) => {
            let (repo, _) = t
                .rsplit_once(':')
                .ok_or_else(|| PlanError::Invalid(format!("tag {t:?} is not repository:tag")))?;
            access.push(format!("{repo}:pull,push"));
            Some(format!("{}/{t}", req.registry))
        }
        None => None,
    };
    Ok(Plan {
        dockerfile: rewrite.text,
        images: planned,
        cache_imports: cache
            .import_repositories()
            .iter()
            .map(|r| registry.reference(r))
            .collect(),
        cache_export: registry.reference(&cache.export_repository()),
        buildctl_cache_args: cache.buildctl_args(),
        access,
        result: registry.reference(&registry.build_repository(req.id).map_err(invalid)?),
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "127.0.0.1:5000";

    fn run(
        dockerfile: &str,
        role: Role,
        mirrored: &[&str],
        may_pull: &dyn Fn(&str) -> bool,
        tag: Option<&str>,
    ) -> Result<Plan, PlanError> {
        let df = Dockerfile::parse(dockerfile).map_err(|e| PlanError::Dockerfile {
            message: e.to_string(),
            line: e.line(),
        })?;
        let id: BuildId = "b1".parse().unwrap();
        let mirrored: BTreeSet<String> = mirrored.iter().map(|s| (*s).to_owned()).collect();
        plan(&PlanRequest {
            id: &id,
            dockerfile: &df,
            options: &ResolveOptions::new(),
            role,
            registry: HOST,
            mirror_prefix: "mirror",
            mirrored: &mirrored,
            insecure: true,
            may_pull,
            tag,
        })
    }

    fn tenant(key: Option<&str>) -> Role {
        Role::Tenant {
            scope: "acme".parse().unwrap(),
            global_key: key.map(|k| k.parse().unwrap()),
        }
    }

    #[test]
    fn tenant_build_imports_global_then_own_and_exports_own() {
        let p = run(
            "FROM alpine:3.20\nFROM 10.0.0.9:5000/team/base AS b\n",
            tenant(Some("node")),
            &["docker.io/library/alpine:3.20"],
            &|_| false,
            None,
        )
        .unwrap();
        assert_eq!(
            p.dockerfile,
            "FROM 127.0.0.1:5000/mirror/docker.io/library/alpine:3.20\nFROM 10.0.0.9:5000/team/base AS b\n"
        );
        assert_eq!(
            p.cache_imports,
            [
                "127.0.0.1:5000/cache/global/node",
                "127.0.0.1:5000/cache/acme"
            ]
        );
        assert_eq!(p.cache_export, "127.0.0.1:5000/cache/acme");
        assert_eq!(
            p.access,
            [
                "cache/global/node:pull",
                "cache/acme:pull,push",
                "builds/b1:pull,push",
                "mirror/docker.io/library/alpine:pull",
            ]
        );
        assert_eq!(
            p.images[0].rewritten_to.as_deref(),
            Some("127.0.0.1:5000/mirror/docker.io/library/alpine:3.20")
        );
        assert_eq!(p.images[1].rewritten_to, None);
        assert_eq!(p.result, "127.0.0.1:5000/builds/b1");
        let export = p.buildctl_cache_args.last().unwrap();
        assert!(
            export.contains("image-manifest=true,oci-mediatypes=true"),
            "{export}"
        );
        // The permissions are exactly the access list.
        assert_eq!(p.permissions().len(), 4);
        assert!(!p.permissions()[0].actions.contains(Action::Push));
    }

    #[test]
    fn admin_build_writes_the_global_tier_and_needs_a_key() {
        let p = run(
            "FROM busybox\n",
            Role::Admin {
                global_key: Some("node".parse().unwrap()),
            },
            &[],
            &|_| true,
            None,
        )
        .unwrap();
        assert_eq!(p.access[0], "cache/global/node:pull,push");
        assert_eq!(p.cache_export, "127.0.0.1:5000/cache/global/node");
        assert_eq!(p.dockerfile, "FROM busybox\n");
        let e = run(
            "FROM busybox\n",
            Role::Admin { global_key: None },
            &[],
            &|_| true,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::Invalid(_)), "{e}");
    }

    #[test]
    fn local_bases_need_the_callers_pull_and_never_the_cache() {
        let df = "FROM 127.0.0.1:5000/acme/base:1\n";
        let p = run(df, tenant(None), &[], &|r| r == "acme/base", None).unwrap();
        assert!(
            p.access.contains(&"acme/base:pull".to_owned()),
            "{:?}",
            p.access
        );
        let e = run(df, tenant(None), &[], &|_| false, None).unwrap_err();
        assert!(matches!(e, PlanError::Denied(_)), "{e}");
        let e = run(
            "FROM 127.0.0.1:5000/cache/other\n",
            tenant(None),
            &[],
            &|_| true,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::Denied(_)), "{e}");
    }

    #[test]
    fn tag_and_dockerfile_errors() {
        let p = run(
            "FROM busybox\n",
            tenant(None),
            &[],
            &|_| true,
            Some("acme/app:v1"),
        )
        .unwrap();
        assert_eq!(p.tag.as_deref(), Some("127.0.0.1:5000/acme/app:v1"));
        assert!(p.access.contains(&"acme/app:pull,push".to_owned()));
        let e = run(
            "FROM busybox\nCOPY --from=\n",
            tenant(None),
            &[],
            &|_| true,
            None,
        );
        let e2 = run("FRM busybox\n", tenant(None), &[], &|_| true, None).unwrap_err();
        assert!(
            matches!(e2, PlanError::Dockerfile { line: Some(1), .. }),
            "{e2:?} / {e:?}"
        );
    }
}
