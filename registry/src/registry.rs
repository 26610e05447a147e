//! The registry's operations over a [`Storage`]: what every route does,
//! without HTTP.
//!
//! Document keys (all built from validated names, tags and digests):
//! - `repositories/<name>/_manifests/revisions/<alg>/<hex>`: the manifest is
//!   in the repository (`{"mediaType","size"}`);
//! - `repositories/<name>/_manifests/tags/<tag>`: the digest a tag points to;
//! - `repositories/<name>/_layers/<alg>/<hex>`: the blob is in the repository;
//! - `repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>`: a referrer
//!   of the subject `<alg>:<hex>` (its descriptor);
//! - `catalog/<name with / as ,>`: the repository has had a manifest;
//! - `holders/<alg>/<hex>/<name with / as ,>`: repositories holding a blob
//!   (for automatic cross-repository mounts);
//! - `uploads/<id>`: an upload session's repository.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use kiln_registry_token::RepositoryName;
use serde::{Deserialize, Serialize};

use crate::cache::{BytesCache, TtlCache};
use crate::gc::ActiveCache;
use crate::manifest::{Descriptor, Manifest, OCI_INDEX};
use crate::storage::{ByteStream, Storage};
use crate::{Algorithm, Digest, Error, Hasher, Reference, Tag, UploadId};

/// Limits on what clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest manifest accepted (default 4 MiB).
    pub max_manifest_bytes: usize,
    /// Largest blob accepted (default 64 GiB).
    pub max_blob_bytes: u64,
    /// Upload sessions whose running hash is kept in memory (default
    /// 4096); beyond that a session's hash is taken from the copy saved
    /// with it in the store at each request.
    pub max_hashed_uploads: usize,
    /// Most repositories tried for an automatic cross-repository mount
    /// (default 64).
    pub max_mount_candidates: usize,
    /// Longest a write that makes the registry rely on blobs (a manifest
    /// PUT, an upload's completion, a mount) may take from its start to its
    /// last store write; one past it fails with `503` and may be retried.
    /// Garbage collection waits this long before it marks, so every
    /// process over one store must use the same value (default 10 min).
    pub write_deadline: std::time::Duration,
    /// How long a tag, a manifest's record or a blob's size read from the
    /// store is served from memory: what another process over the same
    /// store changes is seen after at most this long (default 1 s; zero:
    /// no caching). This process's own writes are seen at once.
    pub cache_ttl: std::time::Duration,
    /// Bytes of manifests kept in memory (by digest: never stale; default
    /// 16 MiB).
    pub manifest_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 64 << 30,
            max_hashed_uploads: 4096,
            max_mount_candidates: 64,
            write_deadline: std::time::Duration::from_secs(10 * 60),
            cache_ttl: std::time::Duration::from_secs(1),
            manifest_cache_bytes: 16 << 20,
        }
    }
}

/// A manifest found by [`Registry::manifest_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a manifest PUT stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutManifest {
    /// The digest of the exact bytes.
    pub digest: Digest,
    /// The parsed manifest.
    pub manifest: Manifest,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Revision {
    media_type: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    repository: String,
    /// The running SHA-256 of the session's data, so that any process
    /// continues it (a load balancer may send each chunk elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<SavedHash>,
}

/// A running hash saved with a session: valid for its first `offset`
/// bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedHash {
    offset: u64,
    state: String,
}

/// A running hash of an upload: valid for the first `offset` bytes.
#[derive(Debug)]
struct UploadHash {
    offset: u64,
    hasher: Option<Hasher>,
}

/// An OCI registry over a storage backend.
#[derive(Debug)]
pub struct Registry<S> {
    pub(crate) store: S,
    pub(crate) limits: Limits,
    /// One lock per upload session this process is serving (chunks of one
    /// session are appended in turn), holding its running hash.
    uploads: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<UploadHash>>>>,
    /// The last look for a running garbage collection.
    pub(crate) gc_active: ActiveCache,
    /// Tag → digest, by (repository, tag).
    tags: TtlCache<(String, String), Digest>,
    /// A manifest's record, by (repository, digest).
    revisions: TtlCache<(String, Digest), (String, u64)>,
    /// A blob's size, by (repository, digest).
    blob_sizes: TtlCache<(String, Digest), u64>,
    manifests: BytesCache,
}

fn repo_key(repo: &RepositoryName) -> String {
    format!("repositories/{}", repo.as_str())
}

/// The folder of a repository's manifests: `<alg>/<hex>` below it.
pub(crate) fn revisions_prefix(repo: &RepositoryName) -> String {
    format!("{}/_manifests/revisions", repo_key(repo))
}

fn revision_key(repo: &RepositoryName, d: &Digest) -> String {
    format!("{}/{}/{}", revisions_prefix(repo), d.algorithm(), d.hex())
}

/// The folder of a repository's tags.
pub(crate) fn tags_prefix(repo: &RepositoryName) -> String {
    format!("{}/_manifests/tags", repo_key(repo))
}

fn tag_key(repo: &RepositoryName, t: &Tag) -> String {
    format!("{}/{t}", tags_prefix(repo))
}

pub(crate) fn layer_key(repo: &RepositoryName, d: &Digest) -> String {
    format!("{}/_layers/{}/{}", repo_key(repo), d.algorithm(), d.hex())
}

fn referrers_prefix(repo: &RepositoryName, subject: &Digest) -> String {
    format!(
        "{}/_referrers/{}/{}",
        repo_key(repo),
        subject.algorithm(),
        subject.hex()
    )
}

fn referrer_key(repo: &RepositoryName, subject: &Digest, d: &Digest) -> String {
    format!(
        "{}/{}-{}",
        referrers_prefix(repo, subject),
        d.algorithm(),
        d.hex()
    )
}

fn flat(repo: &RepositoryName) -> String {
    repo.as_str().replace('/', ",")
}

fn catalog_key(repo: &RepositoryName) -> String {
    format!("catalog/{}", flat(repo))
}

/// The digest a tag document names.
pub(crate) fn tag_target(doc: &[u8]) -> Option<Digest> {
    std::str::from_utf8(doc).ok()?.parse().ok()
}

/// A repository's name as one key component (`/` as `,`), back.
pub(crate) fn unflat(name: &str) -> Option<RepositoryName> {
    name.replace(',', "/").parse().ok()
}

/// An upload session's record (the session's data is the store's).
pub(crate) fn upload_key(id: &str) -> String {
    format!("uploads/{id}")
}

/// The folder of the repositories holding blob `d`.
pub(crate) fn holders_prefix(d: &Digest) -> String {
    format!("holders/{}/{}", d.algorithm(), d.hex())
}

fn holder_key(d: &Digest, repo: &RepositoryName) -> String {
    format!("{}/{}", holders_prefix(d), flat(repo))
}

/// One page of a sorted list: the entries after `last`, at most `n`, and
/// whether more follow.
fn page(sorted: Vec<String>, n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let start = last.map_or(0, |l| sorted.partition_point(|x| x.as_str() <= l));
    let rest = &sorted[start.min(sorted.len())..];
    match n {
        Some(n) if n < rest.len() => (rest[..n].to_vec(), true),
        _ => (rest.to_vec(), false),
    }
}

impl<S: Storage> Registry<S> {
    /// A registry over `store`.
    pub fn new(store: S, limits: Limits) -> Self {
        Self {
            store,
            limits,
            uploads: Mutex::new(HashMap::new()),
            gc_active: ActiveCache::default(),
            tags: TtlCache::new(limits.cache_ttl),
            revisions: TtlCache::new(limits.cache_ttl),
            blob_sizes: TtlCache::new(limits.cache_ttl),
            manifests: BytesCache::new(limits.manifest_cache_bytes),
        }
    }

    /// The backend.
    pub fn storage(&self) -> &S {
        &self.store
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    // ---- blobs ----

    /// The size of a blob of the repository.
    ///
    /// # Errors
    ///
    /// [`Error::BlobUnknown`] when the repository does not hold it.
    pub async fn blob_size(&self, repo: &RepositoryName, d: &Digest) -> Result<u64, Error> {
        let key = (repo.as_str().to_owned(), d.clone());
        if let Some(size) = self.blob_sizes.get(&key) {
            return Ok(size);
        }
        if self.store.get_doc(&layer_key(repo, d)).await?.is_none() {
            return Err(Error::BlobUnknown(d.clone()));
        }
        let size = self
            .store
            .blob_size(d)
            .await?
            .ok_or_else(|| Error::BlobUnknown(d.clone()))?;
        self.blob_sizes.insert(key, size);
        Ok(size)
    }

    /// Bytes `start..end` of a blob of the repository (checked by the
    /// caller against [`Registry::blob_size`]).
    ///
    /// # Errors
    ///
    /// [`Error::BlobUnknown`] when it is gone.
    pub async fn read_blob(&self, d: &Digest, start: u64, end: u64) -> Result<ByteStream, Error> {
        self.store
            .read_blob(d, start, end)
            .await?
            .ok_or_else(|| Error::BlobUnknown(d.clone()))
    }

    /// Stores a whole body as blob `d` of `repo` in one go (a monolithic
    /// upload): verified before it becomes visible, no session kept.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the bytes have another digest (nothing
    /// is stored), [`Error::TooLarge`] over the blob limit.
    pub async fn put_blob(
        &self,
        repo: &RepositoryName,
        d: &Digest,
        body: ByteStream,
    ) -> Result<(), Error> {
        let guard = self.guard(std::slice::from_ref(d)).await?;
        let actual = match self
            .store
            .put_blob_verified(d, body, self.limits.max_blob_bytes)
            .await
        {
            Ok(actual) => actual,
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                return Err(Error::TooLarge(self.limits.max_blob_bytes));
            }
            Err(e) => return Err(e.into()),
        };
        if &actual != d {
            return Err(Error::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        guard.check()?;
        self.link_blob(repo, d).await
    }

    /// Removes a blob from the repository (its bytes stay for other
    /// repositories until garbage collection).
    ///
    /// # Errors
    ///
    /// [`Error::BlobUnknown`] when the repository does not hold it.
    pub async fn delete_blob(&self, repo: &RepositoryName, d: &Digest) -> Result<(), Error> {
        self.blob_sizes
            .remove(&(repo.as_str().to_owned(), d.clone()));
        if !self.store.delete_doc(&layer_key(repo, d)).await? {
            return Err(Error::BlobUnknown(d.clone()));
        }
        self.store.delete_doc(&holder_key(d, repo)).await?;
        Ok(())
    }

    async fn link_blob(&self, repo: &RepositoryName, d: &Digest) -> Result<(), Error> {
        self.store.put_doc(&holder_key(d, repo), b"").await?;
        self.store.put_doc(&layer_key(repo, d), b"").await?;
        Ok(())
    }

    /// Mounts blob `d` from `from` into `repo` (the caller checked that the
    /// client may pull `from`). Whether it was there to mount.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn mount(
        &self,
        repo: &RepositoryName,
        d: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, Error> {
        let guard = self.guard(std::slice::from_ref(d)).await?;
        match self.blob_size(from, d).await {
            Ok(_) => {
                guard.check()?;
                self.link_blob(repo, d).await?;
                Ok(true)
            }
            Err(Error::BlobUnknown(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Repositories holding blob `d` (at most the mount-candidate limit),
    /// for an automatic mount from one the client may pull.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn blob_holders(&self, d: &Digest) -> Result<Vec<RepositoryName>, Error> {
        let names = self.store.list_docs(&holders_prefix(d)).await?;
        Ok(names
            .iter()
            .filter_map(|n| unflat(n))
            .take(self.limits.max_mount_candidates)
            .collect())
    }

    // ---- uploads ----

    /// Opens an upload session in `repo`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn start_upload(&self, repo: &RepositoryName) -> Result<UploadId, Error> {
        let id = UploadId::random()?;
        self.store.create_upload(id.as_str()).await?;
        let record = serde_json::to_vec(&UploadRecord {
            repository: repo.as_str().to_owned(),
            hash: None,
        })
        .map_err(std::io::Error::other)?;
        self.store
            .put_doc(&upload_key(id.as_str()), &record)
            .await?;
        Ok(id)
    }

    /// The session's lock and running hash, after checking it belongs to
    /// `repo`, and the running hash saved with it.
    async fn session(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> Result<(Arc<tokio::sync::Mutex<UploadHash>>, Option<SavedHash>), Error> {
        let unknown = || Error::UploadUnknown(id.to_string());
        let record = self
            .store
            .get_doc(&upload_key(id.as_str()))
            .await?
            .ok_or_else(unknown)?;
        let record: UploadRecord = serde_json::from_slice(&record).map_err(|_| unknown())?;
        if record.repository != repo.as_str() {
            return Err(unknown());
        }
        let saved = record.hash;
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(id) {
            return Ok((s.clone(), saved));
        }
        // A session this process has not seen (new, or from before a
        // restart or on another replica): hashed from the start (which
        // applies only while it is empty) or from the hash saved with it;
        // kept in memory while the table has room.
        let keep = map.len() < self.limits.max_hashed_uploads;
        let state = Arc::new(tokio::sync::Mutex::new(UploadHash {
            offset: 0,
            hasher: Some(Hasher::new(Algorithm::Sha256)),
        }));
        if keep {
            map.insert(id.clone(), state.clone());
        }
        Ok((state, saved))
    }

    /// Takes up the hash saved with a session when this process's does not
    /// reach where the session stands.
    fn adopt(state: &mut UploadHash, saved: Option<SavedHash>, stands_at: u64) {
        if state.offset == stands_at {
            return;
        }
        if let Some(saved) = saved
            && saved.offset == stands_at
            && let Some(h) = Hasher::restore(&saved.state)
        {
            state.offset = stands_at;
            state.hasher = Some(h);
        }
    }

    /// Saves a session's running hash with it (best effort: without it,
    /// completion on another process re-reads the data).
    async fn save_hash(&self, repo: &RepositoryName, id: &UploadId, offset: u64, h: &Hasher) {
        let Some(state) = h.save() else { return };
        let record = UploadRecord {
            repository: repo.as_str().to_owned(),
            hash: Some(SavedHash { offset, state }),
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        if let Err(e) = self.store.put_doc(&upload_key(id.as_str()), &bytes).await {
            tracing::warn!(error = %e, upload = %id, "saving an upload's running hash");
        }
    }

    /// The bytes a session's data holds in storage.
    async fn stored_size(&self, id: &UploadId) -> Result<u64, Error> {
        self.store
            .upload_size(id.as_str())
            .await?
            .ok_or_else(|| Error::UploadUnknown(id.to_string()))
    }

    fn forget(&self, id: &UploadId) {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The bytes an upload holds.
    ///
    /// # Errors
    ///
    /// [`Error::UploadUnknown`] for no such session in `repo`.
    pub async fn upload_size(&self, repo: &RepositoryName, id: &UploadId) -> Result<u64, Error> {
        let _ = self.session(repo, id).await?;
        self.stored_size(id).await
    }

    /// Appends a chunk. `start` is where the client says it begins
    /// (`Content-Range`); it must be where the upload stands. `len` is its
    /// declared length, checked against what arrives. Returns the size
    /// after it.
    ///
    /// # Errors
    ///
    /// [`Error::ChunkOutOfOrder`] (416) for a chunk that does not continue
    /// the upload, [`Error::InvalidUpload`] for a length mismatch,
    /// [`Error::SizeInvalid`] over the blob limit.
    pub async fn append(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        start: Option<u64>,
        len: Option<u64>,
        body: ByteStream,
    ) -> Result<u64, Error> {
        let (session, saved) = self.session(repo, id).await?;
        let mut state = session.lock().await;
        let have = self.stored_size(id).await?;
        Self::adopt(&mut state, saved, have);
        if let Some(start) = start
            && start != have
        {
            return Err(Error::ChunkOutOfOrder { have, got: start });
        }
        let room = self.limits.max_blob_bytes.saturating_sub(have);
        let limit = len.map_or(room, |l| l.min(room));
        let hashing = state.offset == have;
        let mut hasher = state.hasher.take().filter(|_| hashing);
        let result = self
            .store
            .append_upload(id.as_str(), have, body, hasher.as_mut(), limit)
            .await;
        match result {
            Ok(n) => {
                if let Some(l) = len
                    && n != l
                {
                    // The session holds the bytes that came; the hash is
                    // gone with this error, so completion re-hashes.
                    state.offset = u64::MAX;
                    return Err(Error::InvalidUpload(format!(
                        "Content-Range/Content-Length declare {l} bytes, {n} arrived"
                    )));
                }
                state.offset = if hasher.is_some() { have + n } else { u64::MAX };
                if let Some(h) = &hasher {
                    self.save_hash(repo, id, have + n, h).await;
                }
                state.hasher = hasher;
                Ok(have + n)
            }
            Err(e) => {
                state.offset = u64::MAX;
                if e.kind() == std::io::ErrorKind::FileTooLarge {
                    return Err(if len.is_some_and(|l| l <= room) {
                        Error::InvalidUpload("chunk longer than declared".into())
                    } else {
                        Error::TooLarge(self.limits.max_blob_bytes)
                    });
                }
                Err(e.into())
            }
        }
    }

    /// Completes an upload as blob `digest`: verifies the bytes and makes
    /// the blob visible in `repo`. A wrong digest ends the session and
    /// stores nothing.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the bytes have another digest.
    pub async fn complete(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<(), Error> {
        if let Some(body) = body {
            // The whole blob in this request (POST, then one PUT): stored
            // in one go, as a monolithic POST is.
            let (session, _) = self.session(repo, id).await?;
            let held = session.lock().await;
            if self.stored_size(id).await? == 0 {
                let result = self.put_blob(repo, digest, body).await;
                drop(held);
                self.store.delete_upload(id.as_str()).await?;
                self.store.delete_doc(&upload_key(id.as_str())).await?;
                self.forget(id);
                return result;
            }
            drop(held);
            self.append(repo, id, None, None, body).await?;
        }
        let (session, saved) = self.session(repo, id).await?;
        let mut state = session.lock().await;
        let size = self.stored_size(id).await?;
        Self::adopt(&mut state, saved, size);
        let actual = match state.hasher.take() {
            Some(h) if state.offset == size && digest.algorithm() == "sha256" => h.finish(),
            _ => {
                let mut h = digest.hasher();
                let mut data = self.store.read_upload(id.as_str()).await?;
                while let Some(chunk) = data.next().await {
                    h.update(&chunk?);
                }
                h.finish()
            }
        };
        state.offset = u64::MAX;
        drop(state);
        let result = if &actual == digest {
            self.commit(repo, id, digest).await
        } else {
            self.store.delete_upload(id.as_str()).await?;
            Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            })
        };
        self.store.delete_doc(&upload_key(id.as_str())).await?;
        self.forget(id);
        result
    }

    /// Makes a verified upload the blob `digest` of `repo`.
    async fn commit(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
    ) -> Result<(), Error> {
        let guard = self.guard(std::slice::from_ref(digest)).await?;
        match self.store.commit_upload(id.as_str(), digest).await {
            // The stored bytes are not the ones hashed (requests raced on
            // the session): nothing is stored.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Error::InvalidUpload(e.to_string()));
            }
            other => other?,
        }
        guard.check()?;
        self.link_blob(repo, digest).await
    }

    /// Abandons an upload.
    ///
    /// # Errors
    ///
    /// [`Error::UploadUnknown`] for no such session in `repo`.
    pub async fn cancel(&self, repo: &RepositoryName, id: &UploadId) -> Result<(), Error> {
        let (session, _) = self.session(repo, id).await?;
        let _held = session.lock().await;
        self.store.delete_upload(id.as_str()).await?;
        self.store.delete_doc(&upload_key(id.as_str())).await?;
        self.forget(id);
        Ok(())
    }

    // ---- manifests ----

    async fn revision(&self, repo: &RepositoryName, d: &Digest) -> Result<Option<Revision>, Error> {
        let key = (repo.as_str().to_owned(), d.clone());
        if let Some((media_type, size)) = self.revisions.get(&key) {
            return Ok(Some(Revision { media_type, size }));
        }
        Ok(match self.store.get_doc(&revision_key(repo, d)).await? {
            Some(b) => {
                let rev: Revision = serde_json::from_slice(&b).map_err(std::io::Error::other)?;
                self.revisions
                    .insert(key, (rev.media_type.clone(), rev.size));
                Some(rev)
            }
            None => None,
        })
    }

    async fn resolve(&self, repo: &RepositoryName, r: &Reference) -> Result<Digest, Error> {
        match r {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => {
                let key = (repo.as_str().to_owned(), t.as_str().to_owned());
                if let Some(d) = self.tags.get(&key) {
                    return Ok(d);
                }
                let unknown = || Error::ManifestUnknown(r.to_string());
                let bytes = self
                    .store
                    .get_doc(&tag_key(repo, t))
                    .await?
                    .ok_or_else(unknown)?;
                let d = tag_target(&bytes).ok_or_else(unknown)?;
                self.tags.insert(key, d.clone());
                Ok(d)
            }
        }
    }

    /// A manifest's digest, media type and size, without its bytes.
    ///
    /// # Errors
    ///
    /// [`Error::ManifestUnknown`].
    pub async fn manifest_info(
        &self,
        repo: &RepositoryName,
        r: &Reference,
    ) -> Result<ManifestInfo, Error> {
        let digest = self.resolve(repo, r).await?;
        let rev = self
            .revision(repo, &digest)
            .await?
            .ok_or_else(|| Error::ManifestUnknown(r.to_string()))?;
        Ok(ManifestInfo {
            digest,
            media_type: rev.media_type,
            size: rev.size,
        })
    }

    /// A manifest and its bytes.
    ///
    /// # Errors
    ///
    /// [`Error::ManifestUnknown`].
    pub async fn manifest(
        &self,
        repo: &RepositoryName,
        r: &Reference,
    ) -> Result<(ManifestInfo, Bytes), Error> {
        let info = self.manifest_info(repo, r).await?;
        if let Some(bytes) = self.manifests.get(&info.digest) {
            return Ok((info, bytes));
        }
        let mut data = self.read_blob(&info.digest, 0, info.size).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
        while let Some(chunk) = data.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        let bytes = Bytes::from(bytes);
        // Whole and of the recorded size: the digest names these bytes.
        if bytes.len() as u64 == info.size {
            self.manifests.insert(info.digest.clone(), bytes.clone());
        }
        Ok((info, bytes))
    }

    /// Stores a manifest under `r` (a tag, or the digest of `bytes`) after
    /// checking it: valid, of a known media type, every blob and child it
    /// references in the repository.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidManifest`], [`Error::DigestMismatch`] (digest
    /// reference that is not the bytes'), [`Error::ManifestBlobUnknown`],
    /// [`Error::SizeInvalid`] over the manifest limit.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        r: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest, Error> {
        if bytes.len() > self.limits.max_manifest_bytes {
            return Err(Error::TooLarge(self.limits.max_manifest_bytes as u64));
        }
        let manifest = Manifest::parse(&bytes, content_type)?;
        let digest = match r {
            Reference::Digest(want) => {
                let mut h = want.hasher();
                h.update(&bytes);
                let got = h.finish();
                if &got != want {
                    return Err(Error::DigestMismatch {
                        expected: want.clone(),
                        actual: got,
                    });
                }
                got
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let relied: Vec<Digest> = std::iter::once(digest.clone())
            .chain(manifest.blobs.iter().cloned())
            .chain(manifest.children.iter().cloned())
            .collect();
        let guard = self.guard(&relied).await?;
        for b in &manifest.blobs {
            if self.blob_size(repo, b).await.is_err() {
                return Err(Error::ManifestBlobUnknown(b.clone()));
            }
        }
        // An index's children: manifests of the repository, or (as
        // distribution accepts, and BuildKit's registry cache without
        // `image-manifest=true` needs: its index lists layers and its cache
        // config) blobs of the repository.
        for c in &manifest.children {
            if self.revision(repo, c).await?.is_none() && self.blob_size(repo, c).await.is_err() {
                return Err(Error::ManifestBlobUnknown(c.clone()));
            }
        }
        let size = bytes.len() as u64;
        self.store.put_blob(&digest, bytes).await?;
        self.store.put_doc(&catalog_key(repo), b"").await?;
        let rev = serde_json::to_vec(&Revision {
            media_type: manifest.media_type.clone(),
            size,
        })
        .map_err(std::io::Error::other)?;
        guard.check()?;
        self.store
            .put_doc(&revision_key(repo, &digest), &rev)
            .await?;
        if let Some(subject) = &manifest.subject {
            let desc = serde_json::to_vec(&manifest.referrer_descriptor(&digest, size))
                .map_err(std::io::Error::other)?;
            self.store
                .put_doc(&referrer_key(repo, subject, &digest), &desc)
                .await?;
        }
        self.revisions.insert(
            (repo.as_str().to_owned(), digest.clone()),
            (manifest.media_type.clone(), size),
        );
        if let Reference::Tag(t) = r {
            self.store
                .put_doc(&tag_key(repo, t), digest.as_str().as_bytes())
                .await?;
            self.tags.insert(
                (repo.as_str().to_owned(), t.as_str().to_owned()),
                digest.clone(),
            );
        }
        Ok(PutManifest { digest, manifest })
    }

    /// Copies the manifest `r` of `from` into `to` under the same reference,
    /// byte for byte: its blobs linked (no bytes copied), an index's
    /// children copied first. Whether it copied (`false`: `to` already had
    /// `r`).
    ///
    /// # Errors
    ///
    /// [`Error::ManifestUnknown`] when `from` lacks it (or a child),
    /// [`Error::ManifestBlobUnknown`] for a blob `from` does not hold,
    /// storage failures.
    pub async fn copy_manifest(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        r: &Reference,
    ) -> Result<bool, Error> {
        if self.manifest_info(to, r).await.is_ok() {
            return Ok(false);
        }
        self.copy_one(from, to, r, 0).await?;
        Ok(true)
    }

    async fn copy_one(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        r: &Reference,
        depth: u8,
    ) -> Result<(), Error> {
        let (info, bytes) = self.manifest(from, r).await?;
        let manifest = Manifest::parse(&bytes, Some(&info.media_type))?;
        for b in &manifest.blobs {
            if !self.mount(to, b, from).await? {
                return Err(Error::ManifestBlobUnknown(b.clone()));
            }
        }
        for c in &manifest.children {
            // Indexes of indexes are one level deep in practice; a cycle
            // cannot be written (a digest names its bytes), but stay bounded.
            if depth >= 4 {
                return Err(Error::ManifestBlobUnknown(c.clone()));
            }
            let child = Reference::Digest(c.clone());
            if self.revision(to, c).await?.is_some() {
                continue;
            }
            if self.revision(from, c).await?.is_some() {
                Box::pin(self.copy_one(from, to, &child, depth + 1)).await?;
            } else if !self.mount(to, c, from).await? {
                // A blob child (a BuildKit cache index's layers).
                return Err(Error::ManifestBlobUnknown(c.clone()));
            }
        }
        self.put_manifest(to, r, Some(&info.media_type), bytes)
            .await?;
        Ok(())
    }

    /// Deletes a tag, or a manifest by digest with every tag pointing at it
    /// and its referrers entry. Blobs stay (garbage collection removes
    /// what nothing references).
    ///
    /// # Errors
    ///
    /// [`Error::ManifestUnknown`].
    pub async fn delete_manifest(&self, repo: &RepositoryName, r: &Reference) -> Result<(), Error> {
        match r {
            Reference::Tag(t) => {
                self.tags
                    .remove(&(repo.as_str().to_owned(), t.as_str().to_owned()));
                if !self.store.delete_doc(&tag_key(repo, t)).await? {
                    return Err(Error::ManifestUnknown(r.to_string()));
                }
            }
            Reference::Digest(d) => {
                let (info, bytes) = self.manifest(repo, r).await?;
                self.revisions
                    .remove(&(repo.as_str().to_owned(), d.clone()));
                self.tags
                    .retain(|(name, _), digest| name != repo.as_str() || digest != d);
                for tag in self.all_tags(repo).await? {
                    let Ok(t) = tag.parse::<Tag>() else { continue };
                    if self
                        .resolve(repo, &Reference::Tag(t.clone()))
                        .await
                        .ok()
                        .as_ref()
                        == Some(d)
                    {
                        self.store.delete_doc(&tag_key(repo, &t)).await?;
                    }
                }
                if let Ok(m) = Manifest::parse(&bytes, Some(&info.media_type))
                    && let Some(subject) = m.subject
                {
                    self.store
                        .delete_doc(&referrer_key(repo, &subject, d))
                        .await?;
                }
                self.store.delete_doc(&revision_key(repo, d)).await?;
            }
        }
        Ok(())
    }

    async fn all_tags(&self, repo: &RepositoryName) -> Result<Vec<String>, Error> {
        Ok(self.store.list_docs(&tags_prefix(repo)).await?)
    }

    /// A page of the repository's tags, sorted, after `last`, at most `n`;
    /// and whether more follow.
    ///
    /// # Errors
    ///
    /// [`Error::NameUnknown`] for a repository that never had a manifest.
    pub async fn tags(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), Error> {
        let known = self.store.get_doc(&catalog_key(repo)).await?.is_some();
        if !known {
            return Err(Error::NameUnknown(repo.to_string()));
        }
        Ok(page(self.all_tags(repo).await?, n, last))
    }

    /// A page of the repositories `visible` lets through, sorted.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn catalog(
        &self,
        visible: impl Fn(&RepositoryName) -> bool,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<(Vec<String>, bool), Error> {
        let mut names: Vec<String> = self
            .repositories()
            .await?
            .into_iter()
            .filter(|r| visible(r))
            .map(|r| r.as_str().to_owned())
            .collect();
        names.sort();
        Ok(page(names, n, last))
    }

    /// Every repository that has had a manifest, in no particular order.
    pub(crate) async fn repositories(&self) -> Result<Vec<RepositoryName>, Error> {
        Ok(self
            .store
            .list_docs("catalog")
            .await?
            .iter()
            .filter_map(|n| unflat(n))
            .collect())
    }

    /// Every manifest stored in a repository, with when it was stored.
    pub(crate) async fn stored_manifests(
        &self,
        repo: &RepositoryName,
    ) -> Result<Vec<(Digest, std::time::SystemTime)>, Error> {
        let base = revisions_prefix(repo);
        let mut out = Vec::new();
        for alg in self.store.list_docs(&base).await? {
            for entry in self
                .store
                .list_doc_entries(&format!("{base}/{alg}"))
                .await?
            {
                if let Ok(d) = format!("{alg}:{}", entry.name).parse() {
                    out.push((d, entry.modified));
                }
            }
        }
        Ok(out)
    }

    /// The referrers of `subject` in `repo` as an OCI image index, with
    /// only those of `artifact_type` when given.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<u8>, Error> {
        let prefix = referrers_prefix(repo, subject);
        let mut manifests = Vec::new();
        for name in self.store.list_docs(&prefix).await? {
            let Some(bytes) = self.store.get_doc(&format!("{prefix}/{name}")).await? else {
                continue;
            };
            let Ok(desc) = serde_json::from_slice::<Descriptor>(&bytes) else {
                continue;
            };
            if artifact_type.is_none_or(|t| desc.artifact_type.as_deref() == Some(t)) {
                manifests.push(desc);
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        Ok(serde_json::to_vec(&index).map_err(std::io::Error::other)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let all = v(&["a", "b", "c", "d"]);
        assert_eq!(page(all.clone(), Some(2), None), (v(&["a", "b"]), true));
        assert_eq!(
            page(all.clone(), Some(2), Some("b")),
            (v(&["c", "d"]), false)
        );
        assert_eq!(page(all.clone(), None, Some("bb")), (v(&["c", "d"]), false));
        assert_eq!(page(all.clone(), Some(0), None), (v(&[]), true));
        assert_eq!(page(all, Some(9), Some("z")), (v(&[]), false));
    }
}
