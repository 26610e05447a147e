//! Builds: a principal's source tarball and Dockerfile, planned
//! ([`plan::plan`]), queued, built by a [`builder::Builder`] with the
//! two-tier registry cache, pushed to `builds/<id>` (and an optional tag)
//! and converted by the server's conversion queue like any pushed image.
//!
//! Records live in `<data>/builds/<id>/build.json` (written atomically at
//! every change) beside the source, the rewritten Dockerfile and the log.
//! After a restart, queued builds run again; a build that was running is
//! marked failed ("the server stopped during the build"): its builder's
//! processes died with the server, and a half-finished push is harmless
//! (the result is tagged only at its end).

mod api;
mod builder;
mod buildkit;
mod context;
mod plan;
mod vm;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_dockerfile::{Dockerfile, ResolveOptions};
use kiln_registry::Registry;
use kiln_registry_token::{Action, RepositoryName};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub(crate) use api::router;

use super::auth::{Auth, Principal};
use super::config::{BuildSettings, VmSettings};
use super::convert::Conversions;
use super::mirror::Mirroring;
use super::store::Store;
use builder::{BuildFailure, Builder, Job};
use plan::{Plan, PlanError, PlanRequest, Role};

/// Where a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BuildState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildState {
    fn is_done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What was asked, as persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Params {
    pub is_admin_build: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_cache_key: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// One build, as stored and as `GET /kiln/v1/builds/<id>` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    pub owner: String,
    pub state: BuildState,
    pub builder: String,
    pub params: Params,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The pushed result's manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `builds/<id>@<digest>`, once pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub plan: Plan,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Most global cache entries linked into a tenant's cache before a build.
const MAX_SEEDED: usize = 10_000;

/// A build in memory: its record and how to cancel it.
struct Entry {
    record: Record,
    cancel: CancellationToken,
    /// Told when the record changes (log readers wait on it).
    changed: Arc<tokio::sync::Notify>,
}

/// The build service of a running server.
pub(crate) struct Builds {
    settings: BuildSettings,
    dir: PathBuf,
    auth: Arc<Auth>,
    registry: Arc<Registry<Store>>,
    conversions: Arc<Conversions>,
    mirroring: Arc<Mirroring>,
    /// This registry as builders reach it.
    host: String,
    tls_verify: bool,
    mirror_prefix: String,
    builder: Result<Arc<dyn Builder>, String>,
    entries: Mutex<HashMap<String, Entry>>,
    workers: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Builds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builds")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Whether `binary` runs (`--version`).
fn runs(binary: &Path) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What [`Builds::start`] needs from the server.
pub(crate) struct Wiring {
    pub settings: BuildSettings,
    pub dir: PathBuf,
    pub auth: Arc<Auth>,
    pub registry: Arc<Registry<Store>>,
    pub conversions: Arc<Conversions>,
    pub mirroring: Arc<Mirroring>,
    pub public_url: String,
    pub mirror_prefix: String,
    /// `[vm]`, for builder VMs.
    pub vm: Option<VmSettings>,
}

impl Builds {
    /// Loads the stored builds: queued ones run again, running ones are
    /// marked failed.
    pub(crate) fn start(w: Wiring) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(w.dir.join("tmp"))?;
        let builder: Result<Arc<dyn Builder>, String> = match (&w.vm, &w.settings.vm_image) {
            (Some(vm), Some(image)) if w.settings.mode == "vm" => Ok(Arc::new(vm::VmBuildah {
                vm: vm.clone(),
                image: image.clone(),
                memory_mib: w.settings.vm_memory_mib,
                cpus: w.settings.vm_cpus,
                registry: w.registry.clone(),
                conversions: w.conversions.clone(),
                accel: tokio::sync::OnceCell::new(),
            })),
            _ if w.settings.builder == "buildctl" => {
                if runs(&w.settings.buildctl) {
                    Ok(Arc::new(buildkit::Buildctl {
                        binary: w.settings.buildctl.clone(),
                        addr: w.settings.buildkit_addr.clone(),
                    }))
                } else {
                    Err(format!(
                        "buildctl is not installed ({} --version failed): builds are off",
                        w.settings.buildctl.display()
                    ))
                }
            }
            _ if runs(&w.settings.buildah) => Ok(Arc::new(builder::Buildah {
                binary: w.settings.buildah.clone(),
            })),
            _ => Err(format!(
                "the builder is not installed ({} --version failed): builds are off",
                w.settings.buildah.display()
            )),
        };
        if let Err(e) = &builder {
            tracing::warn!("{e}");
        }
        let host = super::public_host(&w.public_url);
        let this = Arc::new(Self {
            workers: Arc::new(tokio::sync::Semaphore::new(w.settings.workers)),
            settings: w.settings,
            dir: w.dir,
            auth: w.auth,
            registry: w.registry,
            conversions: w.conversions,
            mirroring: w.mirroring,
            tls_verify: w.public_url.starts_with("https://"),
            host,
            mirror_prefix: w.mirror_prefix,
            builder,
            entries: Mutex::new(HashMap::new()),
        });
        let mut queued = Vec::new();
        for entry in std::fs::read_dir(&this.dir)?.flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("build.json")) else {
                continue;
            };
            let Ok(mut record) = serde_json::from_slice::<Record>(&bytes) else {
                tracing::warn!(path = %entry.path().display(), "unreadable build record");
                continue;
            };
            if record.state == BuildState::Running {
                record.state = BuildState::Failed;
                record.error = Some("the server stopped during the build".into());
                record.finished_at = Some(now_ms());
                this.persist(&record);
            }
            if record.state == BuildState::Queued {
                queued.push(record.id.clone());
            }
            this.auth.set_build_owner(&record.id, record.owner.clone());
            this.lock().insert(
                record.id.clone(),
                Entry {
                    record,
                    cancel: CancellationToken::new(),
                    changed: Arc::default(),
                },
            );
        }
        queued.sort_by_key(|id| this.get(id).map(|r| r.created_at));
        for id in queued {
            this.spawn(id);
        }
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn build_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.build_dir(id).join("log")
    }

    fn get(&self, id: &str) -> Option<Record> {
        self.lock().get(id).map(|e| e.record.clone())
    }

    /// The record of `id` if `principal` may see it (its owner, the admin).
    fn visible(&self, id: &str, principal: &Principal) -> Option<Record> {
        self.get(id)
            .filter(|r| *principal == Principal::Admin || r.owner == principal.subject())
    }

    fn persist(&self, record: &Record) {
        let path = self.build_dir(&record.id).join("build.json");
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        if let Err(e) = super::write_atomically(&path, &bytes, 0o600) {
            tracing::error!(id = %record.id, error = %e, "writing the build record");
        }
    }

    /// Changes a record in memory and on disk.
    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) -> Option<Record> {
        let (record, changed) = {
            let mut map = self.lock();
            let e = map.get_mut(id)?;
            f(&mut e.record);
            (e.record.clone(), e.changed.clone())
        };
        self.persist(&record);
        changed.notify_waiters();
        Some(record)
    }

    /// What tells of changes to `id`'s record.
    fn changes(&self, id: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.lock().get(id).map(|e| e.changed.clone())
    }

    /// Appends a line of the server's own to a build's log.
    fn log(&self, id: &str, line: &str) {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log_path(id))
        {
            let _ = writeln!(f, "kiln: {line}");
        }
    }

    /// Builds of `owner` queued or running.
    fn active_of(&self, owner: &str) -> usize {
        active_in(&self.lock(), owner)
    }

    /// The role a principal's request earns: admin power only from the
    /// admin's credentials, a cache scope only its own.
    fn role(&self, principal: &Principal, params: &Params) -> Result<Role, PlanError> {
        let key = params
            .global_cache_key
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: kiln_cache_key::Error| PlanError::Invalid(e.to_string()))?;
        let scope = |s: &str| {
            s.parse()
                .map_err(|e: kiln_cache_key::Error| PlanError::Invalid(e.to_string()))
        };
        match principal {
            Principal::Admin if params.is_admin_build => Ok(Role::Admin { global_key: key }),
            Principal::Admin => Ok(Role::Tenant {
                scope: scope(params.cache_scope.as_deref().ok_or_else(|| {
                    PlanError::Invalid("an admin's non-admin build needs a cache_scope".into())
                })?)?,
                global_key: key,
            }),
            Principal::Tenant(t) => {
                if params.is_admin_build {
                    return Err(PlanError::Denied(
                        "is_admin_build needs the admin's credentials".into(),
                    ));
                }
                match params.cache_scope.as_deref() {
                    None => {}
                    Some(s) if s.eq_ignore_ascii_case(t) => {}
                    Some(s) => {
                        return Err(PlanError::Denied(format!(
                            "cache_scope {s:?}: a tenant caches only in its own scope ({t})"
                        )));
                    }
                }
                Ok(Role::Tenant {
                    scope: scope(t)?,
                    global_key: key,
                })
            }
            _ => Err(PlanError::Denied(
                "builds need a tenant's or the admin's credentials".into(),
            )),
        }
    }

    /// References of `images` whose mirrored copy is in this registry.
    async fn present_copies(&self, images: &[kiln_dockerfile::ImageUse]) -> BTreeSet<String> {
        let mut present = BTreeSet::new();
        for image in images {
            let Some(name) = plan::mirrored_name(image, &self.host, &self.mirror_prefix) else {
                continue;
            };
            let Some((repo, reference)) = super::instances::parse_image(&name) else {
                continue;
            };
            if self.registry.manifest_info(&repo, &reference).await.is_ok() {
                present.insert(image.reference.to_string());
            }
        }
        present
    }

    /// Plans a build for `principal` (`mirror` first for admin builds).
    async fn prepare(
        &self,
        id: &kiln_cache_key::BuildId,
        principal: &Principal,
        params: &Params,
        dockerfile: &Dockerfile,
        mirror: bool,
    ) -> Result<Plan, PlanError> {
        let role = self.role(principal, params)?;
        let mut options = ResolveOptions::new();
        for (k, v) in &params.build_args {
            options = options.build_arg(k, v);
        }
        if let Some(p) = &params.platform {
            options = options.target_platform(
                p.parse()
                    .map_err(|e| PlanError::Invalid(format!("platform {p:?}: {e}")))?,
            );
        }
        if let Some(t) = &params.target {
            options = options.target_stage(t);
        }
        let images = plan::images(dockerfile, &options)?;
        if mirror && matches!(role, Role::Admin { .. }) {
            let mut seen = BTreeSet::new();
            for image in &images {
                let reference = image.reference.clone().with_default_tag().to_string();
                if image.reference.domain() == self.host || !seen.insert(reference.clone()) {
                    continue;
                }
                match self.mirroring.mirror_reference(&reference).await {
                    Ok(digest) => {
                        self.log(id.as_str(), &format!("mirrored {reference} ({digest})"))
                    }
                    Err(e) => self.log(
                        id.as_str(),
                        &format!("mirroring {reference} failed, building from the original: {e}"),
                    ),
                }
            }
        }
        let mirrored = self.present_copies(&images).await;
        if let Some(tag) = &params.tag {
            let repo = tag
                .rsplit_once(':')
                .and_then(|(r, _)| r.parse::<RepositoryName>().ok())
                .ok_or_else(|| PlanError::Invalid(format!("tag {tag:?} is not repository:tag")))?;
            if !self.auth.policy_allows(principal, &repo, Action::Push) {
                return Err(PlanError::Denied(format!("you may not push {repo}")));
            }
        }
        let may_pull = |repo: &str| {
            repo.parse::<RepositoryName>()
                .is_ok_and(|r| self.auth.policy_allows(principal, &r, Action::Pull))
        };
        plan::plan(&PlanRequest {
            id,
            dockerfile,
            options: &options,
            role,
            registry: &self.host,
            mirror_prefix: &self.mirror_prefix,
            mirrored: &mirrored,
            insecure: !self.tls_verify,
            may_pull: &may_pull,
            tag: params.tag.as_deref(),
        })
    }

    /// Queues a build whose directory (source, Dockerfile) is in place.
    /// Queues a build unless its owner has `max_per_principal` queued or
    /// running already (checked and inserted under one lock); the count it
    /// has when refused.
    fn enqueue(self: &Arc<Self>, record: Record) -> Result<(), usize> {
        let id = record.id.clone();
        {
            let mut map = self.lock();
            let active = active_in(&map, &record.owner);
            if active >= self.settings.max_per_principal {
                return Err(active);
            }
            self.auth.set_build_owner(&record.id, record.owner.clone());
            self.persist(&record);
            map.insert(
                id.clone(),
                Entry {
                    record,
                    cancel: CancellationToken::new(),
                    changed: Arc::default(),
                },
            );
        }
        self.spawn(id);
        Ok(())
    }

    fn spawn(self: &Arc<Self>, id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = this.workers.clone().acquire_owned().await else {
                return;
            };
            this.run(&id).await;
        });
    }

    /// Runs a queued build to its end.
    async fn run(&self, id: &str) {
        let Some((record, cancel)) = self
            .lock()
            .get(id)
            .map(|e| (e.record.clone(), e.cancel.clone()))
        else {
            return;
        };
        if record.state != BuildState::Queued {
            return;
        }
        let builder = match &self.builder {
            Ok(b) => b.clone(),
            Err(e) => {
                self.finish(id, Err(BuildFailure::Failed(e.clone())));
                return;
            }
        };
        self.update(id, |r| {
            r.state = BuildState::Running;
            r.started_at = Some(now_ms());
        });
        // Its credential is good while it runs, and not a moment after.
        self.auth.set_build_running(id, true);
        let outcome = self.build(&record, builder.as_ref(), cancel).await;
        self.auth.set_build_running(id, false);
        self.finish(id, outcome);
    }

    async fn build(
        &self,
        record: &Record,
        builder: &dyn Builder,
        cancel: CancellationToken,
    ) -> Result<String, BuildFailure> {
        let dir = self.build_dir(&record.id);
        let failed = |e: String| BuildFailure::Failed(e);
        let principal = self
            .auth
            .principal_of(Some(&record.owner))
            .ok_or_else(|| failed(format!("{} is no longer configured", record.owner)))?;
        let text = std::fs::read_to_string(dir.join("Dockerfile.original"))
            .map_err(|e| failed(format!("reading the Dockerfile: {e}")))?;
        let dockerfile = Dockerfile::parse(&text).map_err(|e| failed(e.to_string()))?;
        let id: kiln_cache_key::BuildId = record.id.parse().map_err(|e| failed(format!("{e}")))?;
        let plan = self
            .prepare(&id, &principal, &record.params, &dockerfile, true)
            .await
            .map_err(|e| failed(e.to_string()))?;
        for image in &plan.images {
            match &image.rewritten_to {
                Some(to) => self.log(&record.id, &format!("FROM {} -> {to}", image.reference)),
                None => self.log(
                    &record.id,
                    &format!(
                        "FROM {} (as written: no mirrored copy here)",
                        image.reference
                    ),
                ),
            }
        }
        let rewritten = dir.join("Dockerfile.kiln");
        std::fs::write(&rewritten, &plan.dockerfile).map_err(|e| failed(e.to_string()))?;
        self.update(&record.id, |r| r.plan = plan.clone());
        let timeout = Duration::from_secs(self.settings.timeout_secs);
        let credential = self
            .auth
            .build_credential(
                &record.id,
                plan.permissions(),
                timeout + Duration::from_secs(600),
            )
            .map_err(|e| failed(e.to_string()))?;
        let seeded = self.seed_cache(&plan).await;
        if seeded > 0 {
            self.log(
                &record.id,
                &format!(
                    "linked {seeded} entries of {} into {}",
                    plan.cache_imports[0], plan.cache_export
                ),
            );
        }
        self.log(
            &record.id,
            &format!(
                "building with {}: cache from and to {}",
                builder.name(),
                plan.cache_export
            ),
        );
        let job = Job {
            id: record.id.clone(),
            context: dir.join("context"),
            dockerfile: rewritten,
            work: dir.join("work"),
            build_args: record.params.build_args.clone(),
            target: record.params.target.clone(),
            platform: record.params.platform.clone(),
            registry: self.host.clone(),
            credential,
            tls_verify: self.tls_verify,
            cache_from: Some(plan.cache_export.clone()),
            buildctl_cache_args: plan.buildctl_cache_args.clone(),
            cache_to: plan.cache_export.clone(),
            result: plan.result.clone(),
            tag: plan.tag.clone(),
            timeout,
        };
        let result = builder
            .build(&job, &self.log_path(&record.id), cancel)
            .await;
        let _ = std::fs::remove_dir_all(&job.work);
        result
    }

    /// Buildah imports from one repository: the export's. A tenant plan
    /// with a global key first gets the global tier's entries it lacks
    /// linked into its own cache (entries are tagged by content, so they
    /// never clash; blobs are linked, not copied), so the import sees both
    /// tiers as BuildKit's two imports would. The count of entries linked.
    async fn seed_cache(&self, plan: &Plan) -> usize {
        let repo = |reference: &str| {
            reference
                .strip_prefix(&format!("{}/", self.host))
                .and_then(|p| p.parse::<RepositoryName>().ok())
        };
        let (Some(global), Some(own)) = (
            plan.cache_imports.first().and_then(|r| repo(r)),
            repo(&plan.cache_export),
        ) else {
            return 0;
        };
        if global == own {
            return 0;
        }
        let Ok((tags, _)) = self.registry.tags(&global, Some(MAX_SEEDED), None).await else {
            return 0;
        };
        let mut linked = 0;
        for tag in tags {
            let Ok(tag) = tag.parse() else { continue };
            match self
                .registry
                .copy_manifest(&global, &own, &kiln_registry::Reference::Tag(tag))
                .await
            {
                Ok(true) => linked += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%global, %own, error = %e, "linking a cache entry"),
            }
        }
        linked
    }

    fn finish(&self, id: &str, outcome: Result<String, BuildFailure>) {
        // The log's last line first: a reader stops once the build ended.
        match &outcome {
            Ok(d) => self.log(id, &format!("pushed {d}")),
            Err(e) => self.log(id, &format!("build ended: {e}")),
        }
        let record = self.update(id, |r| {
            r.finished_at = Some(now_ms());
            match &outcome {
                Ok(digest) => {
                    r.state = BuildState::Succeeded;
                    r.image = Some(format!("builds/{}@{digest}", r.id));
                    r.digest = Some(digest.clone());
                }
                Err(BuildFailure::Cancelled) => r.state = BuildState::Cancelled,
                Err(e) => {
                    r.state = BuildState::Failed;
                    r.error = Some(e.to_string());
                }
            }
        });
        if let Some(r) = record {
            tracing::info!(id, state = ?r.state, "build ended");
        }
    }

    /// Cancels a build: a queued one never starts, a running one's builder
    /// is killed.
    fn cancel(&self, id: &str) -> Option<Record> {
        let (cancel, queued) = {
            let map = self.lock();
            let e = map.get(id)?;
            (e.cancel.clone(), e.record.state == BuildState::Queued)
        };
        cancel.cancel();
        if queued {
            self.update(id, |r| {
                r.state = BuildState::Cancelled;
                r.finished_at = Some(now_ms());
            })
        } else {
            self.get(id)
        }
    }
}

/// Builds of `owner` queued or running in `entries`.
fn active_in(entries: &HashMap<String, Entry>, owner: &str) -> usize {
    entries
        .values()
        .filter(|e| e.record.owner == owner && !e.record.state.is_done())
        .count()
}
