//! Where `kiln serve` keeps registry content: the local data directory
//! (default) or an S3-compatible bucket (`--storage s3://BUCKET/PREFIX`,
//! credentials and endpoint from the usual `AWS_*` variables), which
//! several replicas may share.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use kiln_ext4::BlobSource;
use kiln_registry::storage::{ByteStream, UrlSigner};
use kiln_registry::{Digest, FsStorage, Hasher, Listed, ObjectStorage, Storage};

/// The registry's store.
#[derive(Debug)]
pub(crate) enum Store {
    Fs(FsStorage),
    Object(ObjectStorage),
}

impl Store {
    /// `spec` (`s3://BUCKET[/PREFIX]`), or the local directory under
    /// `data_dir` without one.
    pub(crate) fn open(spec: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        let Some(spec) = spec else {
            let root = data_dir.join("registry");
            return Ok(Self::Fs(
                FsStorage::open(&root).with_context(|| format!("opening {}", root.display()))?,
            ));
        };
        let rest = spec
            .strip_prefix("s3://")
            .with_context(|| format!("storage {spec:?}: only s3://BUCKET[/PREFIX] is known"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "storage {spec:?}: no bucket");
        // The S3 client's TLS, as everywhere in this binary: rustls on ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        // A plain-HTTP endpoint (a local Garage or MinIO) is allowed as given.
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        if let Some(e) = endpoint {
            builder = builder
                .with_allow_http(e.starts_with("http://"))
                .with_endpoint(e)
                .with_virtual_hosted_style_request(false);
        }
        let store = Arc::new(
            builder
                .build()
                .with_context(|| format!("storage {spec:?}"))?,
        );
        Ok(Self::Object(
            ObjectStorage::new(store.clone(), prefix)
                .with_multipart(store.clone())
                .with_signer(Arc::new(S3Urls(store))),
        ))
    }
}

/// Presigned GET URLs of the bucket (for `blob_redirect_secs`).
#[derive(Debug)]
struct S3Urls(Arc<object_store::aws::AmazonS3>);

impl UrlSigner for S3Urls {
    fn signed_get(
        &self,
        path: &object_store::path::Path,
        expires: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<String>> + Send + '_>> {
        use object_store::signer::Signer as _;
        let path = path.clone();
        Box::pin(async move {
            self.0
                .signed_url(object_store::signer::Method::GET, &path, expires)
                .await
                .map(|u| u.to_string())
                .map_err(io::Error::other)
        })
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Fs($s) => $e,
            Store::Object($s) => $e,
        }
    };
}

/// Every method, the provided ones too, goes to the backend: a default
/// here would hide the backend's own (an object store's one-object
/// monolithic upload, its signed URLs).
impl Storage for Store {
    async fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        both!(self, s => s.blob_size(digest).await)
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> io::Result<Option<ByteStream>> {
        both!(self, s => s.read_blob(digest, start, end).await)
    }

    async fn put_blob(&self, digest: &Digest, bytes: Bytes) -> io::Result<()> {
        both!(self, s => s.put_blob(digest, bytes).await)
    }

    async fn create_upload(&self, id: &str) -> io::Result<()> {
        both!(self, s => s.create_upload(id).await)
    }

    async fn upload_size(&self, id: &str) -> io::Result<Option<u64>> {
        both!(self, s => s.upload_size(id).await)
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> io::Result<u64> {
        both!(self, s => s.append_upload(id, offset, body, hasher, limit).await)
    }

    async fn read_upload(&self, id: &str) -> io::Result<ByteStream> {
        both!(self, s => s.read_upload(id).await)
    }

    async fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()> {
        both!(self, s => s.commit_upload(id, digest).await)
    }

    async fn delete_upload(&self, id: &str) -> io::Result<()> {
        both!(self, s => s.delete_upload(id).await)
    }

    async fn put_doc(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        both!(self, s => s.put_doc(key, bytes).await)
    }

    async fn get_doc(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        both!(self, s => s.get_doc(key).await)
    }

    async fn delete_doc(&self, key: &str) -> io::Result<bool> {
        both!(self, s => s.delete_doc(key).await)
    }

    async fn list_docs(&self, prefix: &str) -> io::Result<Vec<String>> {
        both!(self, s => s.list_docs(prefix).await)
    }

    async fn list_blobs(&self) -> io::Result<Vec<Listed>> {
        both!(self, s => s.list_blobs().await)
    }

    async fn delete_blob(&self, digest: &Digest) -> io::Result<()> {
        both!(self, s => s.delete_blob(digest).await)
    }

    async fn list_uploads(&self) -> io::Result<Vec<Listed>> {
        both!(self, s => s.list_uploads().await)
    }

    async fn list_doc_entries(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        both!(self, s => s.list_doc_entries(prefix).await)
    }

    async fn put_blob_verified(
        &self,
        digest: &Digest,
        body: ByteStream,
        limit: u64,
    ) -> io::Result<Digest> {
        both!(self, s => s.put_blob_verified(digest, body, limit).await)
    }

    async fn blob_url(
        &self,
        digest: &Digest,
        expires: std::time::Duration,
    ) -> io::Result<Option<String>> {
        both!(self, s => s.blob_url(digest, expires).await)
    }

    fn chunk_min_length(&self) -> Option<u64> {
        both!(self, s => s.chunk_min_length())
    }
}

/// The store's blobs for the ext4 converter, which reads on a blocking
/// thread: local files as they are, objects streamed through `handle`.
pub(crate) struct StoreBlobs<'a> {
    pub store: &'a Store,
    pub handle: tokio::runtime::Handle,
}

impl BlobSource for StoreBlobs<'_> {
    fn open_blob(&self, digest: &oci_spec::image::Digest) -> io::Result<Box<dyn Read + Send + '_>> {
        let d: Digest = digest
            .to_string()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "unsupported digest"))?;
        let missing = || io::Error::new(io::ErrorKind::NotFound, format!("no blob {d}"));
        match self.store {
            Store::Fs(fs) => Ok(Box::new(std::fs::File::open(fs.blob_path(&d))?)),
            Store::Object(_) => {
                let size = self
                    .handle
                    .block_on(self.store.blob_size(&d))?
                    .ok_or_else(missing)?;
                let stream = self
                    .handle
                    .block_on(self.store.read_blob(&d, 0, size))?
                    .ok_or_else(missing)?;
                Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
                    tokio_util::io::StreamReader::new(stream),
                    self.handle.clone(),
                )))
            }
        }
    }
}
