//! Copying an image (manifest or index) between registries: blobs first,
//! then manifests, then the index, then the tag — so no tag ever points at
//! incomplete content, and a re-run skips whatever is already there.

mod blob;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;

use crate::Error;
use crate::client::{Manifest, RegistryClient, sha256_digest};
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
    /// A blob transfer broke and goes again from byte `from` (0: from the
    /// start, in a new upload session): bytes reported since do not count.
    BlobRestarted {
        /// The blob.
        digest: String,
        /// Where it goes on from.
        from: u64,
        /// Bytes reported for it that are now undone.
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
    #[serde(deserialize_with = "digest")]
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformSpec>,
}

/// A descriptor's digest, checked before it goes into any URL (a hostile
/// manifest could otherwise name `../other/...` or add query parameters).
pub(crate) fn digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let digest = String::deserialize(d)?;
    if !crate::location::is_digest(&digest) {
        return Err(serde::de::Error::custom(format!(
            "digest {digest:?} is not sha256: and 64 lower-case hex digits"
        )));
    }
    Ok(digest)
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
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
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

/// Whether a manifest is an index (or Docker manifest list): its media
/// type says, and [`parse`] made sure the document agrees.
fn is_index(m: &Manifest) -> bool {
    crate::client::is_index_type(&m.media_type)
}

/// The manifest's document, which must be what its media type says: an
/// index with `manifests` or an image manifest without, never both (a
/// registry stores it under the media type, a copy follows the fields).
pub(crate) fn parse(m: &Manifest) -> Result<ManifestDoc, Error> {
    let bad = |reason: String| Error::Manifest {
        reference: m.digest.clone(),
        reason,
    };
    let doc: ManifestDoc = serde_json::from_slice(&m.bytes).map_err(|e| bad(e.to_string()))?;
    if let Some(declared) = &doc.media_type
        && *declared != m.media_type
    {
        return Err(bad(format!(
            "mediaType {declared} but served as {}",
            m.media_type
        )));
    }
    let image_fields = doc.config.is_some() || !doc.layers.is_empty();
    match (is_index(m), doc.manifests.is_some()) {
        (true, false) => Err(bad("an index without manifests".into())),
        (false, true) => Err(bad(format!("{} with manifests", m.media_type))),
        (true, true) if image_fields => Err(bad("an index with config or layers".into())),
        _ => Ok(doc),
    }
}

/// An index's children are fetched (and held) at most this many...
const MAX_CHILDREN: usize = 1024;
/// ...and this many bytes.
const MAX_CHILDREN_BYTES: u64 = 64 << 20;

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
    let written = copier.copy_content(&top, &doc, &options.platforms).await?;
    let changed = written.digest != top.digest;
    let mut referrers = 0;
    if options.referrers {
        // The subject first (by digest), then what refers to it; the tag
        // comes last, as ever.
        copier.put(&written, None).await?;
        let mut subjects = Vec::new();
        // Children of a filtered index are not all copied: their
        // referrers stay behind with them.
        if !changed {
            subjects.push(top.digest.clone());
            subjects.extend(doc.manifests.iter().flatten().map(|d| d.digest.clone()));
        }
        referrers = copier.copy_referrers(subjects).await?;
    }
    if target.is_some() || !options.referrers {
        copier.put(&written, target.as_deref()).await?;
    }
    Ok(CopyReport {
        referrers,
        digest: written.digest,
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

    /// Copies everything `m` references (not `m` itself); returns the
    /// manifest to write: `m`, or the filtered index.
    pub(crate) async fn copy_content(
        &self,
        m: &Manifest,
        doc: &ManifestDoc,
        platforms: &Platforms,
    ) -> Result<Manifest, Error> {
        if is_index(m) {
            self.copy_index(m, doc, platforms).await
        } else {
            self.copy_image(m, doc).await?;
            Ok(m.clone())
        }
    }

    /// An index's chosen children and their blobs; returns the index to
    /// write (filtered when not every child was chosen).
    async fn copy_index(
        &self,
        index: &Manifest,
        doc: &ManifestDoc,
        platforms: &Platforms,
    ) -> Result<Manifest, Error> {
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
        let all = chosen.len() == children.len();
        let chosen = fetchable(index, chosen)?;
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
        if all {
            Ok(index.clone())
        } else {
            filtered_index(index, &chosen)
        }
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
        // Each digest once; one digest with two sizes is a broken manifest.
        let mut sizes = std::collections::HashMap::new();
        for d in &blobs {
            if let Some(other) = sizes.insert(d.digest.as_str(), d.size)
                && other != d.size
            {
                return Err(Error::SizeMismatch {
                    digest: d.digest.clone(),
                    expected: other,
                    actual: d.size,
                });
            }
        }
        blobs.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        self.report(Progress::Planned {
            blobs: blobs.len(),
            bytes: blobs.iter().fold(0, |sum, d| sum.saturating_add(d.size)),
        });
        stream::iter(blobs)
            .map(|d| self.copy_blob(d))
            .buffer_unordered(self.jobs)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Whether a copy would take `bytes`, served as `media_type`, as a
/// manifest to copy (for the fuzz target).
pub(crate) fn accepts(bytes: &[u8], media_type: &str) -> bool {
    let m = Manifest {
        bytes: bytes.to_vec(),
        media_type: media_type.to_owned(),
        digest: sha256_digest(bytes),
    };
    let Ok(doc) = parse(&m) else {
        return false;
    };
    match &doc.manifests {
        Some(children) => fetchable(&m, children.iter().collect()).is_ok(),
        None => image_blobs(&m, &doc).is_ok(),
    }
}

/// An index's chosen children, each once, and not more of them than
/// memory allows (they are fetched and held until the index is written).
fn fetchable<'d>(
    index: &Manifest,
    mut chosen: Vec<&'d Descriptor>,
) -> Result<Vec<&'d Descriptor>, Error> {
    let mut seen = std::collections::HashSet::new();
    chosen.retain(|d| seen.insert(d.digest.as_str()));
    let bytes = chosen
        .iter()
        .fold(0u64, |sum, d| sum.saturating_add(d.size));
    if chosen.len() > MAX_CHILDREN || bytes > MAX_CHILDREN_BYTES {
        return Err(Error::Manifest {
            reference: index.digest.clone(),
            reason: format!(
                "{} manifests of {bytes} bytes: more than {MAX_CHILDREN} or {MAX_CHILDREN_BYTES} bytes",
                chosen.len()
            ),
        });
    }
    Ok(chosen)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Result<ManifestDoc, Error> {
        parse(&Manifest {
            bytes: json.as_bytes().to_vec(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: sha256_digest(json.as_bytes()),
        })
    }

    fn typed(json: &str, media_type: &str) -> Result<ManifestDoc, Error> {
        parse(&Manifest {
            bytes: json.as_bytes().to_vec(),
            media_type: media_type.into(),
            digest: sha256_digest(json.as_bytes()),
        })
    }

    #[test]
    fn a_manifest_is_what_its_media_type_says() {
        let d = format!(r#"{{"digest":"sha256:{}","size":1}}"#, "a".repeat(64));
        let index = crate::client::OCI_INDEX;
        let image = "application/vnd.oci.image.manifest.v1+json";
        let list = "application/vnd.docker.distribution.manifest.list.v2+json";
        assert!(typed(&format!(r#"{{"manifests":[{d}]}}"#), index).is_ok());
        assert!(typed(&format!(r#"{{"manifests":[{d}]}}"#), list).is_ok());
        assert!(typed(&format!(r#"{{"config":{d},"layers":[{d}]}}"#), image).is_ok());
        for (json, media_type, why) in [
            (
                format!(r#"{{"config":{d},"manifests":[{d}]}}"#),
                index,
                "with config",
            ),
            (
                format!(r#"{{"layers":[{d}],"manifests":[{d}]}}"#),
                image,
                "with manifests",
            ),
            (format!(r#"{{"manifests":[{d}]}}"#), image, "with manifests"),
            (format!(r#"{{"layers":[{d}]}}"#), index, "without manifests"),
            (
                format!(r#"{{"mediaType":"{index}","layers":[{d}]}}"#),
                image,
                "but served as",
            ),
        ] {
            let err = typed(&json, media_type)
                .err()
                .unwrap_or_else(|| panic!("{json}"));
            assert!(err.to_string().contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn index_children_are_fetched_once_and_within_bounds() {
        let index = Manifest {
            bytes: Vec::new(),
            media_type: crate::client::OCI_INDEX.into(),
            digest: sha256_digest(b""),
        };
        let child = |n: u64, size: u64| Descriptor {
            digest: format!("sha256:{n:064x}"),
            size,
            platform: None,
        };
        let (a, b) = (child(1, 10), child(2, 20));
        let once: Vec<&str> = fetchable(&index, vec![&a, &b, &a, &b, &a])
            .unwrap()
            .iter()
            .map(|d| d.digest.as_str())
            .collect();
        assert_eq!(once, [a.digest.as_str(), b.digest.as_str()]);
        let huge = [child(3, u64::MAX), child(4, u64::MAX)];
        assert!(fetchable(&index, huge.iter().collect()).is_err());
        let many: Vec<Descriptor> = (0..=MAX_CHILDREN as u64).map(|i| child(i, 1)).collect();
        assert!(fetchable(&index, many.iter().collect()).is_err());
        assert!(fetchable(&index, many[1..].iter().collect()).is_ok());
    }

    #[test]
    fn descriptor_digests_are_checked_before_they_reach_a_url() {
        let good = format!("sha256:{}", "a".repeat(64));
        let ok = doc(&format!(r#"{{"layers":[{{"digest":"{good}","size":1}}]}}"#)).unwrap();
        assert_eq!(ok.layers[0].digest, good);
        for bad in [
            format!(
                "sha256:{}/../../other/blobs/sha256:{}",
                "a".repeat(64),
                "b".repeat(64)
            ),
            format!("sha256:{}&from=other", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(128)),
            "sha256:abc".into(),
            "latest".into(),
        ] {
            let err = doc(&format!(
                r#"{{"manifests":[{{"digest":"{bad}","size":1}}]}}"#
            ))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.to_string().contains("not sha256:"), "{err}");
        }
    }
}
