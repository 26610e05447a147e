//! The writers' side of garbage collection: what a blob upload, a mount or
//! a manifest PUT does so that a collector running at the same time never
//! deletes a blob it is about to reference.
//!
//! A collector announces itself (`gc/active/<run>`) and then waits the
//! registry's write deadline before it marks. A writer looks for an
//! announcement before it starts (a look at most [`ACTIVE_CACHE`] old):
//!
//! - **none** (the usual case): the writer must finish within the write
//!   deadline of that look; any collector announced later marks after the
//!   writer's last write, so it sees the new manifest or link. No extra
//!   store operation.
//! - **one or more**: the writer records the digests it relies on
//!   (`gc/touches/<id>`, written first), then waits while a sweep marker
//!   (`gc/sweeps/<run>-<n>`) lists one of them. A collector writes its
//!   sweep marker first and reads the touches after: of two
//!   write-then-read sequences on a linearizable store, at least one sees
//!   the other, so either the collector spares the digests or the writer
//!   waits until the sweep is over (and then finds a deleted blob missing,
//!   a clean `MANIFEST_BLOB_UNKNOWN`, never a manifest naming nothing).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::storage::Storage;
use crate::{Digest, Error, Registry, UploadId};

/// How long a look for collectors serves later writes (at most a quarter
/// of the write deadline).
pub(crate) const ACTIVE_CACHE: Duration = Duration::from_secs(1);
/// A sweep marker older than this is a crashed collector's: ignored.
pub(crate) const STALE_SWEEP: Duration = Duration::from_secs(15 * 60);

pub(crate) const ACTIVE: &str = "gc/active";
pub(crate) const SWEEPS: &str = "gc/sweeps";
pub(crate) const TOUCHES: &str = "gc/touches";

/// The last look for collectors: when it was made and what it found.
#[derive(Debug, Default)]
pub(crate) struct ActiveCache(Mutex<Option<(Instant, bool)>>);

/// A write in progress: it must end (its last store write done) before
/// `deadline`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    deadline: Instant,
}

impl Guard {
    /// Fails a write that ran past its deadline (before its last write).
    pub(crate) fn check(self) -> Result<(), Error> {
        if Instant::now() < self.deadline {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "the write took longer than the registry's write deadline; retry".into(),
            ))
        }
    }
}

/// The digests a document of digests (one per line) names.
pub(crate) fn digests_in(doc: &[u8]) -> impl Iterator<Item = Digest> + '_ {
    doc.split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok()?.parse().ok())
}

pub(crate) fn digest_lines<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Vec<u8> {
    let mut doc = Vec::new();
    for d in digests {
        doc.extend_from_slice(d.as_str().as_bytes());
        doc.push(b'\n');
    }
    doc
}

impl<S: Storage> Registry<S> {
    /// Whether a collector is announced, looked up at most
    /// [`ACTIVE_CACHE`] ago; and when that look was made.
    async fn collector_active(&self) -> Result<(Instant, bool), Error> {
        let cached = *self.gc_active.0.lock().unwrap_or_else(|e| e.into_inner());
        // A write has the deadline from the look it uses: keep most of it.
        let fresh = ACTIVE_CACHE.min(self.limits.write_deadline / 4);
        if let Some((at, active)) = cached
            && at.elapsed() < fresh
        {
            return Ok((at, active));
        }
        let at = Instant::now();
        let active = !self.store.list_docs(ACTIVE).await?.is_empty();
        *self.gc_active.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, active));
        Ok((at, active))
    }

    /// Called before a write that makes the registry rely on `digests`
    /// (link a blob, store a manifest): see the module documentation.
    pub(crate) async fn guard(&self, digests: &[Digest]) -> Result<Guard, Error> {
        let deadline = self.limits.write_deadline;
        let (at, active) = self.collector_active().await?;
        if !active {
            return Ok(Guard {
                deadline: at + deadline,
            });
        }
        let started = Instant::now();
        let id = UploadId::random()?;
        let name = format!("{TOUCHES}/{}-{id}", super::unix_millis(SystemTime::now()));
        self.store.put_doc(&name, &digest_lines(digests)).await?;
        let wanted: HashSet<&Digest> = digests.iter().collect();
        let mut pause = Duration::from_millis(10);
        loop {
            if !self.swept(&wanted).await? {
                return Ok(Guard {
                    deadline: started + deadline,
                });
            }
            if started.elapsed() + pause >= deadline / 2 {
                return Err(Error::Unavailable(
                    "garbage collection is sweeping a blob this write needs; retry".into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Whether a live sweep marker names one of `wanted`.
    async fn swept(&self, wanted: &HashSet<&Digest>) -> Result<bool, Error> {
        let now = SystemTime::now();
        for m in self.store.list_doc_entries(SWEEPS).await? {
            if now.duration_since(m.modified).unwrap_or_default() > STALE_SWEEP {
                continue;
            }
            let Some(doc) = self.store.get_doc(&format!("{SWEEPS}/{}", m.name)).await? else {
                continue;
            };
            if digests_in(&doc).any(|d| wanted.contains(&d)) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
