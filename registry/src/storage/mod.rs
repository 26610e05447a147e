//! Where the registry keeps its bytes: a trait with the few operations the
//! protocol needs, so that a backend (a local directory, an object store)
//! changes no route.
//!
//! Two kinds of things are stored:
//! - **blobs**, content-addressed by [`Digest`], which become visible only
//!   once whole, verified and durable ([`Storage::commit_upload`],
//!   [`Storage::put_blob`]);
//! - **documents**: small records under `/`-separated keys (links, tags,
//!   referrers, upload metadata), each written atomically.
//!
//! Upload sessions live in the store too (data and metadata), so a session
//! outlives a restart and can continue on another process over the same
//! store.

mod fs;
mod object;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsStorage;
pub use object::{ObjectStorage, UrlSigner};

use crate::{Digest, Hasher};

/// A stream of body bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An object met by a listing: a blob (named `<alg>:<hex>`), an upload
/// session (named by its id) or a document (named by its last key part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its size in bytes (an upload's: the bytes it holds).
    pub size: u64,
    /// Its last write, by the store's clock (an upload's: the latest write
    /// to its data).
    pub modified: SystemTime,
}

/// A storage backend. Keys passed in are built by the registry from
/// validated names, tags and digests: `/`-separated, no empty, `.` or `..`
/// components.
pub trait Storage: Send + Sync + 'static {
    /// The size of a stored blob, `None` when absent.
    fn blob_size(&self, digest: &Digest) -> impl Future<Output = io::Result<Option<u64>>> + Send;

    /// Bytes `start..end` of a stored blob (the caller checked the range
    /// against [`Storage::blob_size`]); `None` when absent.
    fn read_blob(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> impl Future<Output = io::Result<Option<ByteStream>>> + Send;

    /// Stores `bytes` as the blob `digest` (the caller verified it),
    /// durably and atomically. Storing an existing blob again is a no-op.
    fn put_blob(
        &self,
        digest: &Digest,
        bytes: Bytes,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Stores a whole body as blob `digest` in one go (a monolithic
    /// upload), hashing it with `digest`'s algorithm on the way: it becomes
    /// the blob only when the hash is `digest`, else nothing is kept. At
    /// most `limit` bytes are taken (`FileTooLarge` past it). Returns the
    /// digest the bytes have. By default an upload session of its own,
    /// appended once and committed.
    fn put_blob_verified(
        &self,
        digest: &Digest,
        body: ByteStream,
        limit: u64,
    ) -> impl Future<Output = io::Result<Digest>> + Send {
        async move {
            let id = crate::UploadId::random().map_err(io::Error::other)?;
            let id = format!("m-{id}");
            self.create_upload(&id).await?;
            let mut hasher = digest.hasher();
            if let Err(e) = self
                .append_upload(&id, 0, body, Some(&mut hasher), limit)
                .await
            {
                self.delete_upload(&id).await.ok();
                return Err(e);
            }
            let actual = hasher.finish();
            if &actual == digest {
                self.commit_upload(&id, digest).await?;
            } else {
                self.delete_upload(&id).await?;
            }
            Ok(actual)
        }
    }

    /// Starts an empty upload session's data.
    fn create_upload(&self, id: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// The bytes an upload holds, `None` when there is no such session.
    fn upload_size(&self, id: &str) -> impl Future<Output = io::Result<Option<u64>>> + Send;

    /// Appends a body to an upload that holds exactly `offset` bytes,
    /// feeding `hasher` (when given) with every byte written; at most
    /// `limit` bytes are taken. Returns the bytes appended. A failure part
    /// way leaves the session at a length [`Storage::upload_size`] reports.
    fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> impl Future<Output = io::Result<u64>> + Send;

    /// The bytes an upload holds, from the start (to re-hash a session
    /// whose saved running hash is behind its data).
    fn read_upload(&self, id: &str) -> impl Future<Output = io::Result<ByteStream>> + Send;

    /// Makes an upload's data the blob `digest` (the caller verified it):
    /// durable and atomic; the session's data is gone afterwards. A backend
    /// whose sessions several processes may write at once checks the bytes
    /// it joins again and fails with `InvalidData` (the session removed)
    /// when they are not `digest`.
    fn commit_upload(
        &self,
        id: &str,
        digest: &Digest,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Removes an upload's data (absent is fine).
    fn delete_upload(&self, id: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes a document atomically (readers see the old or the new bytes).
    fn put_doc(&self, key: &str, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads a document, `None` when absent.
    fn get_doc(&self, key: &str) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send;

    /// Deletes a document; whether it existed.
    fn delete_doc(&self, key: &str) -> impl Future<Output = io::Result<bool>> + Send;

    /// The names directly below `prefix` (documents and folders), sorted;
    /// empty when there are none.
    fn list_docs(&self, prefix: &str) -> impl Future<Output = io::Result<Vec<String>>> + Send;

    /// Every stored blob, in no particular order (for garbage collection
    /// and scrubbing).
    fn list_blobs(&self) -> impl Future<Output = io::Result<Vec<Listed>>> + Send;

    /// Removes a stored blob (absent is fine). Only garbage collection
    /// calls this.
    fn delete_blob(&self, digest: &Digest) -> impl Future<Output = io::Result<()>> + Send;

    /// Every upload session's data, in no particular order.
    fn list_uploads(&self) -> impl Future<Output = io::Result<Vec<Listed>>> + Send;

    /// The documents directly below `prefix` (not folders) with their size
    /// and last write, sorted by name.
    fn list_doc_entries(
        &self,
        prefix: &str,
    ) -> impl Future<Output = io::Result<Vec<Listed>>> + Send;

    /// A URL a client may GET blob `digest` from directly for `expires` (an
    /// object store's presigned URL), when the backend can give one. None
    /// by default.
    fn blob_url(
        &self,
        digest: &Digest,
        expires: std::time::Duration,
    ) -> impl Future<Output = io::Result<Option<String>>> + Send {
        let _ = (digest, expires);
        async { Ok(None) }
    }

    /// The smallest chunk a chunked upload may send (but its last), when the
    /// backend has one (S3 multipart parts: 5 MiB); advertised to clients
    /// as `OCI-Chunk-Min-Length`. None by default.
    fn chunk_min_length(&self) -> Option<u64> {
        None
    }
}
