//! The local-directory backend: blobs under `blobs/<alg>/<xx>/<hex>`,
//! documents as files, uploads under `uploads/`. Every write goes to a
//! temporary file that is fsynced, renamed into place and whose directory is
//! fsynced, so a crash leaves the old state or the new one, never half.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{ByteStream, Listed, Storage};
use crate::{Digest, Hasher};

/// Read and write buffer size for blob streams.
const CHUNK: usize = 256 * 1024;

/// A registry store in a local directory.
#[derive(Debug)]
pub struct FsStorage {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

impl FsStorage {
    /// Opens (creating when missing) a store at `root`.
    ///
    /// # Errors
    ///
    /// When the folders cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["blobs", "uploads", "docs", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // Temporary files of an earlier process are garbage.
        for entry in std::fs::read_dir(root.join("tmp"))? {
            std::fs::remove_file(entry?.path()).ok();
        }
        Ok(Self {
            root,
            tmp_seq: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `d` is stored (it may be absent): for readers that need a
    /// plain file, such as a converter.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        Self::blob_path_in(&self.root, d)
    }

    /// Where blob `d` is stored in a store at `root`.
    pub fn blob_path_in(root: &Path, d: &Digest) -> PathBuf {
        root.join("blobs")
            .join(d.algorithm())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn doc_path(&self, key: &str) -> io::Result<PathBuf> {
        let mut p = self.root.join("docs");
        for part in key.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid key"));
            }
            p.push(part);
        }
        Ok(p)
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Writes `bytes` to a temporary file, fsyncs it and renames it to
    /// `dest`, then fsyncs `dest`'s directory.
    async fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.tmp_path();
        let mut f = tokio::fs::File::create(&tmp).await?;
        let result = async {
            f.write_all(bytes).await?;
            f.sync_all().await?;
            drop(f);
            rename_durably(&tmp, dest).await
        }
        .await;
        if result.is_err() {
            tokio::fs::remove_file(&tmp).await.ok();
        }
        result
    }
}

/// Renames `from` to `to` (creating `to`'s parents) and fsyncs the
/// directory that now holds it.
async fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().expect("store paths have parents");
    tokio::fs::create_dir_all(dir).await?;
    tokio::fs::rename(from, to).await?;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn listed(name: String, meta: &std::fs::Metadata) -> io::Result<Listed> {
    Ok(Listed {
        name,
        size: meta.len(),
        modified: meta.modified()?,
    })
}

/// The files of a directory (not folders) with their metadata; none when
/// it is absent.
fn files_in(dir: &Path) -> io::Result<Vec<(String, std::fs::Metadata)>> {
    let Some(entries) = not_found_is_none(std::fs::read_dir(dir))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        // A file removed between the listing and its stat is just gone.
        let Some(meta) = not_found_is_none(e.metadata())? else {
            continue;
        };
        if let (true, Ok(name)) = (meta.is_file(), e.file_name().into_string()) {
            out.push((name, meta));
        }
    }
    Ok(out)
}

/// The sub-folders of a directory.
fn dirs_in(dir: &Path) -> io::Result<Vec<String>> {
    let Some(entries) = not_found_is_none(std::fs::read_dir(dir))? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir()
            && let Ok(name) = e.file_name().into_string()
        {
            out.push(name);
        }
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// `left` bytes of a file from where it stands, as a stream of pieces of at
/// most `CHUNK` bytes; a file shorter than that is an error, never a short
/// body passed off as whole.
fn file_stream(file: tokio::fs::File, left: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        (file, left),
        |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored blob is shorter than recorded",
                    )),
                    (file, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        },
    ))
}

impl Storage for FsStorage {
    async fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        Ok(not_found_is_none(tokio::fs::metadata(self.blob_path(digest)).await)?.map(|m| m.len()))
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> io::Result<Option<ByteStream>> {
        let Some(mut file) =
            not_found_is_none(tokio::fs::File::open(self.blob_path(digest)).await)?
        else {
            return Ok(None);
        };
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await?;
        }
        Ok(Some(file_stream(file, end.saturating_sub(start))))
    }

    async fn put_blob(&self, digest: &Digest, bytes: Bytes) -> io::Result<()> {
        let dest = self.blob_path(digest);
        if tokio::fs::try_exists(&dest).await? {
            return Ok(());
        }
        self.write_atomic(&dest, &bytes).await
    }

    async fn create_upload(&self, id: &str) -> io::Result<()> {
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.upload_path(id))
            .await?;
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> io::Result<Option<u64>> {
        Ok(not_found_is_none(tokio::fs::metadata(self.upload_path(id)).await)?.map(|m| m.len()))
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        mut body: ByteStream,
        mut hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> io::Result<u64> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.upload_path(id))
            .await?;
        let len = file.metadata().await?.len();
        if len != offset {
            return Err(io::Error::other(format!(
                "upload holds {len} bytes, expected {offset}"
            )));
        }
        file.seek(io::SeekFrom::Start(offset)).await?;
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                if written + chunk.len() as u64 > limit {
                    return Err(io::Error::new(
                        io::ErrorKind::FileTooLarge,
                        "upload over the size limit",
                    ));
                }
                file.write_all(&chunk).await?;
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&chunk);
                }
                written += chunk.len() as u64;
            }
            file.flush().await
        }
        .await;
        if let Err(e) = result {
            // Keep the session at a length the hash state agrees with: the
            // caller forgets its running hash on error, so any length is
            // fine, but a partial write must not be half a chunk the client
            // believes lost. Cut back to where this request started.
            file.set_len(offset).await.ok();
            return Err(e);
        }
        Ok(written)
    }

    async fn read_upload(&self, id: &str) -> io::Result<ByteStream> {
        let file = tokio::fs::File::open(self.upload_path(id)).await?;
        let len = file.metadata().await?.len();
        Ok(file_stream(file, len))
    }

    async fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()> {
        let src = self.upload_path(id);
        let dest = self.blob_path(digest);
        if tokio::fs::try_exists(&dest).await? {
            tokio::fs::remove_file(&src).await.ok();
            return Ok(());
        }
        let file = tokio::fs::File::open(&src).await?;
        file.sync_all().await?;
        drop(file);
        rename_durably(&src, &dest).await
    }

    async fn delete_upload(&self, id: &str) -> io::Result<()> {
        not_found_is_none(tokio::fs::remove_file(self.upload_path(id)).await).map(drop)
    }

    async fn put_doc(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let dest = self.doc_path(key)?;
        self.write_atomic(&dest, bytes).await
    }

    async fn get_doc(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        not_found_is_none(tokio::fs::read(self.doc_path(key)?).await)
    }

    async fn delete_doc(&self, key: &str) -> io::Result<bool> {
        Ok(not_found_is_none(tokio::fs::remove_file(self.doc_path(key)?).await)?.is_some())
    }

    async fn list_docs(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.doc_path(prefix)?;
        let Some(mut entries) = not_found_is_none(tokio::fs::read_dir(dir).await)? else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        while let Some(e) = entries.next_entry().await? {
            if let Ok(name) = e.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn list_blobs(&self) -> io::Result<Vec<Listed>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in dirs_in(&root)? {
                for shard in dirs_in(&root.join(&alg))? {
                    for (hex, meta) in files_in(&root.join(&alg).join(&shard))? {
                        out.push(listed(format!("{alg}:{hex}"), &meta)?);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_blob(&self, digest: &Digest) -> io::Result<()> {
        not_found_is_none(tokio::fs::remove_file(self.blob_path(digest)).await).map(drop)
    }

    async fn list_uploads(&self) -> io::Result<Vec<Listed>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            files_in(&dir)?
                .into_iter()
                .map(|(name, meta)| listed(name, &meta))
                .collect()
        })
        .await
    }

    async fn list_doc_entries(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        let dir = self.doc_path(prefix)?;
        let mut out = blocking(move || {
            files_in(&dir)?
                .into_iter()
                .map(|(name, meta)| listed(name, &meta))
                .collect::<io::Result<Vec<_>>>()
        })
        .await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upload_commit_and_docs() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).unwrap();
        s.create_upload("u1").await.unwrap();
        let body: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ]));
        let mut h = Hasher::new(crate::Algorithm::Sha256);
        assert_eq!(
            s.append_upload("u1", 0, body, Some(&mut h), 100)
                .await
                .unwrap(),
            11
        );
        let d = h.finish();
        assert_eq!(d, Digest::sha256_of(b"hello world"));
        s.commit_upload("u1", &d).await.unwrap();
        assert_eq!(s.upload_size("u1").await.unwrap(), None);
        assert_eq!(s.blob_size(&d).await.unwrap(), Some(11));
        let mut part = s.read_blob(&d, 6, 11).await.unwrap().unwrap();
        assert_eq!(&part.next().await.unwrap().unwrap()[..], b"world");

        s.put_doc("a/b/c", b"x").await.unwrap();
        assert_eq!(s.get_doc("a/b/c").await.unwrap().unwrap(), b"x");
        assert_eq!(s.list_docs("a/b").await.unwrap(), ["c"]);
        assert!(s.delete_doc("a/b/c").await.unwrap());
        assert!(!s.delete_doc("a/b/c").await.unwrap());
        assert!(s.get_doc("../x").await.is_err());
        assert!(s.get_doc("a//b").await.is_err());
    }

    #[tokio::test]
    async fn append_at_the_wrong_offset_and_over_the_limit_fail() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).unwrap();
        s.create_upload("u").await.unwrap();
        let body = || -> ByteStream {
            Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(
                b"abcd",
            ))]))
        };
        assert!(s.append_upload("u", 3, body(), None, 100).await.is_err());
        assert!(s.append_upload("u", 0, body(), None, 3).await.is_err());
        assert_eq!(s.upload_size("u").await.unwrap(), Some(0));
    }
}
