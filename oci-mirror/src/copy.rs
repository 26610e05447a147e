//! Copying an image (manifest or index) between registries: blobs first,
//! then manifests, then the index, then the tag — so no tag ever points at
//! incomplete content, and a re-run skips whatever is already there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::client::{Manifest, RegistryClient, backoff, check, sha256_digest};
use crate::location::ImageLocation;

/// Which platforms of an index to copy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Platforms {
    /// Every manifest of the index (the index is copied byte for byte and
    /// keeps its digest).
    #[default]
    All,
    /// Only these `os/arch[/variant]` platforms. The written index lists
    /// only them, so **its digest differs from the source index's**.
    Only(Vec<String>),
}

/// What a copy is doing, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// An image's blobs are known: how many and how many bytes in all.
    Planned {
        /// Blobs of the image.
        blobs: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A blob the destination already had (or got by mount).
    BlobSkipped {
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob went through.
    BlobBytes {
        /// The blob.
        digest: String,
        /// Bytes in this step.
        bytes: u64,
    },
    /// A blob is stored at the destination.
    BlobDone {
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
    },
    /// A manifest (or index) was written.
    ManifestWritten {
        /// Digest or tag it was written under.
        reference: String,
    },
}

/// Receives [`Progress`] events (from several tasks at once).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How to copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Platforms of an index.
    pub platforms: Platforms,
    /// Blobs in flight at once.
    pub jobs: usize,
    /// Give up after this long.
    pub deadline: Option<Duration>,
    /// Progress events, if wanted.
    pub progress: Option<ProgressFn>,
    /// Blobs larger than this are uploaded in chunks.
    pub chunk_threshold: u64,
    /// Chunk size for chunked uploads.
    pub chunk_size: u64,
    /// Also copy referrers (signatures, SBOMs, ... whose `subject` is a
    /// copied manifest), via the OCI referrers API or its tag-schema
    /// fallback.
    pub referrers: bool,
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("platforms", &self.platforms)
            .field("jobs", &self.jobs)
            .field("deadline", &self.deadline)
            .field("progress", &self.progress.is_some())
            .field("chunk_threshold", &self.chunk_threshold)
            .field("chunk_size", &self.chunk_size)
            .finish()
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            platforms: Platforms::All,
            jobs: std::thread::available_parallelism()
                .map_or(4, |n| n.get() * 2)
                .max(4),
            deadline: None,
            progress: None,
            chunk_threshold: 256 << 20,
            chunk_size: 64 << 20,
            referrers: false,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Digest of the top-level manifest or index written.
    pub digest: String,
    /// Whether that digest differs from the source's (filtered index).
    pub digest_changed: bool,
    /// Manifests written (incl. the index).
    pub manifests: usize,
    /// Blobs uploaded.
    pub blobs_copied: usize,
    /// Blobs the destination already had (or mounted).
    pub blobs_skipped: usize,
    /// Bytes uploaded.
    pub bytes_copied: u64,
    /// Referrer manifests copied.
    pub referrers: usize,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformSpec>,
}

#[derive(Debug, Deserialize)]
struct PlatformSpec {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl PlatformSpec {
    fn matches(&self, want: &str) -> bool {
        let mut parts = want.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ManifestDoc {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// An image manifest's blobs: its layers and config.
fn image_blobs<'d>(m: &Manifest, doc: &'d ManifestDoc) -> Result<Vec<&'d Descriptor>, Error> {
    let blobs: Vec<&Descriptor> = doc.layers.iter().chain(&doc.config).collect();
    if blobs.is_empty() {
        return Err(Error::Manifest {
            reference: m.digest.clone(),
            reason: "neither an image manifest nor an index".into(),
        });
    }
    Ok(blobs)
}

fn is_index(m: &Manifest, doc: &ManifestDoc) -> bool {
    m.media_type.contains("index")
        || m.media_type.contains("manifest.list")
        || doc.manifests.is_some()
}

pub(crate) fn parse(m: &Manifest) -> Result<ManifestDoc, Error> {
    serde_json::from_slice(&m.bytes).map_err(|e| Error::Manifest {
        reference: m.digest.clone(),
        reason: e.to_string(),
    })
}

pub(crate) struct Copier<'a> {
    pub(crate) src: &'a RegistryClient,
    pub(crate) dst: &'a RegistryClient,
    pub(crate) src_repo: &'a str,
    pub(crate) dst_repo: &'a str,
    jobs: usize,
    progress: Option<ProgressFn>,
    chunk_threshold: u64,
    chunk_size: u64,
    copied: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
    manifests: AtomicU64,
}

/// Copies `src` to `dst` (tag of `dst`, else of `src`, else by digest).
///
/// # Errors
///
/// Transport/status/auth errors, digest or size mismatches (the copy
/// aborts; nothing already uploaded is tagged), [`Error::Deadline`].
pub async fn copy(
    src: &RegistryClient,
    src_loc: &ImageLocation,
    dst: &RegistryClient,
    dst_loc: &ImageLocation,
    options: &CopyOptions,
) -> Result<CopyReport, Error> {
    let work = copy_inner(src, src_loc, dst, dst_loc, options);
    match options.deadline {
        Some(d) => tokio::time::timeout(d, work)
            .await
            .map_err(|_| Error::Deadline(d))?,
        None => work.await,
    }
}

async fn copy_inner(
    src: &RegistryClient,
    src_loc: &ImageLocation,
    dst: &RegistryClient,
    dst_loc: &ImageLocation,
    options: &CopyOptions,
) -> Result<CopyReport, Error> {
    let copier = Copier {
        src,
        dst,
        src_repo: src_loc.repository(),
        dst_repo: dst_loc.repository(),
        jobs: options.jobs.max(1),
        progress: options.progress.clone(),
        chunk_threshold: options.chunk_threshold,
        chunk_size: options.chunk_size,
        copied: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        manifests: AtomicU64::new(0),
    };
    // Fail early on an unreachable or refusing destination. Pushes
    // authenticate on each upload's first (bodiless) request.
    dst.ping(dst_loc.repository()).await?;
    let target = dst_loc
        .tag()
        .or(src_loc.tag().filter(|_| src_loc.digest().is_none()))
        .map(str::to_owned);
    // Warm path: the destination tag already names the source's content
    // (tags are written last, so that content is complete).
    if matches!(options.platforms, Platforms::All)
        && !options.referrers
        && let Some(tag) = &target
    {
        let want = match src_loc.digest() {
            Some(d) => Some(d.to_owned()),
            None => {
                src.manifest_digest(src_loc.repository(), src_loc.reference())
                    .await?
            }
        };
        if want.is_some() && dst.manifest_digest(dst_loc.repository(), tag).await? == want {
            return Ok(CopyReport {
                digest: want.unwrap_or_default(),
                ..CopyReport::default()
            });
        }
    }
    let top = src
        .get_manifest(src_loc.repository(), src_loc.reference())
        .await?;
    let doc = parse(&top)?;
    let (written, changed) = if is_index(&top, &doc) {
        copier
            .copy_index(&top, &doc, &options.platforms, target.as_deref())
            .await?
    } else {
        copier.copy_image(&top, &doc).await?;
        copier.put(&top, target.as_deref()).await?;
        (top.digest.clone(), false)
    };
    let mut referrers = 0;
    if options.referrers {
        let mut subjects = Vec::new();
        if !changed {
            subjects.push(top.digest.clone());
        }
        // Children of a filtered index are not all copied: their
        // referrers stay behind with them.
        if is_index(&top, &doc) && !changed {
            subjects.extend(doc.manifests.iter().flatten().map(|d| d.digest.clone()));
        }
        for subject in subjects {
            referrers += copier.copy_referrers(&subject).await?;
        }
    }
    Ok(CopyReport {
        referrers,
        digest: written,
        digest_changed: changed,
        manifests: copier.manifests.load(Ordering::Relaxed) as usize,
        blobs_copied: copier.copied.load(Ordering::Relaxed) as usize,
        blobs_skipped: copier.skipped.load(Ordering::Relaxed) as usize,
        bytes_copied: copier.bytes.load(Ordering::Relaxed),
    })
}

impl Copier<'_> {
    fn report(&self, event: Progress) {
        if let Some(p) = &self.progress {
            p(&event);
        }
    }

    /// Writes a manifest under the tag if given (which stores it under its
    /// digest too), else under its digest. Manifests are small: writing
    /// one again costs less than asking whether it is there.
    pub(crate) async fn put(&self, m: &Manifest, tag: Option<&str>) -> Result<(), Error> {
        let reference = tag.unwrap_or(&m.digest);
        self.dst.put_manifest(self.dst_repo, reference, m).await?;
        self.manifests.fetch_add(1, Ordering::Relaxed);
        self.report(Progress::ManifestWritten {
            reference: reference.to_owned(),
        });
        Ok(())
    }

    async fn copy_index(
        &self,
        index: &Manifest,
        doc: &ManifestDoc,
        platforms: &Platforms,
        tag: Option<&str>,
    ) -> Result<(String, bool), Error> {
        let children = doc.manifests.as_deref().unwrap_or_default();
        let chosen: Vec<&Descriptor> = match platforms {
            Platforms::All => children.iter().collect(),
            Platforms::Only(want) => children
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| want.iter().any(|w| p.matches(w)))
                })
                .collect(),
        };
        if chosen.is_empty() {
            return Err(Error::NoPlatformMatch);
        }
        let manifests: Vec<(Manifest, ManifestDoc)> = stream::iter(chosen.iter().copied())
            .map(|child| self.fetch_child(child))
            .buffered(8)
            .try_collect()
            .await?;
        // The blobs of every platform share one pool (largest first, each
        // once), then each platform's manifest, then the index.
        let mut blobs = Vec::new();
        for (m, child_doc) in &manifests {
            blobs.extend(image_blobs(m, child_doc)?);
        }
        self.copy_blobs(blobs).await?;
        stream::iter(&manifests)
            .map(|(m, _)| self.put(m, None))
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await?;
        let written = if chosen.len() == children.len() {
            index.clone()
        } else {
            filtered_index(index, &chosen)?
        };
        self.put(&written, tag).await?;
        Ok((written.digest.clone(), written.digest != index.digest))
    }

    async fn fetch_child(&self, child: &Descriptor) -> Result<(Manifest, ManifestDoc), Error> {
        let m = self.src.get_manifest(self.src_repo, &child.digest).await?;
        if m.bytes.len() as u64 != child.size {
            return Err(Error::SizeMismatch {
                digest: child.digest.clone(),
                expected: child.size,
                actual: m.bytes.len() as u64,
            });
        }
        let doc = parse(&m)?;
        Ok((m, doc))
    }

    pub(crate) async fn copy_image(&self, m: &Manifest, doc: &ManifestDoc) -> Result<(), Error> {
        self.copy_blobs(image_blobs(m, doc)?).await
    }

    /// Copies blobs, several at once, the largest first (the longest
    /// transfers bound the copy's time), each digest once.
    async fn copy_blobs(&self, mut blobs: Vec<&Descriptor>) -> Result<(), Error> {
        blobs.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        self.report(Progress::Planned {
            blobs: blobs.len(),
            bytes: blobs.iter().map(|d| d.size).sum(),
        });
        stream::iter(blobs)
            .map(|d| self.copy_blob(d))
            .buffer_unordered(self.jobs)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn copy_blob(&self, d: &Descriptor) -> Result<(), Error> {
        let present = self.dst.has_blob(self.dst_repo, &d.digest).await?
            || (self.src.host() == self.dst.host() && self.try_mount(&d.digest).await?);
        if present {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.report(Progress::BlobSkipped {
                digest: d.digest.clone(),
                size: d.size,
            });
            return Ok(());
        }
        // A transfer cut short (a dropped connection, a 5xx or 401 on the
        // upload itself) starts the blob over with a fresh upload session;
        // a digest or size mismatch never is retried.
        let attempts = self.src.attempts().min(self.dst.attempts()).max(1);
        let mut attempt = 0;
        let seen = loop {
            attempt += 1;
            match self.upload_blob(d).await {
                Ok(seen) => break seen,
                Err(e) if attempt < attempts && retryable(&e) => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.copied.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(seen, Ordering::Relaxed);
        self.report(Progress::BlobDone {
            digest: d.digest.clone(),
            size: seen,
        });
        Ok(())
    }

    /// One attempt at moving a blob: a new upload session, the source
    /// streamed into it (in chunks when large), verified on the way.
    /// Returns the bytes moved.
    async fn upload_blob(&self, d: &Descriptor) -> Result<u64, Error> {
        let up_path = format!("/v2/{}/blobs/uploads/", self.dst_repo);
        let start = self
            .dst
            .send(
                "start upload",
                Method::POST,
                &up_path,
                self.dst_repo,
                true,
                &[],
            )
            .await?;
        let start = check(start, "start upload", &self.dst.url(&up_path)).await?;
        let mut location = upload_location(&start, &d.digest)?;
        let hasher = Arc::new(std::sync::Mutex::new((Sha256::new(), 0u64)));
        let src_path = format!("/v2/{}/blobs/{}", self.src_repo, d.digest);
        let chunked = d.size > self.chunk_threshold && self.chunk_size > 0;
        let (put, url) = if chunked {
            // Chunked: each chunk is a ranged GET streamed into a PATCH, so
            // memory stays bounded and no single request carries the blob.
            let mut offset = 0;
            while offset < d.size {
                let end = (offset + self.chunk_size).min(d.size);
                let range = format!("bytes={offset}-{}", end - 1);
                let resp = self.get_source(&src_path, Some(range)).await?;
                if resp.status() != StatusCode::PARTIAL_CONTENT {
                    return Err(Error::Manifest {
                        reference: d.digest.clone(),
                        reason: "source ignored the Range request needed for a chunked copy".into(),
                    });
                }
                let body = self.verifying(resp, &hasher, end, &d.digest);
                let url = self.dst.url(&location);
                let req = self
                    .dst
                    .http()
                    .patch(&url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, end - offset)
                    .header("Content-Range", format!("{offset}-{}", end - 1))
                    .body(reqwest::Body::wrap_stream(body));
                let resp = self
                    .dst
                    .authorized(req, self.dst_repo, true)
                    .send()
                    .await
                    .map_err(|source| Error::Request {
                        operation: "upload chunk",
                        url: url.clone(),
                        source,
                    })?;
                let resp = self
                    .dst
                    .check_push(resp, self.dst_repo, "upload chunk", &url)
                    .await?;
                location = upload_location(&resp, &d.digest)?;
                offset = end;
            }
            let url = with_digest(&self.dst.url(&location), &d.digest);
            let req = self
                .dst
                .http()
                .put(&url)
                .header(CONTENT_LENGTH, 0)
                .body(Vec::new());
            (
                self.dst.authorized(req, self.dst_repo, true).send().await,
                url,
            )
        } else {
            let resp = self.get_source(&src_path, None).await?;
            let body = self.verifying(resp, &hasher, d.size, &d.digest);
            let url = with_digest(&self.dst.url(&location), &d.digest);
            let req = self
                .dst
                .http()
                .put(&url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, d.size)
                .body(reqwest::Body::wrap_stream(body));
            (
                self.dst.authorized(req, self.dst_repo, true).send().await,
                url,
            )
        };
        let (hash, seen) = {
            let g = hasher.lock().map_err(|_| Error::Manifest {
                reference: d.digest.clone(),
                reason: "hasher lock".into(),
            })?;
            (format!("sha256:{:x}", g.0.clone().finalize()), g.1)
        };
        // More bytes than the descriptor says is the source's fault: never
        // retried. Fewer with a failed request is a cut transfer.
        if seen > d.size || (seen < d.size && put.is_ok()) {
            return Err(Error::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: seen,
            });
        }
        let put = put.map_err(|source| Error::Request {
            operation: "upload blob",
            url: url.clone(),
            source,
        })?;
        if hash != d.digest {
            return Err(Error::DigestMismatch {
                what: "blob",
                expected: d.digest.clone(),
                actual: hash,
                size: seen,
            });
        }
        if put.status() != StatusCode::CREATED {
            self.dst
                .check_push(put, self.dst_repo, "upload blob", &url)
                .await?;
        }
        Ok(seen)
    }

    /// GET a source blob (or a byte range of it).
    async fn get_source(
        &self,
        path: &str,
        range: Option<String>,
    ) -> Result<reqwest::Response, Error> {
        let headers: Vec<(&'static str, String)> =
            range.map(|r| ("Range", r)).into_iter().collect();
        let resp = self
            .src
            .send(
                "get blob",
                Method::GET,
                path,
                self.src_repo,
                false,
                &headers,
            )
            .await?;
        check(resp, "get blob", &self.src.url(path)).await
    }

    /// The source body, hashed and counted on the way; more than `limit`
    /// bytes in all aborts the stream.
    fn verifying(
        &self,
        resp: reqwest::Response,
        hasher: &Arc<std::sync::Mutex<(Sha256, u64)>>,
        limit: u64,
        digest: &str,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static
    {
        let h = hasher.clone();
        let progress = self.progress.clone();
        let digest = digest.to_owned();
        resp.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let mut g = h.lock().map_err(|_| std::io::Error::other("hasher lock"))?;
            g.1 += chunk.len() as u64;
            if g.1 > limit {
                return Err(std::io::Error::other("blob longer than its descriptor"));
            }
            g.0.update(&chunk);
            if let Some(p) = &progress {
                p(&Progress::BlobBytes {
                    digest: digest.clone(),
                    bytes: chunk.len() as u64,
                });
            }
            Ok(chunk)
        })
    }

    /// Cross-repository mount within one registry.
    async fn try_mount(&self, digest: &str) -> Result<bool, Error> {
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={}",
            self.dst_repo, self.src_repo
        );
        let resp = self
            .dst
            .send("mount blob", Method::POST, &path, self.dst_repo, true, &[])
            .await?;
        Ok(resp.status() == StatusCode::CREATED)
    }
}

/// Whether starting a blob over can help: the transfer broke, or the
/// registry failed (5xx) or refused a stale token (401) mid-upload.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Request { source, .. } => !source.is_builder() && !source.is_redirect(),
        Error::Status { status, .. } => *status == 401 || *status >= 500,
        _ => false,
    }
}

/// The upload URL a registry answered with.
fn upload_location(resp: &reqwest::Response, digest: &str) -> Result<String, Error> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Manifest {
            reference: digest.to_owned(),
            reason: "upload without Location".into(),
        })
}

fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

/// The index with only `chosen` manifests (other fields kept).
fn filtered_index(index: &Manifest, chosen: &[&Descriptor]) -> Result<Manifest, Error> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&index.bytes).map_err(|e| Error::Manifest {
            reference: index.digest.clone(),
            reason: e.to_string(),
        })?;
    let keep: Vec<&str> = chosen.iter().map(|d| d.digest.as_str()).collect();
    if let Some(list) = value["manifests"].as_array_mut() {
        list.retain(|m| m["digest"].as_str().is_some_and(|d| keep.contains(&d)));
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::Manifest {
        reference: index.digest.clone(),
        reason: e.to_string(),
    })?;
    Ok(Manifest {
        digest: sha256_digest(&bytes),
        media_type: index.media_type.clone(),
        bytes,
    })
}
