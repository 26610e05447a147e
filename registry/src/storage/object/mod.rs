//! An object-store backend over the `object_store` crate (S3 and
//! compatibles, GCS, Azure, or its in-memory store): blobs under
//! `<prefix>/blobs/<alg>/<xx>/<hex>`, documents under `<prefix>/docs/`,
//! upload sessions under `<prefix>/uploads/<id>/`.
//!
//! Every object appears whole or not at all (an object store's PUT and
//! multipart completion are atomic), so a crash never leaves half a blob or
//! document. Upload sessions live in the store (`upload`'s notes): any
//! process over the same store can continue, read or finish one, and a body
//! cut off part way leaves what was stored before the cut. With a multipart
//! store ([`ObjectStorage::with_multipart`], S3 and compatibles) a chunked
//! OCI upload's bytes go straight into S3 multipart parts, 5 MiB advertised
//! as `OCI-Chunk-Min-Length`, and completion joins them in the store: no
//! byte is sent twice (the joined bytes are read back once to check their
//! digest). A monolithic upload skips sessions altogether
//! ([`Storage::put_blob_verified`]: one temporary object, copied into
//! place).
//!
//! Two limits of the stores themselves: a blob is copied into its place in
//! one request, and AWS S3 copies at most 5 GiB so: a larger blob the store
//! refuses to copy is streamed into place instead
//! ([`ObjectStorage::with_copy_limit`]); and a multipart upload cut off by a
//! crash is invisible to listings, so give the bucket a lifecycle rule
//! aborting incomplete multipart uploads (S3's
//! `AbortIncompleteMultipartUpload`; Garage supports it). Sessions removed by the registry (completed, cancelled or
//! stale) have theirs aborted. The parts of one upload are 5 to 8 MiB, not
//! all equal: a store that requires equal parts (Cloudflare R2) refuses to
//! complete them, so use it without [`ObjectStorage::with_multipart`].

mod upload;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::{ByteStream, Listed, Storage};
use crate::{Digest, Hasher};
use upload::{MIN_PART, PIECE};

/// AWS S3's largest `CopyObject` source (5 GiB).
const COPY_LIMIT: u64 = 5 << 30;

/// A registry store in an object store, under a prefix.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Signs blob URLs for clients ([`ObjectStorage::with_signer`]).
    signer: Option<Arc<dyn UrlSigner>>,
    /// The same store's multipart uploads, for upload sessions
    /// ([`ObjectStorage::with_multipart`]).
    multipart: Option<Arc<dyn MultipartStore>>,
    /// Blobs larger than this are streamed into place when the store
    /// refuses to copy them ([`ObjectStorage::with_copy_limit`]).
    copy_limit: u64,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("signer", &self.signer)
            .field("multipart", &self.multipart.is_some())
            .field("copy_limit", &self.copy_limit)
            .finish()
    }
}

/// Signs URLs clients may GET an object from directly for a while (an
/// object store's presigned URLs: `object_store`'s `Signer` of its cloud
/// stores, behind a feature this crate does not need).
pub trait UrlSigner: Send + Sync + std::fmt::Debug {
    /// A GET URL for the object at `path`, valid for `expires`.
    fn signed_get(
        &self,
        path: &Path,
        expires: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = io::Result<String>> + Send + '_>>;
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        other => io::Error::other(other),
    }
}

fn not_found_is_none<T>(r: object_store::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// Checks a document key as the local backend does: `/`-separated, no
/// empty, `.` or `..` component.
fn check_key(key: &str) -> io::Result<()> {
    let bad = key
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\0'));
    if bad {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid key"));
    }
    Ok(())
}

impl ObjectStorage {
    /// A store in `store` under `prefix` (`""` for the root; no leading or
    /// trailing `/`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            signer: None,
            multipart: None,
            copy_limit: COPY_LIMIT,
        }
    }

    /// The largest object the store copies in one request (default 5 GiB,
    /// AWS S3's `CopyObject` limit). A blob is written to a temporary
    /// object, checked, then copied into its place; when the store refuses
    /// the copy of a blob larger than this, the blob is streamed into place
    /// instead (read, hashed again and written as a multipart upload).
    /// Stores without such a limit (Garage, MinIO) copy whatever the size.
    #[must_use]
    pub fn with_copy_limit(mut self, bytes: u64) -> Self {
        self.copy_limit = bytes;
        self
    }

    /// Stores upload sessions' bytes as parts of multipart uploads of
    /// `multipart` (the same store as [`ObjectStorage::new`]'s: an
    /// `AmazonS3` is both), so that completing a chunked upload sends no
    /// byte again; clients are asked for chunks of at least 5 MiB
    /// (`OCI-Chunk-Min-Length`, S3's smallest part) and shorter ones are
    /// still taken.
    #[must_use]
    pub fn with_multipart(mut self, multipart: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(multipart);
        self
    }

    /// Gives blob URLs signed by `signer` (the same store's, e.g. an
    /// `AmazonS3`), so that a router may redirect blob GETs to the store
    /// ([`crate::api::ApiOptions::redirect_blobs`]).
    #[must_use]
    pub fn with_signer(mut self, signer: Arc<dyn UrlSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path of `rest` under this store's prefix: for applications that
    /// keep objects of their own beside the registry's (under a name the
    /// registry does not use: not `blobs/`, `docs/` or `uploads/`).
    pub fn object_path(&self, rest: &str) -> Path {
        self.path(rest)
    }

    fn path(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_path(&self, d: &Digest) -> Path {
        self.path(&format!(
            "blobs/{}/{}/{}",
            d.algorithm(),
            &d.hex()[..2],
            d.hex()
        ))
    }

    fn doc_path(&self, key: &str) -> io::Result<Path> {
        check_key(key)?;
        Ok(self.path(&format!("docs/{key}")))
    }

    /// The documents and folders directly below `prefix`.
    async fn docs_below(&self, prefix: &str) -> io::Result<object_store::ListResult> {
        self.store
            .list_with_delimiter(Some(&self.doc_path(prefix)?))
            .await
            .map_err(io_error)
    }

    async fn delete_under(&self, dir: &Path) -> io::Result<()> {
        let paths: Vec<Path> = self
            .store
            .list(Some(dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(io_error)?;
        for p in paths {
            not_found_is_none(self.store.delete(&p).await)?;
        }
        Ok(())
    }
}

impl Storage for ObjectStorage {
    async fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        Ok(not_found_is_none(self.store.head(&self.blob_path(digest)).await)?.map(|m| m.size))
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> io::Result<Option<ByteStream>> {
        let options = GetOptions {
            range: (start < end).then_some(GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        if start >= end {
            return Ok(self
                .blob_size(digest)
                .await?
                .map(|_| Box::pin(futures_util::stream::empty()) as ByteStream));
        }
        let Some(got) =
            not_found_is_none(self.store.get_opts(&self.blob_path(digest), options).await)?
        else {
            return Ok(None);
        };
        let want = end - start;
        let mut sent = 0u64;
        let stream = got.into_stream().map(move |chunk| {
            let chunk = chunk.map_err(io_error)?;
            sent += chunk.len() as u64;
            if sent > want {
                return Err(io::Error::other("the store sent more than the range"));
            }
            Ok(chunk)
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn put_blob(&self, digest: &Digest, bytes: Bytes) -> io::Result<()> {
        let path = self.blob_path(digest);
        if not_found_is_none(self.store.head(&path).await)?.is_some() {
            return Ok(());
        }
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(io_error)?;
        Ok(())
    }

    /// Straight to one object beside the blobs (a multipart upload past a
    /// piece), hashed on the way, then copied into place when the digest
    /// is right: four object operations for a small blob instead of a
    /// session's dozen. The object is named like an upload's piece, so one
    /// left by a crash is removed as a stale upload.
    async fn put_blob_verified(
        &self,
        digest: &Digest,
        mut body: ByteStream,
        limit: u64,
    ) -> io::Result<Digest> {
        let id = format!("m-{}", crate::UploadId::random().map_err(io::Error::other)?);
        let tmp = self.piece_path(&id, 0)?;
        let mut hasher = digest.hasher();
        let mut buf: Vec<u8> = Vec::new();
        let mut total = 0u64;
        let mut writer: Option<WriteMultipart> = None;
        let mut failed: Option<io::Error> = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            total += chunk.len() as u64;
            if total > limit {
                failed = Some(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    "upload over the size limit",
                ));
                break;
            }
            hasher.update(&chunk);
            if let Some(w) = writer.as_mut() {
                if let Err(e) = w.wait_for_capacity(4).await {
                    failed = Some(io_error(e));
                    break;
                }
                w.put(chunk);
                continue;
            }
            buf.extend_from_slice(&chunk);
            if buf.len() >= PIECE {
                match self.store.put_multipart(&tmp).await {
                    Ok(upload) => {
                        let mut w = WriteMultipart::new(upload);
                        w.put(Bytes::from(std::mem::take(&mut buf)));
                        writer = Some(w);
                    }
                    Err(e) => {
                        failed = Some(io_error(e));
                        break;
                    }
                }
            }
        }
        let stored = match (failed, writer) {
            (Some(e), Some(w)) => {
                w.abort().await.ok();
                Err(e)
            }
            (Some(e), None) => Err(e),
            (None, Some(w)) => w.finish().await.map(drop).map_err(io_error),
            (None, None) => self
                .store
                .put(&tmp, PutPayload::from(buf))
                .await
                .map(drop)
                .map_err(io_error),
        };
        let actual = hasher.finish();
        let committed = match stored {
            Ok(()) if &actual == digest => {
                let dest = self.blob_path(digest);
                match not_found_is_none(self.store.head(&dest).await) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => self.copy_into_place(&tmp, total, digest, &dest).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        not_found_is_none(self.store.delete(&tmp).await)?;
        committed.map(|()| actual)
    }

    async fn create_upload(&self, id: &str) -> io::Result<()> {
        self.store
            .put(&self.upload_dir(id)?.join("session"), PutPayload::default())
            .await
            .map_err(io_error)?;
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> io::Result<Option<u64>> {
        self.session_size(id).await
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> io::Result<u64> {
        self.append(id, offset, body, hasher, limit).await
    }

    async fn read_upload(&self, id: &str) -> io::Result<ByteStream> {
        self.read_session(id).await
    }

    /// Checks the bytes it joins against `digest` (`InvalidData`, and the
    /// session removed, when they differ: requests raced on it).
    async fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()> {
        let dest = self.blob_path(digest);
        if not_found_is_none(self.store.head(&dest).await)?.is_none()
            && let Err(e) = self.commit_session(id, digest, &dest).await
        {
            if e.kind() == io::ErrorKind::InvalidData {
                self.delete_upload(id).await.ok();
            }
            return Err(e);
        }
        self.delete_upload(id).await
    }

    async fn delete_upload(&self, id: &str) -> io::Result<()> {
        self.delete_session(id).await
    }

    fn chunk_min_length(&self) -> Option<u64> {
        self.multipart.as_ref().map(|_| MIN_PART as u64)
    }

    async fn put_doc(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.store
            .put(&self.doc_path(key)?, PutPayload::from(bytes.to_vec()))
            .await
            .map_err(io_error)?;
        Ok(())
    }

    async fn get_doc(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(got) = not_found_is_none(self.store.get(&self.doc_path(key)?).await)? else {
            return Ok(None);
        };
        Ok(Some(got.bytes().await.map_err(io_error)?.to_vec()))
    }

    async fn delete_doc(&self, key: &str) -> io::Result<bool> {
        let path = self.doc_path(key)?;
        if not_found_is_none(self.store.head(&path).await)?.is_none() {
            return Ok(false);
        }
        not_found_is_none(self.store.delete(&path).await)?;
        Ok(true)
    }

    async fn blob_url(
        &self,
        digest: &Digest,
        expires: std::time::Duration,
    ) -> io::Result<Option<String>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        Ok(Some(
            signer.signed_get(&self.blob_path(digest), expires).await?,
        ))
    }

    async fn list_blobs(&self) -> io::Result<Vec<Listed>> {
        let dir = self.path("blobs");
        self.store
            .list(Some(&dir))
            .map_err(io_error)
            .try_filter_map(|meta| async move {
                // <prefix>/blobs/<alg>/<xx>/<hex>
                let parts: Vec<_> = meta.location.parts().collect();
                let [.., alg, _, hex] = parts.as_slice() else {
                    return Ok(None);
                };
                Ok(Some(Listed {
                    name: format!("{}:{}", alg.as_ref(), hex.as_ref()),
                    size: meta.size,
                    modified: meta.last_modified.into(),
                }))
            })
            .try_collect()
            .await
    }

    async fn delete_blob(&self, digest: &Digest) -> io::Result<()> {
        not_found_is_none(self.store.delete(&self.blob_path(digest)).await).map(drop)
    }

    async fn list_uploads(&self) -> io::Result<Vec<Listed>> {
        // <prefix>/uploads/<id>/...: the objects' sizes, and the sizes a
        // multipart upload's part records name (its parts are not listed).
        let dir = self.path("uploads");
        let depth = dir.parts().count();
        let mut by_id: std::collections::BTreeMap<String, Listed> = Default::default();
        let mut all = self.store.list(Some(&dir));
        while let Some(meta) = all.next().await {
            let meta = meta.map_err(io_error)?;
            let Some(id) = meta.location.parts().nth(depth) else {
                continue;
            };
            let modified: SystemTime = meta.last_modified.into();
            let entry = by_id.entry(id.as_ref().to_owned()).or_insert(Listed {
                name: id.as_ref().to_owned(),
                size: 0,
                modified,
            });
            entry.size += meta.size + upload::recorded_part_size(&meta.location, depth);
            entry.modified = entry.modified.max(modified);
        }
        Ok(by_id.into_values().collect())
    }

    async fn list_doc_entries(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        let mut out: Vec<Listed> = self
            .docs_below(prefix)
            .await?
            .objects
            .into_iter()
            .filter_map(|o| {
                Some(Listed {
                    name: o.location.filename()?.to_owned(),
                    size: o.size,
                    modified: o.last_modified.into(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn list_docs(&self, prefix: &str) -> io::Result<Vec<String>> {
        let listed = self.docs_below(prefix).await?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn storage() -> ObjectStorage {
        ObjectStorage::new(Arc::new(InMemory::new()), "kiln/test")
    }

    fn body(pieces: &[&'static [u8]]) -> ByteStream {
        Box::pin(futures_util::stream::iter(
            pieces
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        ))
    }

    async fn all(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn uploads_in_pieces_commit_and_docs() {
        let s = storage();
        s.create_upload("u1").await.unwrap();
        assert_eq!(s.upload_size("u1").await.unwrap(), Some(0));
        let mut h = Hasher::new(crate::Algorithm::Sha256);
        let n = s
            .append_upload("u1", 0, body(&[b"hello ", b"wor"]), Some(&mut h), 100)
            .await
            .unwrap();
        assert_eq!(n, 9);
        // The next request continues it.
        let n = s
            .append_upload("u1", 9, body(&[b"ld"]), Some(&mut h), 100)
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            all(s.read_upload("u1").await.unwrap()).await,
            b"hello world"
        );
        let d = h.finish();
        assert_eq!(d, Digest::sha256_of(b"hello world"));
        s.commit_upload("u1", &d).await.unwrap();
        assert_eq!(s.upload_size("u1").await.unwrap(), None);
        assert_eq!(s.blob_size(&d).await.unwrap(), Some(11));
        let part = s.read_blob(&d, 6, 11).await.unwrap().unwrap();
        assert_eq!(all(part).await, b"world");

        // One piece: copied in the store.
        s.create_upload("u2").await.unwrap();
        s.append_upload("u2", 0, body(&[b"one piece"]), None, 100)
            .await
            .unwrap();
        let d2 = Digest::sha256_of(b"one piece");
        s.commit_upload("u2", &d2).await.unwrap();
        assert_eq!(
            all(s.read_blob(&d2, 0, 9).await.unwrap().unwrap()).await,
            b"one piece"
        );

        s.put_doc("a/b/c", b"x").await.unwrap();
        s.put_doc("a/b/d/e", b"y").await.unwrap();
        assert_eq!(s.get_doc("a/b/c").await.unwrap().unwrap(), b"x");
        assert_eq!(s.list_docs("a/b").await.unwrap(), ["c", "d"]);
        assert!(s.list_docs("nothing").await.unwrap().is_empty());
        assert!(s.delete_doc("a/b/c").await.unwrap());
        assert!(!s.delete_doc("a/b/c").await.unwrap());
        assert!(s.get_doc("../x").await.is_err());
        assert!(s.get_doc("a//b").await.is_err());
        assert_eq!(
            s.blob_size(&Digest::sha256_of(b"none")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn wrong_offsets_limits_and_big_bodies() {
        let s = storage();
        s.create_upload("u").await.unwrap();
        assert!(
            s.append_upload("u", 3, body(&[b"abcd"]), None, 100)
                .await
                .is_err()
        );
        assert!(
            s.append_upload("u", 0, body(&[b"abcd"]), None, 3)
                .await
                .is_err()
        );
        assert_eq!(s.upload_size("u").await.unwrap(), Some(0));
        assert!(s.upload_size("missing").await.unwrap().is_none());
        // A body over one piece is stored as several, committed by a
        // multipart upload.
        let big: Vec<u8> = (0..PIECE + PIECE / 2).map(|i| (i % 251) as u8).collect();
        let stream: ByteStream = Box::pin(futures_util::stream::iter(
            big.chunks(1 << 20)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let n = s
            .append_upload("u", 0, stream, None, u64::MAX)
            .await
            .unwrap();
        assert_eq!(n, big.len() as u64);
        assert_eq!(
            s.layout("u").await.unwrap().unwrap().shape(),
            "piece(8388608) piece(4194304)"
        );
        let d = Digest::sha256_of(&big);
        s.commit_upload("u", &d).await.unwrap();
        let back = all(s.read_blob(&d, 0, big.len() as u64).await.unwrap().unwrap()).await;
        assert!(back == big, "the blob is the upload");
    }

    #[tokio::test]
    async fn monolithic_blobs_are_verified_before_they_appear() {
        let s = storage();
        let small = Digest::sha256_of(b"hello");
        assert_eq!(
            s.put_blob_verified(&small, body(&[b"hel", b"lo"]), 100)
                .await
                .unwrap(),
            small
        );
        assert_eq!(s.blob_size(&small).await.unwrap(), Some(5));
        // Wrong bytes: their digest comes back, nothing is stored.
        let wanted = Digest::sha256_of(b"other");
        let got = s
            .put_blob_verified(&wanted, body(&[b"hello"]), 100)
            .await
            .unwrap();
        assert_eq!(got, small);
        assert_eq!(s.blob_size(&wanted).await.unwrap(), None);
        // Over the limit: refused, nothing stored.
        let e = s
            .put_blob_verified(&wanted, body(&[b"0123456789"]), 4)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        // Past a piece: a multipart upload.
        let big: &'static [u8] = Box::leak(vec![7u8; PIECE + 1234].into_boxed_slice());
        let d = Digest::sha256_of(big);
        let halves: [&'static [u8]; 2] = [&big[..PIECE / 2], &big[PIECE / 2..]];
        assert_eq!(
            s.put_blob_verified(&d, body(&halves), u64::MAX)
                .await
                .unwrap(),
            d
        );
        assert_eq!(
            all(s.read_blob(&d, 0, big.len() as u64).await.unwrap().unwrap()).await,
            big
        );
        // No temporary object is left behind.
        assert!(s.list_uploads().await.unwrap().is_empty());
    }

    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn frames(bytes: &[u8]) -> ByteStream {
        let frames: Vec<io::Result<Bytes>> = bytes
            .chunks(64 << 10)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(frames))
    }

    fn with_multipart(store: &Arc<InMemory>) -> ObjectStorage {
        ObjectStorage::new(store.clone(), "kiln/test").with_multipart(store.clone())
    }

    #[tokio::test]
    async fn chunks_go_into_multipart_parts_on_any_replica() {
        let mem = Arc::new(InMemory::new());
        let (a, b) = (with_multipart(&mem), with_multipart(&mem));
        assert_eq!(a.chunk_min_length(), Some(5 << 20));
        assert_eq!(storage().chunk_min_length(), None);
        let data = noise(3 * upload::PART + 1_234_567, 1);
        // A short chunk waits as a piece; the next takes it in as the start
        // of the first part; a long one is cut into parts and leaves a short
        // remainder; the last is short.
        let cuts = [1000, 6 << 20, 2 * upload::PART + 100];
        let mut h = Hasher::new(crate::Algorithm::Sha256);
        a.create_upload("u").await.unwrap();
        let mut at = 0usize;
        let mut shapes = vec![];
        for (i, len) in cuts
            .into_iter()
            .chain([data.len() - 1000 - (6 << 20) - 2 * upload::PART - 100])
            .enumerate()
        {
            let replica = if i % 2 == 0 { &a } else { &b };
            let n = replica
                .append_upload(
                    "u",
                    at as u64,
                    frames(&data[at..at + len]),
                    Some(&mut h),
                    u64::MAX,
                )
                .await
                .unwrap();
            assert_eq!(n, len as u64);
            at += len;
            assert_eq!(b.upload_size("u").await.unwrap(), Some(at as u64));
            shapes.push(a.layout("u").await.unwrap().unwrap().shape());
        }
        assert_eq!(
            shapes,
            [
                "piece(1000)",
                "parts(6292456)",
                "parts(6292456+8388608+8388608) piece(100)",
                "parts(6292456+8388608+8388608) piece(3330719)",
            ],
            "{shapes:?}"
        );
        let d = h.finish();
        assert_eq!(d, Digest::sha256_of(&data));
        b.commit_upload("u", &d).await.unwrap();
        let back = all(a
            .read_blob(&d, 0, data.len() as u64)
            .await
            .unwrap()
            .unwrap())
        .await;
        assert!(back == data, "the blob is the upload");
        assert!(a.list_uploads().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn multipart_sessions_are_read_lost_records_redone_and_aborted() {
        let mem = Arc::new(InMemory::new());
        let s = with_multipart(&mem);
        let data = noise(2 * upload::PART + 10, 2);
        s.create_upload("r").await.unwrap();
        s.append_upload("r", 0, frames(&data[..upload::PART + 5]), None, u64::MAX)
            .await
            .unwrap();
        // Read back (to re-hash): the open upload is completed into a piece
        // first; more chunks then start a new upload after it.
        assert!(all(s.read_upload("r").await.unwrap()).await == data[..upload::PART + 5]);
        assert_eq!(
            s.layout("r").await.unwrap().unwrap().shape(),
            "piece(8388608) piece(5)"
        );
        s.append_upload(
            "r",
            (upload::PART + 5) as u64,
            frames(&data[upload::PART + 5..]),
            None,
            u64::MAX,
        )
        .await
        .unwrap();
        assert_eq!(
            s.layout("r").await.unwrap().unwrap().shape(),
            "piece(8388608) parts(8388608) piece(10)"
        );
        let d = Digest::sha256_of(&data);
        s.commit_upload("r", &d).await.unwrap();
        assert!(
            all(s
                .read_blob(&d, 0, data.len() as u64)
                .await
                .unwrap()
                .unwrap())
            .await
                == data
        );

        // A part whose record is lost (a crash between the two) does not
        // count; the client resumes where the session says it stands.
        s.create_upload("l").await.unwrap();
        s.append_upload("l", 0, frames(&data), None, u64::MAX)
            .await
            .unwrap();
        let records: Vec<Path> = mem
            .list(Some(&s.upload_dir("l").unwrap().join("parts")))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        let second = records.iter().max().unwrap();
        mem.delete(second).await.unwrap();
        assert_eq!(s.upload_size("l").await.unwrap(), Some(upload::PART as u64));
        s.append_upload(
            "l",
            upload::PART as u64,
            frames(&data[upload::PART..]),
            None,
            u64::MAX,
        )
        .await
        .unwrap();
        let d2 = Digest::sha256_of(&data);
        s.commit_upload("l", &d2).await.unwrap();
        assert!(
            all(s
                .read_blob(&d2, 0, data.len() as u64)
                .await
                .unwrap()
                .unwrap())
            .await
                == data
        );

        // Cancelling aborts the open upload.
        s.create_upload("c").await.unwrap();
        s.append_upload("c", 0, frames(&data[..upload::PART]), None, u64::MAX)
            .await
            .unwrap();
        // Listed with the bytes its parts hold (for garbage collection).
        let listed = s.list_uploads().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, upload::PART as u64);
        let layout = s.layout("c").await.unwrap().unwrap();
        let (&start, upload) = layout.uploads.iter().next().unwrap();
        s.delete_upload("c").await.unwrap();
        assert_eq!(s.upload_size("c").await.unwrap(), None);
        let target = s.piece_path("c", start).unwrap();
        assert!(
            mem.put_part(&target, upload, 1, PutPayload::from(vec![1u8]))
                .await
                .is_err(),
            "the multipart upload is gone"
        );
        assert!(s.list_uploads().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn bytes_changed_under_a_session_are_never_committed() {
        // Another replica's request racing on the session rewrote what one
        // request stored and hashed: the commit checks what it joins.
        let mem = Arc::new(InMemory::new());
        let plain = ObjectStorage::new(mem.clone(), "t");
        let data = noise(PIECE + 5, 3);
        let digest = Digest::sha256_of(&data);
        // One piece, several pieces (joined by streaming them), and
        // multipart parts (joined in the store).
        for (id, len) in [("one", 100), ("several", data.len())] {
            plain.create_upload(id).await.unwrap();
            plain
                .append_upload(id, 0, frames(&data[..len]), None, u64::MAX)
                .await
                .unwrap();
            // The last piece, one bit flipped.
            let last = if len > PIECE { PIECE } else { 0 };
            let mut bytes = data[last..len].to_vec();
            bytes[1] ^= 1;
            mem.put(
                &plain.piece_path(id, last as u64).unwrap(),
                PutPayload::from(bytes),
            )
            .await
            .unwrap();
            let d = Digest::sha256_of(&data[..len]);
            let e = plain.commit_upload(id, &d).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{id}: {e}");
            assert_eq!(plain.blob_size(&d).await.unwrap(), None, "{id}");
            assert_eq!(plain.upload_size(id).await.unwrap(), None, "{id}");
        }
        let s = with_multipart(&mem);
        s.create_upload("parts").await.unwrap();
        s.append_upload("parts", 0, frames(&data), None, u64::MAX)
            .await
            .unwrap();
        let layout = s.layout("parts").await.unwrap().unwrap();
        let (&start, upload) = layout.uploads.iter().next().unwrap();
        let mut first = data[..upload::PART].to_vec();
        first[0] ^= 1;
        mem.put_part(
            &s.piece_path("parts", start).unwrap(),
            upload,
            0,
            PutPayload::from(first),
        )
        .await
        .unwrap();
        let e = s.commit_upload("parts", &digest).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(s.blob_size(&digest).await.unwrap(), None);
        assert!(s.list_uploads().await.unwrap().is_empty());
    }

    /// The in-memory store refusing, as AWS S3 does past 5 GiB, to copy an
    /// object larger than `cap` bytes.
    #[derive(Debug)]
    struct CopyCapped {
        inner: Arc<InMemory>,
        cap: u64,
    }

    impl std::fmt::Display for CopyCapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "CopyCapped({})", self.cap)
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for CopyCapped {
        async fn put_opts(
            &self,
            path: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(path, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            path: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(path, opts).await
        }

        async fn get_opts(
            &self,
            path: &Path,
            opts: GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(path, opts).await
        }

        fn delete_stream(
            &self,
            paths: futures_util::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(paths)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            opts: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            let size = self.inner.head(from).await?.size;
            if size > self.cap {
                return Err(object_store::Error::Generic {
                    store: "CopyCapped",
                    source: format!("copy source of {size} bytes is over {}", self.cap).into(),
                });
            }
            self.inner.copy_opts(from, to, opts).await
        }
    }

    #[async_trait::async_trait]
    impl MultipartStore for CopyCapped {
        async fn create_multipart(&self, path: &Path) -> object_store::Result<String> {
            self.inner.create_multipart(path).await
        }

        async fn put_part(
            &self,
            path: &Path,
            id: &String,
            part: usize,
            data: PutPayload,
        ) -> object_store::Result<object_store::multipart::PartId> {
            self.inner.put_part(path, id, part, data).await
        }

        async fn complete_multipart(
            &self,
            path: &Path,
            id: &String,
            parts: Vec<object_store::multipart::PartId>,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.complete_multipart(path, id, parts).await
        }

        async fn abort_multipart(&self, path: &Path, id: &String) -> object_store::Result<()> {
            self.inner.abort_multipart(path, id).await
        }
    }

    #[tokio::test]
    async fn blobs_the_store_will_not_copy_are_streamed_into_place() {
        let cap = upload::PART as u64;
        let store = Arc::new(CopyCapped {
            inner: Arc::new(InMemory::new()),
            cap,
        });
        let s = ObjectStorage::new(store.clone(), "t")
            .with_multipart(store.clone())
            .with_copy_limit(cap);
        let data = noise(2 * upload::PART + 77, 4);
        let digest = Digest::sha256_of(&data);
        let read = |d: Digest| {
            let s = s.clone();
            async move { all(s.read_blob(&d, 0, u64::MAX).await.unwrap().unwrap()).await }
        };
        // Monolithic: its temporary object is over the cap.
        assert_eq!(
            s.put_blob_verified(&digest, frames(&data), u64::MAX)
                .await
                .unwrap(),
            digest
        );
        assert!(read(digest.clone()).await == data, "monolithic");
        // A chunked session: its parts joined in the store, then streamed.
        let data = noise(2 * upload::PART + 99, 5);
        let digest = Digest::sha256_of(&data);
        s.create_upload("c").await.unwrap();
        s.append_upload("c", 0, frames(&data), None, u64::MAX)
            .await
            .unwrap();
        s.commit_upload("c", &digest).await.unwrap();
        assert!(read(digest.clone()).await == data, "chunked");
        assert!(s.list_uploads().await.unwrap().is_empty());
        // Under the limit a refused copy is an error as any other: the
        // store's limit is not assumed lower than the one configured.
        let strict = ObjectStorage::new(store.clone(), "u");
        let small = noise(upload::PART + 1, 6);
        let d = Digest::sha256_of(&small);
        let e = strict
            .put_blob_verified(&d, frames(&small), u64::MAX)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("copy source"), "{e}");
        assert_eq!(strict.blob_size(&d).await.unwrap(), None);
    }
}
