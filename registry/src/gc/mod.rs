//! Garbage collection and scrubbing, safe while pushes continue.
//!
//! [`Registry::collect`] marks every blob a kept manifest of any repository
//! references (config, layers, an index's children, the manifests' own
//! bytes) and removes the rest once they are older than a grace period and
//! younger than no open upload; stale upload sessions go too, and, by a
//! retention policy, manifests no tag reaches. Writers and the collector
//! follow a small protocol (see `guard.rs`) so that a blob a concurrent
//! manifest PUT, upload or mount is about to rely on is never deleted: the
//! collector announces itself and waits the registry's write deadline
//! before it marks; writers that saw the announcement record what they rely
//! on; each batch of deletions is announced by a sweep marker and spares
//! whatever a writer recorded.
//!
//! Assumptions: a linearizable store (a local directory; S3 and
//! S3-compatible stores with read-after-write consistency), every process
//! over the store configured with the same write deadline, and clocks
//! within a small fraction of the grace period of each other and of the
//! store's.
//!
//! [`Registry::scrub`] re-reads every stored blob and checks its digest.

mod guard;
mod scrub;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

pub(crate) use guard::ActiveCache;
use guard::{ACTIVE, STALE_SWEEP, SWEEPS, TOUCHES, digest_lines, digests_in};
pub use scrub::ScrubReport;

use crate::manifest::Manifest;
use crate::registry::{holders_prefix, layer_key, tag_target, tags_prefix, unflat, upload_key};
use crate::storage::{Listed, Storage};
use crate::{Digest, Error, Reference, Registry, UploadId};

/// Deletions announced by one sweep marker.
const BATCH: usize = 512;
/// Another collector's announcement not refreshed for this long is a
/// crashed run's, removed by the next run.
const STALE_RUN: Duration = Duration::from_secs(60 * 60);
/// Allowed difference between the clocks of processes and store (at most
/// a quarter of the grace period).
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// What a collection may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcOptions {
    /// Unreferenced blobs stored or linked to a repository more recently
    /// than this are kept (a push uploads its layers before its manifest).
    /// Must be longer than the registry's write deadline.
    pub grace: Duration,
    /// Manifests no tag reaches (directly, as an index's child or as a
    /// referrer of one reached) are deleted once older than this; `None`
    /// keeps them all.
    pub untagged_after: Option<Duration>,
    /// Upload sessions without a write for this long are removed.
    pub upload_ttl: Duration,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60 * 60),
            untagged_after: None,
            upload_ttl: Duration::from_secs(24 * 60 * 60),
            dry_run: false,
        }
    }
}

/// What a collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    /// Nothing was removed (`--dry-run`).
    pub dry_run: bool,
    /// Repositories with manifests.
    pub repositories: usize,
    /// Manifests kept.
    pub manifests: usize,
    /// Untagged manifests removed (or that would be), as `repo@digest`.
    pub untagged_deleted: Vec<String>,
    /// Blobs in the store before the run.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs a kept manifest references.
    pub blobs_referenced: usize,
    /// Unreferenced blobs kept for the grace period or an open upload.
    pub blobs_young: usize,
    /// Unreferenced blobs kept because a write in progress relies on them.
    pub blobs_in_use: usize,
    /// Blobs removed (or that would be).
    pub blobs_deleted: usize,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Upload sessions removed (or that would be).
    pub uploads_deleted: usize,
    /// Problems met while marking: a manifest whose bytes are missing or
    /// unreadable (`repo@digest: why`). A run with problems removes no
    /// blob (the unreadable manifest may reference any): they are counted
    /// as kept.
    pub problems: Vec<String>,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
}

/// One manifest of a repository, as marking sees it.
struct Revision {
    modified: SystemTime,
    refs: Vec<Digest>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

impl std::fmt::Display for GcReport {
    /// One line of counts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{} repositories, {} manifests kept, {} untagged removed; {} blobs ({} bytes): \
             {} referenced, {} young, {} in use by writes, {} removed ({} bytes); \
             {} upload sessions removed; {} problems; {:.2} s",
            if self.dry_run { "dry run: " } else { "" },
            self.repositories,
            self.manifests,
            self.untagged_deleted.len(),
            self.blobs,
            self.bytes,
            self.blobs_referenced,
            self.blobs_young,
            self.blobs_in_use,
            self.blobs_deleted,
            self.bytes_freed,
            self.uploads_deleted,
            self.problems.len(),
            self.seconds,
        )
    }
}

fn random_id() -> Result<String, Error> {
    Ok(UploadId::random()?.as_str().to_owned())
}

fn older(now: SystemTime, t: SystemTime, than: Duration) -> bool {
    now.duration_since(t).unwrap_or_default() > than
}

impl<S: Storage> Registry<S> {
    /// Runs one garbage collection (see the module documentation). Safe
    /// while this and other processes over the same store serve pushes and
    /// pulls; two collections at once are safe too (one does the work).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a grace period not longer than the write
    /// deadline; storage failures (the run stops; what it removed stays
    /// removed, nothing referenced is touched, and the next run finishes
    /// the job).
    pub async fn collect(&self, opts: &GcOptions) -> Result<GcReport, Error> {
        if opts.grace <= self.limits.write_deadline {
            return Err(Error::Unsupported(format!(
                "the grace period ({:?}) must be longer than the write deadline ({:?})",
                opts.grace, self.limits.write_deadline
            )));
        }
        let started = Instant::now();
        let run = random_id()?;
        let slack = CLOCK_SLACK.min(opts.grace / 4);
        let announcement = Announcement {
            key: format!("{ACTIVE}/{run}"),
            start: unix_millis(SystemTime::now()).to_string(),
        };
        if !opts.dry_run {
            announcement.write(&self.store).await?;
            // Writers that did not see the announcement finish first.
            tokio::time::sleep(self.limits.write_deadline).await;
        }
        // Writers whose touch is older than this finished before marking.
        let touch_window = SystemTime::now() - self.limits.write_deadline - slack;
        let result = self
            .collect_announced(opts, &run, &announcement, touch_window, slack)
            .await;
        if !opts.dry_run {
            self.store.delete_doc(&announcement.key).await?;
        }
        let mut report = result?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn collect_announced(
        &self,
        opts: &GcOptions,
        run: &str,
        announcement: &Announcement,
        touch_window: SystemTime,
        slack: Duration,
    ) -> Result<GcReport, Error> {
        let now = SystemTime::now();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };

        // Upload sessions: stale ones go; open ones hold back the cutoff.
        let mut cutoff = now - opts.grace;
        let records: BTreeMap<String, SystemTime> = self
            .store
            .list_doc_entries("uploads")
            .await?
            .into_iter()
            .map(|l| (l.name, l.modified))
            .collect();
        let data: BTreeMap<String, SystemTime> = self
            .store
            .list_uploads()
            .await?
            .into_iter()
            .map(|l| (l.name, l.modified))
            .collect();
        let mut stale = Vec::new();
        for id in records.keys().chain(data.keys()).collect::<HashSet<_>>() {
            let last = [records.get(id), data.get(id)]
                .into_iter()
                .flatten()
                .max()
                .copied()
                .unwrap_or(now);
            if older(now, last, opts.upload_ttl) {
                stale.push(id.clone());
            } else if let Some(&opened) = records.get(id) {
                cutoff = cutoff.min(opened);
            }
        }

        // Mark.
        let mut marked: HashSet<Digest> = HashSet::new();
        let mut untagged: Vec<(kiln_registry_token::RepositoryName, Digest)> = Vec::new();
        for repo in self.repositories().await? {
            report.repositories += 1;
            let revisions = self.revisions(&repo, &mut report).await?;
            let keep = match opts.untagged_after {
                None => revisions.keys().cloned().collect(),
                Some(after) => {
                    let keep = self.reached(&repo, &revisions, now, after).await?;
                    for d in revisions.keys().filter(|d| !keep.contains(*d)) {
                        untagged.push((repo.clone(), d.clone()));
                    }
                    keep
                }
            };
            for d in &keep {
                report.manifests += 1;
                marked.insert(d.clone());
                if let Some(r) = revisions.get(d) {
                    marked.extend(r.refs.iter().cloned());
                }
            }
        }
        report.untagged_deleted = untagged
            .iter()
            .map(|(repo, d)| format!("{repo}@{d}"))
            .collect();

        // Untagged manifests first: their blobs are then unreferenced.
        let mut touched = Touched {
            since: touch_window,
            read: HashSet::new(),
            digests: HashSet::new(),
        };
        if !opts.dry_run && !untagged.is_empty() {
            for (n, batch) in untagged.chunks(BATCH).enumerate() {
                let marker = format!("{SWEEPS}/{run}-m{n}");
                self.store
                    .put_doc(&marker, &digest_lines(batch.iter().map(|(_, d)| d)))
                    .await?;
                self.read_touches(&mut touched).await?;
                for (repo, d) in batch {
                    if touched.digests.contains(d) {
                        marked.insert(d.clone());
                        continue;
                    }
                    match self
                        .delete_manifest(repo, &Reference::Digest(d.clone()))
                        .await
                    {
                        Ok(()) | Err(Error::ManifestUnknown(_)) => {}
                        Err(e) => {
                            self.store.delete_doc(&marker).await.ok();
                            return Err(e);
                        }
                    }
                }
                self.store.delete_doc(&marker).await?;
            }
        }

        // Sweep blobs.
        let blobs = self.store.list_blobs().await?;
        report.blobs = blobs.len();
        report.bytes = blobs.iter().map(|b| b.size).sum();
        let mut candidates: Vec<(Digest, u64)> = Vec::new();
        for Listed {
            name,
            size,
            modified,
        } in blobs
        {
            let Ok(d) = name.parse::<Digest>() else {
                continue;
            };
            if marked.contains(&d) {
                report.blobs_referenced += 1;
            } else if modified >= cutoff || self.linked_since(&d, cutoff).await? {
                report.blobs_young += 1;
            } else {
                candidates.push((d, size));
            }
        }
        // A manifest that could not be read may reference any of them:
        // sweep nothing this run (the problems are in the report).
        if !report.problems.is_empty() {
            report.blobs_young += candidates.len();
            candidates.clear();
        }
        for (n, batch) in candidates.chunks(BATCH).enumerate() {
            if opts.dry_run {
                report.blobs_deleted += batch.len();
                report.bytes_freed += batch.iter().map(|b| b.1).sum::<u64>();
                continue;
            }
            // Still ours: refreshed per batch so others see a live run.
            announcement.write(&self.store).await?;
            let marker = format!("{SWEEPS}/{run}-b{n}");
            let batch_started = Instant::now();
            self.store
                .put_doc(&marker, &digest_lines(batch.iter().map(|b| &b.0)))
                .await?;
            self.read_touches(&mut touched).await?;
            let swept = self
                .sweep(batch, &touched, batch_started, &mut report)
                .await;
            self.store.delete_doc(&marker).await?;
            swept?;
        }

        if opts.dry_run {
            report.uploads_deleted = stale.len();
        } else {
            for id in &stale {
                self.store.delete_upload(id).await?;
                self.store.delete_doc(&upload_key(id)).await?;
                report.uploads_deleted += 1;
            }
            self.prune(&announcement.key, now, slack).await?;
        }
        Ok(report)
    }

    /// Every manifest of a repository with what it references; a manifest
    /// whose bytes cannot be read is a problem, reported and kept.
    async fn revisions(
        &self,
        repo: &kiln_registry_token::RepositoryName,
        report: &mut GcReport,
    ) -> Result<HashMap<Digest, Revision>, Error> {
        let mut out = HashMap::new();
        for (d, modified) in self.stored_manifests(repo).await? {
            let parsed = match self.manifest(repo, &Reference::Digest(d.clone())).await {
                Ok((info, bytes)) => Manifest::parse(&bytes, Some(&info.media_type)),
                Err(e) => Err(e),
            };
            let mut rev = Revision {
                modified,
                refs: vec![d.clone()],
                children: Vec::new(),
                subject: None,
            };
            match parsed {
                Ok(m) => {
                    rev.refs.extend(m.blobs);
                    rev.refs.extend(m.children.iter().cloned());
                    rev.children = m.children;
                    rev.subject = m.subject;
                }
                Err(e) => report.problems.push(format!("{repo}@{d}: {e}")),
            }
            out.insert(d, rev);
        }
        Ok(out)
    }

    /// The manifests of a repository to keep under an untagged retention
    /// of `after`: those tags reach (through indexes and referrers), those
    /// younger than `after`, and whatever a kept index needs.
    async fn reached(
        &self,
        repo: &kiln_registry_token::RepositoryName,
        revisions: &HashMap<Digest, Revision>,
        now: SystemTime,
        after: Duration,
    ) -> Result<HashSet<Digest>, Error> {
        let mut keep: HashSet<Digest> = revisions
            .iter()
            .filter(|(_, r)| !older(now, r.modified, after))
            .map(|(d, _)| d.clone())
            .collect();
        // Read from the store, not the tag cache: a tag moved on another
        // replica a moment ago counts.
        let tags = tags_prefix(repo);
        for tag in self.store.list_docs(&tags).await? {
            if let Some(bytes) = self.store.get_doc(&format!("{tags}/{tag}")).await?
                && let Some(d) = tag_target(&bytes)
            {
                keep.insert(d);
            }
        }
        // Close over children and referrers of kept manifests.
        loop {
            let before = keep.len();
            for (d, r) in revisions {
                if keep.contains(d) {
                    keep.extend(r.children.iter().cloned());
                } else if r.subject.as_ref().is_some_and(|s| keep.contains(s)) {
                    keep.insert(d.clone());
                }
            }
            if keep.len() == before {
                break;
            }
        }
        keep.retain(|d| revisions.contains_key(d));
        Ok(keep)
    }

    /// Whether any repository linked blob `d` at or after `cutoff`.
    async fn linked_since(&self, d: &Digest, cutoff: SystemTime) -> Result<bool, Error> {
        Ok(self
            .store
            .list_doc_entries(&holders_prefix(d))
            .await?
            .iter()
            .any(|h| h.modified >= cutoff))
    }

    /// Deletes one announced batch of blobs, sparing what writers rely on.
    async fn sweep(
        &self,
        batch: &[(Digest, u64)],
        touched: &Touched,
        batch_started: Instant,
        report: &mut GcReport,
    ) -> Result<(), Error> {
        for (d, size) in batch {
            if touched.digests.contains(d) {
                report.blobs_in_use += 1;
                continue;
            }
            // Writers ignore a marker this old: stop well before.
            if batch_started.elapsed() > STALE_SWEEP / 2 {
                break;
            }
            let holders = holders_prefix(d);
            for flat in self.store.list_docs(&holders).await? {
                if let Some(repo) = unflat(&flat) {
                    self.store.delete_doc(&layer_key(&repo, d)).await?;
                }
                self.store.delete_doc(&format!("{holders}/{flat}")).await?;
            }
            self.store.delete_blob(d).await?;
            report.blobs_deleted += 1;
            report.bytes_freed += size;
        }
        Ok(())
    }

    /// Reads the touch records not read yet that may be a running write's.
    async fn read_touches(&self, touched: &mut Touched) -> Result<(), Error> {
        for t in self.store.list_doc_entries(TOUCHES).await? {
            if t.modified < touched.since || touched.read.contains(&t.name) {
                continue;
            }
            if let Some(doc) = self.store.get_doc(&format!("{TOUCHES}/{}", t.name)).await? {
                touched.digests.extend(digests_in(&doc));
            }
            touched.read.insert(t.name);
        }
        Ok(())
    }

    /// Removes touch records no other running collection can need (written
    /// before every other announced run started) and the announcements and
    /// sweep markers of crashed runs.
    async fn prune(&self, ours: &str, now: SystemTime, slack: Duration) -> Result<(), Error> {
        let mut oldest = now;
        for a in self.store.list_doc_entries(ACTIVE).await? {
            let key = format!("{ACTIVE}/{}", a.name);
            if key == ours {
                continue;
            }
            if older(now, a.modified, STALE_RUN) {
                self.store.delete_doc(&key).await?;
                continue;
            }
            let start = self
                .store
                .get_doc(&key)
                .await?
                .and_then(|b| String::from_utf8(b).ok()?.parse::<u64>().ok())
                .map_or(SystemTime::UNIX_EPOCH, |ms| {
                    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
                });
            oldest = oldest.min(start);
        }
        // What the oldest other run honours.
        let oldest = oldest - self.limits.write_deadline - slack;
        for m in self.store.list_doc_entries(SWEEPS).await? {
            if older(now, m.modified, STALE_SWEEP) {
                self.store
                    .delete_doc(&format!("{SWEEPS}/{}", m.name))
                    .await?;
            }
        }
        for t in self.store.list_doc_entries(TOUCHES).await? {
            if t.modified < oldest {
                self.store
                    .delete_doc(&format!("{TOUCHES}/{}", t.name))
                    .await?;
            }
        }
        Ok(())
    }
}

/// A run's announcement: refreshed while it runs, holding its start.
struct Announcement {
    key: String,
    start: String,
}

impl Announcement {
    async fn write(&self, store: &impl Storage) -> Result<(), Error> {
        Ok(store.put_doc(&self.key, self.start.as_bytes()).await?)
    }
}

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// Touch records read so far in a run, and the digests they name.
struct Touched {
    /// Records older than this are finished writes'.
    since: SystemTime,
    read: HashSet<String>,
    digests: HashSet<Digest>,
}
