//! Post-push conversion: every tagged image (and every index, for this
//! host's platform) pushed to the registry becomes an ext4 disk image
//! through `kiln-ext4`, on a bounded pool of workers.
//!
//! State lives in `<data>/conversions/<alg>-<hex>.json` (written atomically)
//! beside the outputs `<alg>-<hex>.ext4` and `<alg>-<hex>.run.json`; work
//! that was pending or running when the server stopped is queued again at
//! start. Repositories under `cache/` and manifests that are not runnable
//! images (BuildKit cache configs, artifacts) are skipped with a reason,
//! never failed, and never fail the push.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kiln_ext4::{Image, Platform, convert};
use kiln_registry::api::ManifestPushed;
use kiln_registry::manifest::Kind;
use kiln_registry::{Digest, Reference, Registry, Storage as _};
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

/// Most repositories a record remembers besides its first.
const MAX_ALSO_IN: usize = 64;

/// Why a cache repository's manifest is not converted.
const CACHE_SKIP: &str = "cache repository";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The conversion queue and its records.
pub(crate) struct Conversions {
    dir: PathBuf,
    registry: Arc<Registry<Store>>,
    platform: Platform,
    records: Mutex<HashMap<String, Record>>,
    queue: tokio::sync::mpsc::UnboundedSender<String>,
}

impl std::fmt::Debug for Conversions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversions")
            .field("dir", &self.dir)
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
    /// Opens the state under `dir`, starts `workers` workers, and queues
    /// again what was pending or running before.
    pub(crate) fn start(
        dir: PathBuf,
        registry: Arc<Registry<Store>>,
        workers: usize,
    ) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let mut records = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".tmp") || name.contains(".ext4.") {
                std::fs::remove_file(&path).ok();
                continue;
            }
            if !name.ends_with(".state.json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            {
                Some(r) => {
                    records.insert(r.digest.clone(), r);
                }
                None => {
                    tracing::warn!(file = %path.display(), "unreadable conversion record ignored")
                }
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let this = Arc::new(Self {
            dir,
            registry,
            platform: host_platform(),
            records: Mutex::new(records),
            queue: tx,
        });
        let mut resume: Vec<String> = Vec::new();
        for r in this.lock().values_mut() {
            if matches!(r.state, State::Pending | State::Converting) {
                r.state = State::Pending;
                resume.push(r.digest.clone());
            }
        }
        resume.sort();
        for d in resume {
            tracing::info!(digest = %d, "conversion resumed after restart");
            this.queue.send(d).ok();
        }
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
                    if let Err(e) = tokio::task::spawn_blocking(move || worker.run(&digest)).await {
                        tracing::error!(error = %e, "conversion worker panicked");
                    }
                }
            });
        }
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of a manifest digest.
    pub(crate) fn get(&self, digest: &str) -> Option<Record> {
        self.lock().get(digest).cloned()
    }

    /// Conversions by state, and the seconds and count of those that ran.
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

    /// The ext4 image and run-config paths of a digest.
    pub(crate) fn outputs(&self, digest: &str) -> (PathBuf, PathBuf) {
        let stem = file_stem(digest);
        (
            self.dir.join(format!("{stem}.ext4")),
            self.dir.join(format!("{stem}.run.json")),
        )
    }

    fn save(&self, r: &Record) {
        let path = self
            .dir
            .join(format!("{}.state.json", file_stem(&r.digest)));
        let result = serde_json::to_vec_pretty(r)
            .map_err(io::Error::other)
            .and_then(|bytes| super::write_atomically(&path, &bytes, 0o666));
        if let Err(e) = result {
            tracing::error!(error = %e, digest = %r.digest, "cannot persist conversion state");
        }
    }

    fn update(&self, digest: &str, f: impl FnOnce(&mut Record)) -> Option<Record> {
        let mut map = self.lock();
        let r = map.get_mut(digest)?;
        f(r);
        let r = r.clone();
        drop(map);
        self.save(&r);
        Some(r)
    }

    /// The registry's hook: queues a pushed manifest, or records why not.
    pub(crate) fn on_manifest(&self, pushed: &ManifestPushed) {
        let m = &pushed.put.manifest;
        // Children of an index are pushed by digest first; the index (and
        // tagged images) are what users run.
        if matches!(pushed.reference, Reference::Digest(_)) && m.kind == Kind::Image {
            return;
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
        {
            let mut map = self.lock();
            // Kept unless it failed, or was skipped for a cache repository
            // and is now pushed where images run (a builder pushes the same
            // manifest as its last cache entry and as its result).
            let runnable_now = record.state != State::Skipped;
            if let Some(existing) = map.get_mut(&digest) {
                let keep = existing.state != State::Failed
                    && !(runnable_now && existing.reason.as_deref() == Some(CACHE_SKIP));
                if keep {
                    // Who may see it: anyone who may pull one of its
                    // repositories.
                    if existing.repository != repository
                        && !existing.also_in.contains(&repository)
                        && existing.also_in.len() < MAX_ALSO_IN
                    {
                        existing.also_in.push(repository);
                        let r = existing.clone();
                        drop(map);
                        self.save(&r);
                    }
                    return;
                }
                record.also_in = std::iter::once(existing.repository.clone())
                    .chain(existing.also_in.iter().cloned())
                    .filter(|r| *r != repository)
                    .take(MAX_ALSO_IN)
                    .collect();
            }
            map.insert(digest.clone(), record.clone());
        }
        self.save(&record);
        if record.state == State::Skipped {
            tracing::info!(%digest, %repository, "conversion skipped: cache repository");
            return;
        }
        tracing::info!(%digest, %repository, "conversion queued");
        self.queue.send(digest).ok();
    }

    /// Converts one queued manifest (on a blocking thread).
    fn run(&self, digest: &str) {
        let Some(record) = self.update(digest, |r| r.state = State::Converting) else {
            return;
        };
        let started = Instant::now();
        let outcome = self.convert(&record);
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
            .block_on(self.registry.storage().blob_size(&ours))?
            .ok_or_else(|| Failure::Error(format!("no blob {ours}")))?;
        let descriptor =
            oci_spec::image::Descriptor::new(record.media_type.as_str().into(), size, digest);
        let image = Image::load(
            &source,
            &descriptor,
            &self.platform,
            &kiln_ext4::Limits::default(),
        )?;
        let (ext4, run) = self.outputs(&record.digest);
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
