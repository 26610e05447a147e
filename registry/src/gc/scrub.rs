//! Scrubbing: every stored blob re-read and re-hashed, every manifest's
//! references checked.

use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use crate::manifest::Manifest;
use crate::storage::Storage;
use crate::{Digest, Error, Reference, Registry};

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ScrubReport {
    /// Blobs read.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs whose bytes do not hash to their name, or that could not be
    /// read whole (`digest: why`).
    pub corrupt: Vec<String>,
    /// Manifests checked.
    pub manifests: usize,
    /// Manifests that are unreadable or reference something their
    /// repository lacks (`repo@digest: why`).
    pub broken: Vec<String>,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
}

impl ScrubReport {
    /// Whether everything checked out.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.broken.is_empty()
    }
}

impl<S: Storage> Registry<S> {
    /// Re-reads every stored blob and checks its digest, then checks that
    /// every manifest's blobs and children are in its repository.
    /// `progress` is called with the bytes of each blob read. Read-only.
    ///
    /// # Errors
    ///
    /// Storage failures of a listing (a blob that cannot be read is
    /// reported as corrupt instead).
    pub async fn scrub(&self, mut progress: impl FnMut(u64)) -> Result<ScrubReport, Error> {
        let started = Instant::now();
        let mut report = ScrubReport::default();
        for blob in self.store.list_blobs().await? {
            let Ok(d) = blob.name.parse::<Digest>() else {
                report.corrupt.push(format!("{}: not a digest", blob.name));
                continue;
            };
            report.blobs += 1;
            report.bytes += blob.size;
            if let Err(why) = self.verify(&d, blob.size).await {
                report.corrupt.push(format!("{d}: {why}"));
            }
            progress(blob.size);
        }
        for repo in self.repositories().await? {
            for (d, _) in self.stored_manifests(&repo).await? {
                report.manifests += 1;
                if let Err(why) = self.check_manifest(&repo, &d).await {
                    report.broken.push(format!("{repo}@{d}: {why}"));
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn verify(&self, d: &Digest, size: u64) -> Result<(), String> {
        let mut data = self
            .store
            .read_blob(d, 0, size)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("gone while scrubbing")?;
        let mut h = d.hasher();
        let mut read = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            read += chunk.len() as u64;
            h.update(&chunk);
        }
        if read != size {
            return Err(format!("read {read} bytes of {size}"));
        }
        let actual = h.finish();
        if &actual != d {
            return Err(format!("content hashes to {actual}"));
        }
        Ok(())
    }

    async fn check_manifest(
        &self,
        repo: &kiln_registry_token::RepositoryName,
        d: &Digest,
    ) -> Result<(), String> {
        let (info, bytes) = self
            .manifest(repo, &Reference::Digest(d.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let m = Manifest::parse(&bytes, Some(&info.media_type)).map_err(|e| e.to_string())?;
        for b in &m.blobs {
            if self.blob_size(repo, b).await.is_err() {
                return Err(format!("blob {b} missing"));
            }
        }
        for c in &m.children {
            let child = self
                .manifest_info(repo, &Reference::Digest(c.clone()))
                .await;
            if child.is_err() && self.blob_size(repo, c).await.is_err() {
                return Err(format!("child {c} missing"));
            }
        }
        Ok(())
    }
}
