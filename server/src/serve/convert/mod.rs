//! Post-push conversion: every tagged image (and every index, for this
//! host's platform) pushed to the registry becomes an ext4 disk image
//! through `kiln-ext4`, on a bounded pool of workers.
//!
//! Records live in the registry's store (`shared.rs`), so replicas over one
//! bucket share them: a conversion runs once, under a lease in the store,
//! and is taken over by another replica when its holder dies; its outputs
//! (`<alg>-<hex>.ext4`, `<alg>-<hex>.run.json`) are written to
//! `<data>/conversions/` and, over an object store, uploaded beside the
//! registry's objects, from where other replicas fetch them when they need
//! them. Work that was pending or running when a server stopped is taken up
//! again. Repositories under `cache/` and manifests that are not runnable
//! images (BuildKit cache configs, artifacts) are skipped with a reason,
//! never failed, and never fail the push.

mod shared;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_ext4::{Image, Platform, convert};
use kiln_registry::api::{HookWork, ManifestPushed};
use kiln_registry::manifest::Kind;
use kiln_registry::{Digest, Reference, Registry};
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreBlobs};

/// Where a conversion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    Pending,
    Converting,
    Ready,
    Failed,
    Skipped,
}

/// One manifest's conversion, as stored and as `GET /kiln/v1/images/<d>`
/// reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub digest: String,
    pub repository: String,
    /// Other repositories the same manifest was pushed to (at most
    /// [`MAX_ALSO_IN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_in: Vec<String>,
    pub media_type: String,
    pub state: State,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The manifest converted (an index's child for this platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_manifest: Option<String>,
    /// The ext4's size in bytes, once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext4_bytes: Option<u64>,
    /// Seconds since the epoch.
    pub queued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// How long the conversion took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl State {
    /// Whether the conversion is over (ready, failed or skipped).
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Self::Ready | Self::Failed | Self::Skipped)
    }
}

/// Most repositories a record remembers besides its first.
const MAX_ALSO_IN: usize = 64;

/// Why a cache repository's manifest is not converted.
const CACHE_SKIP: &str = "cache repository";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The conversion queue, and this process's view of the records.
pub(crate) struct Conversions {
    /// Outputs converted here or fetched from the store.
    dir: PathBuf,
    registry: Arc<Registry<Store>>,
    platform: Platform,
    /// This process, as a lease holder.
    holder: String,
    lease_ttl: Duration,
    records: Mutex<HashMap<String, Record>>,
    /// Digests queued or converting in this process.
    local: Mutex<HashSet<String>>,
    queue: tokio::sync::mpsc::UnboundedSender<String>,
}

impl std::fmt::Debug for Conversions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversions")
            .field("dir", &self.dir)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// This host's platform, which indexes are converted for.
pub(crate) fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("linux/{arch}")
        .parse()
        .unwrap_or_else(|_| "linux/amd64".parse().expect("a valid platform"))
}

/// Why a conversion did not produce an image.
enum Failure {
    /// Not a runnable image: skipped, with this reason.
    NotRunnable(String),
    /// Anything else: failed, with this error.
    Error(String),
}

impl From<kiln_ext4::Error> for Failure {
    fn from(e: kiln_ext4::Error) -> Self {
        match e {
            kiln_ext4::Error::NotRunnableImage { config_media_type } => Self::NotRunnable(format!(
                "not a runnable image (config media type {config_media_type})"
            )),
            other => Self::Error(other.to_string()),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Error(e.to_string())
    }
}

fn file_stem(d: &str) -> String {
    d.replacen(':', "-", 1)
}

impl Conversions {
    /// Starts `workers` workers converting into `dir`, and a task that
    /// takes up conversions no live process holds (after a restart, or a
    /// replica's crash) now and every third of `lease_ttl`.
    pub(crate) fn start(
        dir: PathBuf,
        registry: Arc<Registry<Store>>,
        workers: usize,
        lease_ttl: Duration,
    ) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // Outputs cut short by a crash.
            if name.ends_with(".tmp") || name.ends_with(".partial") {
                std::fs::remove_file(&path).ok();
            }
        }
        let (this, rx) = Self::open(dir, registry, lease_ttl)?;
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers.max(1) {
            let this = this.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                loop {
                    let Some(digest) = rx.lock().await.recv().await else {
                        return;
                    };
                    let worker = this.clone();
                    let d = digest.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || worker.run(&d)).await {
                        tracing::error!(error = %e, "conversion worker panicked");
                    }
                    this.locals().remove(&digest);
                }
            });
        }
        let sweeper = Arc::downgrade(&this);
        tokio::spawn(async move {
            loop {
                let Some(this) = sweeper.upgrade() else {
                    return;
                };
                if let Err(e) = this.take_over().await {
                    tracing::warn!(error = %e, "looking for conversions to take up");
                }
                drop(this);
                tokio::time::sleep(lease_ttl / 3).await;
            }
        });
        Ok(this)
    }

    /// The conversions' records and outputs without workers (`kiln gc`
    /// prunes those of deleted manifests through it), and the receiving end
    /// of their queue.
    pub(crate) fn open(
        dir: PathBuf,
        registry: Arc<Registry<Store>>,
        lease_ttl: Duration,
    ) -> io::Result<(Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        let holder = super::auth::random_bytes::<8>()
            .map_err(io::Error::other)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let this = Arc::new(Self {
            dir,
            registry,
            platform: host_platform(),
            holder,
            lease_ttl,
            records: Mutex::new(HashMap::new()),
            local: Mutex::new(HashSet::new()),
            queue: tx,
        });
        Ok((this, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn locals(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `digest` here unless it already is.
    fn enqueue(&self, digest: &str) {
        if self.locals().insert(digest.to_owned()) {
            self.queue.send(digest.to_owned()).ok();
        }
    }

    /// The record of a manifest digest: the store's (another replica may
    /// have moved it on), else what this process knows.
    pub(crate) async fn get(&self, digest: &str) -> Option<Record> {
        let known = self.lock().get(digest).cloned();
        if let Some(r) = &known
            && r.state.is_final()
            && !self.is_shared()
        {
            return known;
        }
        match self.load(digest).await {
            Ok(Some(stored)) => {
                self.lock().insert(digest.to_owned(), stored.clone());
                Some(stored)
            }
            // Pruned (its manifest was deleted everywhere): forgotten here
            // too; a record still being stored stays.
            Ok(None) if known.as_ref().is_some_and(|r| r.state.is_final()) => {
                self.lock().remove(digest);
                None
            }
            Ok(None) => known,
            Err(e) => {
                tracing::warn!(error = %e, %digest, "reading a conversion record");
                known
            }
        }
    }

    /// Conversions by state, and the seconds and count of those that ran,
    /// as this process has seen them.
    pub(crate) fn summary(&self) -> (BTreeMap<&'static str, u64>, f64, u64) {
        let mut by_state = BTreeMap::new();
        let (mut seconds, mut ran) = (0.0, 0);
        for r in self.lock().values() {
            let name = match r.state {
                State::Pending => "pending",
                State::Converting => "converting",
                State::Ready => "ready",
                State::Failed => "failed",
                State::Skipped => "skipped",
            };
            *by_state.entry(name).or_default() += 1;
            if let Some(s) = r.seconds {
                seconds += s;
                ran += 1;
            }
        }
        (by_state, seconds, ran)
    }

    /// Where a digest's ext4 image and run configuration are kept here.
    fn local_paths(&self, digest: &str) -> (PathBuf, PathBuf) {
        let stem = file_stem(digest);
        (
            self.dir.join(format!("{stem}.ext4")),
            self.dir.join(format!("{stem}.run.json")),
        )
    }

    /// A ready conversion's ext4 image and run configuration as local
    /// files (fetched from the store when another replica converted it).
    pub(crate) async fn outputs(&self, digest: &str) -> io::Result<(PathBuf, PathBuf)> {
        let (ext4, run) = self.local_paths(digest);
        if !(ext4.exists() && run.exists()) {
            self.fetch_outputs(digest, &ext4, &run).await?;
        }
        Ok((ext4, run))
    }

    /// Records a change of this process's record, here and in the store.
    fn update(&self, digest: &str, f: impl FnOnce(&mut Record)) -> Option<Record> {
        let mut map = self.lock();
        let r = map.get_mut(digest)?;
        f(r);
        let r = r.clone();
        drop(map);
        let handle = tokio::runtime::Handle::current();
        if let Err(e) = handle.block_on(self.save(&r)) {
            tracing::error!(error = %e, %digest, "cannot persist conversion state");
        }
        Some(r)
    }

    /// The registry's hook: queues a pushed manifest, or records why not;
    /// the returned work stores the record (the push is acknowledged once
    /// it is, so a crash cannot forget a conversion).
    pub(crate) fn on_manifest(self: &Arc<Self>, pushed: &ManifestPushed) -> HookWork {
        let m = &pushed.put.manifest;
        // Children of an index are pushed by digest first; the index (and
        // tagged images) are what users run.
        if matches!(pushed.reference, Reference::Digest(_)) && m.kind == Kind::Image {
            return Box::pin(async {});
        }
        let digest = pushed.put.digest.to_string();
        let repository = pushed.repository.to_string();
        let mut record = Record {
            digest: digest.clone(),
            repository: repository.clone(),
            also_in: Vec::new(),
            media_type: m.media_type.clone(),
            state: State::Pending,
            error: None,
            reason: None,
            image_manifest: None,
            ext4_bytes: None,
            queued_at: now(),
            finished_at: None,
            seconds: None,
        };
        if repository == "cache" || repository.starts_with("cache/") {
            record.state = State::Skipped;
            record.reason = Some(CACHE_SKIP.into());
            record.finished_at = Some(now());
        }
        // Known here and kept: only the repository is new. Otherwise the
        // store decides (another replica may have it).
        let kept = {
            let mut map = self.lock();
            match map.get_mut(&digest) {
                Some(existing) if keeps(existing, &record) => {
                    add_repository(existing, &repository);
                    true
                }
                _ => {
                    map.insert(digest.clone(), record.clone());
                    false
                }
            }
        };
        let this = self.clone();
        Box::pin(async move {
            let result = if kept {
                this.add_repository_or_publish(record).await
            } else {
                this.publish(record).await
            };
            if let Err(e) = result {
                tracing::error!(error = %e, %digest, "cannot persist conversion state");
            }
        })
    }

    /// Converts one queued manifest (on a blocking thread), under the
    /// conversion's lease.
    fn run(&self, digest: &str) {
        let handle = tokio::runtime::Handle::current();
        let lease = match handle.block_on(self.claim(digest)) {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, %digest, "conversion lease");
                return;
            }
        };
        let renewal = {
            let (lease, registry, every) =
                (lease.clone(), self.registry.clone(), self.lease_ttl / 3);
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = lease.renew(registry.storage()).await {
                        tracing::warn!(error = %e, "renewing a conversion lease");
                    }
                }
            })
        };
        self.convert_held(digest);
        renewal.abort();
        if let Err(e) = handle.block_on(lease.release(self.registry.storage())) {
            tracing::warn!(error = %e, %digest, "releasing a conversion lease");
        }
    }

    fn convert_held(&self, digest: &str) {
        let Some(record) = self.update(digest, |r| r.state = State::Converting) else {
            return;
        };
        let started = Instant::now();
        let outcome = self.convert(&record).and_then(|done| {
            let (ext4, run) = self.local_paths(digest);
            tokio::runtime::Handle::current().block_on(self.upload_outputs(&ext4, &run))?;
            Ok(done)
        });
        let seconds = started.elapsed().as_secs_f64();
        let finished = self.update(digest, |r| {
            r.finished_at = Some(now());
            r.seconds = Some(seconds);
            match outcome {
                Ok((bytes, child)) => {
                    r.state = State::Ready;
                    r.ext4_bytes = Some(bytes);
                    r.image_manifest = Some(child);
                }
                Err(Failure::NotRunnable(reason)) => {
                    r.state = State::Skipped;
                    r.reason = Some(reason);
                }
                Err(Failure::Error(e)) => {
                    r.state = State::Failed;
                    r.error = Some(e);
                }
            }
        });
        if let Some(r) = finished {
            match r.state {
                State::Failed => {
                    tracing::warn!(%digest, error = r.error.as_deref().unwrap_or(""), "conversion failed")
                }
                State::Skipped => {
                    tracing::info!(%digest, reason = r.reason.as_deref().unwrap_or(""), "conversion skipped")
                }
                _ => {
                    tracing::info!(%digest, seconds, bytes = r.ext4_bytes.unwrap_or(0), "conversion ready")
                }
            }
        }
    }

    fn convert(&self, record: &Record) -> Result<(u64, String), Failure> {
        let handle = tokio::runtime::Handle::current();
        let source = StoreBlobs {
            store: self.registry.storage(),
            handle: handle.clone(),
        };
        let bad = || Failure::Error(format!("bad digest {}", record.digest));
        let ours: Digest = record.digest.parse().map_err(|_| bad())?;
        let digest: oci_spec::image::Digest = record.digest.parse().map_err(|_| bad())?;
        let size = handle
            .block_on(kiln_registry::Storage::blob_size(
                self.registry.storage(),
                &ours,
            ))?
            .ok_or_else(|| Failure::Error(format!("no blob {ours}")))?;
        let descriptor =
            oci_spec::image::Descriptor::new(record.media_type.as_str().into(), size, digest);
        let image = Image::load(
            &source,
            &descriptor,
            &self.platform,
            &kiln_ext4::Limits::default(),
        )?;
        let (ext4, run) = self.local_paths(&record.digest);
        let tmp = ext4.with_extension("ext4.partial");
        let result = (|| -> Result<(u64, String), Failure> {
            let file = File::create(&tmp)?;
            let (out, summary) = convert(
                &source,
                &image,
                BufWriter::new(file),
                kiln_ext4::Options::default(),
                &mut |_| {},
            )?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::write(&run, image.run_config_json() + "\n")?;
            std::fs::rename(&tmp, &ext4)?;
            Ok((summary.bytes, image.manifest_digest().to_string()))
        })();
        if result.is_err() {
            std::fs::remove_file(&tmp).ok();
        }
        result
    }
}

/// Whether an existing record stands for a new push of the same manifest:
/// yes unless it failed, or was skipped for a cache repository and is now
/// pushed where images run (a builder pushes the same manifest as its last
/// cache entry and as its result).
fn keeps(existing: &Record, new: &Record) -> bool {
    existing.state != State::Failed
        && !(new.state != State::Skipped && existing.reason.as_deref() == Some(CACHE_SKIP))
}

/// Notes another repository holding the record's manifest (who may see the
/// record: anyone who may pull one of them).
fn add_repository(r: &mut Record, repository: &str) {
    if r.repository != repository
        && !r.also_in.iter().any(|x| x == repository)
        && r.also_in.len() < MAX_ALSO_IN
    {
        r.also_in.push(repository.to_owned());
    }
}
