//! Upload sessions in an object store, under `uploads/<id>/`:
//!
//! - `session`: the session exists;
//! - `data/<offset>`: a readable piece of the data starting at `<offset>`;
//! - `multipart/<offset>.<hex id>`: an open multipart upload (S3's) whose
//!   bytes start at `<offset>` and whose object will be `data/<offset>`;
//! - `parts/<start>/<offset>.<size>.<hex etag>`: a part of the multipart
//!   upload at `<start>`, recorded once the store took it.
//!
//! Offsets are zero-padded so names list in order; everything a session's
//! state needs is in the names, so one listing reads it. The data is the
//! run of stretches from offset 0 without a gap, each a piece or an open
//! upload's recorded parts; at an offset holding both, the one holding more
//! bytes is the newer (a multipart upload that took in a short piece as the
//! start of its first part; a completed upload whose records are stale).
//!
//! Without a multipart store a request body is stored as pieces of
//! [`PIECE`] bytes. With one ([`ObjectStorage::with_multipart`]) it goes
//! straight into multipart parts of [`PART`] bytes, up to four in flight:
//! a remainder too short for a part (under [`MIN_PART`], the S3 minimum but
//! for the last part) waits as a short piece that the next request takes in
//! as the start of its first part, or that completion sends as the last
//! part. Completing a session whose data is one multipart upload sends no
//! byte again: the store joins the parts, the joined object is read back
//! once to check its digest (two requests racing on a session through
//! different replicas could leave other bytes than the ones hashed), then
//! copied into the blob's place. Parts cannot be read before their upload is complete, so a
//! session re-read is first completed into pieces; the registry saves a
//! session's running hash with it, so that happens only when the saved hash
//! is behind the data (a process stopped between the two writes).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::task::JoinHandle;

use super::{ObjectStorage, io_error, not_found_is_none};
use crate::digest::{from_hex, to_hex};
use crate::storage::ByteStream;
use crate::{Digest, Hasher};

/// Bytes per stored piece of an upload without a multipart store.
pub(super) const PIECE: usize = 8 << 20;
/// Bytes per multipart part cut from a request body.
pub(crate) const PART: usize = 8 << 20;
/// The smallest multipart part but the last (S3's rule): also the
/// `OCI-Chunk-Min-Length` advertised.
pub(crate) const MIN_PART: usize = 5 << 20;
/// Parts of one request in flight at once.
const IN_FLIGHT: usize = 4;
/// Width of an offset in a name.
const OFFSET_DIGITS: usize = 20;

/// One stretch of a session's data.
#[derive(Debug)]
enum Stretch {
    /// A readable object.
    Piece { offset: u64, size: u64, path: Path },
    /// An open multipart upload's recorded parts, in order.
    Open(Open),
}

#[derive(Debug, Clone)]
struct Open {
    offset: u64,
    id: String,
    /// (offset, size, etag)
    parts: Vec<(u64, u64, String)>,
}

impl Open {
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
}

/// A session's state, from one listing.
#[derive(Debug)]
pub(super) struct Layout {
    stretches: Vec<Stretch>,
    size: u64,
    /// Every open multipart upload's id, by the offset it starts at.
    pub(super) uploads: BTreeMap<u64, String>,
}

impl Layout {
    /// The stretches' kinds and sizes, for tests: `piece(5) parts(8+8)`.
    #[cfg(test)]
    pub(super) fn shape(&self) -> String {
        let shapes: Vec<String> = self
            .stretches
            .iter()
            .map(|s| match s {
                Stretch::Piece { size, .. } => format!("piece({size})"),
                Stretch::Open(o) => {
                    let sizes: Vec<String> = o.parts.iter().map(|p| p.1.to_string()).collect();
                    format!("parts({})", sizes.join("+"))
                }
            })
            .collect();
        shapes.join(" ")
    }
}

fn hex(text: &str) -> String {
    to_hex(text.as_bytes())
}

fn unhex(s: &str) -> Option<String> {
    String::from_utf8(from_hex(s)?).ok()
}

fn offset_name(offset: u64) -> String {
    format!("{offset:0OFFSET_DIGITS$}")
}

/// A multipart upload being filled by one request: where it starts, its
/// id once created, the next part's index.
struct Filling {
    start: u64,
    id: Option<String>,
    next: usize,
}

impl ObjectStorage {
    pub(super) fn upload_dir(&self, id: &str) -> io::Result<Path> {
        super::check_key(id)?;
        Ok(self.path(&format!("uploads/{id}")))
    }

    pub(super) fn piece_path(&self, id: &str, offset: u64) -> io::Result<Path> {
        Ok(self.upload_dir(id)?.join("data").join(offset_name(offset)))
    }

    /// The session's state; `None` when there is no such session.
    pub(super) async fn layout(&self, id: &str) -> io::Result<Option<Layout>> {
        let dir = self.upload_dir(id)?;
        let depth = dir.parts().count();
        let mut listing = self.store.list(Some(&dir));
        let mut exists = false;
        let mut pieces: BTreeMap<u64, (u64, Path)> = BTreeMap::new();
        let mut parts: BTreeMap<u64, BTreeMap<u64, (u64, String)>> = BTreeMap::new();
        let mut uploads = BTreeMap::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(io_error)?;
            let names: Vec<String> = meta
                .location
                .parts()
                .skip(depth)
                .map(|p| p.as_ref().to_owned())
                .collect();
            let num = |s: &str| s.parse::<u64>().ok();
            match names.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["session"] => exists = true,
                ["data", offset] => {
                    if let Some(o) = num(offset) {
                        pieces.insert(o, (meta.size, meta.location));
                    }
                }
                ["multipart", name] => {
                    let Some((offset, id)) = name.split_once('.') else {
                        continue;
                    };
                    if let (Some(o), Some(id)) = (num(offset), unhex(id)) {
                        uploads.insert(o, id);
                    }
                }
                ["parts", start, name] => {
                    if let (Some(s), Some((o, size, etag))) = (num(start), part_record(name)) {
                        parts.entry(s).or_default().insert(o, (size, etag));
                    }
                }
                _ => {}
            }
        }
        if !exists {
            return Ok(None);
        }
        let mut stretches = Vec::new();
        let mut next = 0u64;
        loop {
            let open = uploads.get(&next).map(|id| {
                let mut open = Open {
                    offset: next,
                    id: id.clone(),
                    parts: Vec::new(),
                };
                let mut at = next;
                for (&o, (size, etag)) in parts.get(&next).into_iter().flatten() {
                    if o != at || *size == 0 {
                        break;
                    }
                    open.parts.push((o, *size, etag.clone()));
                    at += size;
                }
                open
            });
            let piece = pieces.get(&next);
            let open_size = open.as_ref().map_or(0, Open::size);
            let stretch = match (open, piece) {
                (Some(open), p) if open_size > p.map_or(0, |p| p.0) => Stretch::Open(open),
                (_, Some((size, path))) if *size > 0 => Stretch::Piece {
                    offset: next,
                    size: *size,
                    path: path.clone(),
                },
                _ => break,
            };
            next += match &stretch {
                Stretch::Piece { size, .. } => *size,
                Stretch::Open(o) => o.size(),
            };
            stretches.push(stretch);
        }
        Ok(Some(Layout {
            stretches,
            size: next,
            uploads,
        }))
    }

    pub(super) async fn session_size(&self, id: &str) -> io::Result<Option<u64>> {
        Ok(self.layout(id).await?.map(|l| l.size))
    }

    pub(super) async fn append(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> io::Result<u64> {
        let layout = self
            .layout(id)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such upload"))?;
        if layout.size != offset {
            return Err(io::Error::other(format!(
                "upload holds {} bytes, expected {offset}",
                layout.size
            )));
        }
        match &self.multipart {
            Some(mp) => {
                self.append_parts(mp.clone(), id, &layout, body, hasher, limit)
                    .await
            }
            None => self.append_pieces(id, offset, body, hasher, limit).await,
        }
    }

    async fn append_pieces(
        &self,
        id: &str,
        offset: u64,
        mut body: ByteStream,
        mut hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> io::Result<u64> {
        let mut written = 0u64;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if written + buf.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&chunk);
            }
            buf.extend_from_slice(&chunk);
            if buf.len() >= PIECE {
                let piece = std::mem::take(&mut buf);
                let n = piece.len() as u64;
                self.put_piece(id, offset + written, piece).await?;
                written += n;
            }
        }
        if !buf.is_empty() {
            let n = buf.len() as u64;
            self.put_piece(id, offset + written, buf).await?;
            written += n;
        }
        Ok(written)
    }

    async fn put_piece(&self, id: &str, offset: u64, bytes: Vec<u8>) -> io::Result<()> {
        self.store
            .put(&self.piece_path(id, offset)?, PutPayload::from(bytes))
            .await
            .map_err(io_error)?;
        Ok(())
    }

    async fn read_piece(&self, path: &Path) -> io::Result<Vec<u8>> {
        let got = self.store.get(path).await.map_err(io_error)?;
        Ok(got.bytes().await.map_err(io_error)?.to_vec())
    }

    /// A request body into multipart parts (see the module's notes).
    async fn append_parts(
        &self,
        mp: Arc<dyn MultipartStore>,
        id: &str,
        layout: &Layout,
        mut body: ByteStream,
        mut hasher: Option<&mut Hasher>,
        limit: u64,
    ) -> io::Result<u64> {
        // Continue the open upload at the end, taking in a short piece
        // after it; or start one, at a short piece that ends the data.
        let short = |s: &Stretch| match s {
            Stretch::Piece { offset, size, path } if *size < MIN_PART as u64 => {
                Some((*offset, path.clone()))
            }
            _ => None,
        };
        let tail = layout.stretches.last().and_then(short);
        let before = &layout.stretches[..layout.stretches.len() - usize::from(tail.is_some())];
        let mut filling = match (before.last(), &tail) {
            (Some(Stretch::Open(o)), _) => continuing(o),
            (_, Some((offset, _))) => new_filling(*offset, &layout.uploads),
            _ => new_filling(layout.size, &layout.uploads),
        };
        let (mut part_offset, mut buf) = match tail {
            Some((offset, path)) => (offset, self.read_piece(&path).await?),
            None => (layout.size, Vec::new()),
        };
        let mut in_flight: VecDeque<JoinHandle<io::Result<()>>> = VecDeque::new();
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                if written > limit {
                    return Err(too_large());
                }
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&chunk);
                }
                buf.extend_from_slice(&chunk);
                while buf.len() >= PART {
                    let rest = buf.split_off(PART);
                    let part = std::mem::replace(&mut buf, rest);
                    self.send_part(&mp, id, &mut filling, part_offset, part, &mut in_flight)
                        .await?;
                    part_offset += PART as u64;
                }
            }
            if buf.len() >= MIN_PART {
                let part = std::mem::take(&mut buf);
                self.send_part(&mp, id, &mut filling, part_offset, part, &mut in_flight)
                    .await?;
            } else if !buf.is_empty() {
                self.put_piece(id, part_offset, std::mem::take(&mut buf))
                    .await?;
            }
            Ok(())
        }
        .await;
        // Every part sent is recorded (or failed) before this returns, so
        // the session's size is settled.
        let mut settled = result;
        while let Some(task) = in_flight.pop_front() {
            let done = task.await.map_err(io::Error::other).and_then(|r| r);
            if settled.is_ok() {
                settled = done;
            }
        }
        settled.map(|()| written)
    }

    /// Sends one part of the upload being filled (creating the upload at
    /// its first part), recorded once the store took it; waits while
    /// [`IN_FLIGHT`] parts are on their way.
    async fn send_part(
        &self,
        mp: &Arc<dyn MultipartStore>,
        id: &str,
        filling: &mut Filling,
        offset: u64,
        part: Vec<u8>,
        in_flight: &mut VecDeque<JoinHandle<io::Result<()>>>,
    ) -> io::Result<()> {
        let target = self.piece_path(id, filling.start)?;
        let upload = match &filling.id {
            Some(u) => u.clone(),
            None => {
                let u = mp.create_multipart(&target).await.map_err(io_error)?;
                self.store
                    .put(
                        &self.upload_record(id, filling.start, &u)?,
                        PutPayload::default(),
                    )
                    .await
                    .map_err(io_error)?;
                filling.id = Some(u.clone());
                u
            }
        };
        let index = filling.next;
        filling.next += 1;
        let parts = self
            .upload_dir(id)?
            .join("parts")
            .join(offset_name(filling.start));
        let (mp, store) = (mp.clone(), self.store.clone());
        in_flight.push_back(tokio::spawn(async move {
            let size = part.len();
            let taken = mp
                .put_part(&target, &upload, index, PutPayload::from(part))
                .await
                .map_err(io_error)?;
            let name = format!("{}.{size}.{}", offset_name(offset), hex(&taken.content_id));
            store
                .put(&parts.join(name), PutPayload::default())
                .await
                .map_err(io_error)?;
            Ok(())
        }));
        while in_flight.len() >= IN_FLIGHT {
            if let Some(task) = in_flight.pop_front() {
                task.await.map_err(io::Error::other)??;
            }
        }
        Ok(())
    }

    /// Completes an open upload into the piece at its offset, sending
    /// `last` (a short piece after it) as its last part; checks the size.
    async fn complete(&self, id: &str, open: &Open, last: Option<&Path>) -> io::Result<Path> {
        let mp = self
            .multipart
            .as_ref()
            .ok_or_else(|| io::Error::other("an open multipart upload and no multipart store"))?;
        let target = self.piece_path(id, open.offset)?;
        let mut parts: Vec<PartId> = open
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.2.clone(),
            })
            .collect();
        let mut expected = open.size();
        if let Some(path) = last {
            let bytes = self.read_piece(path).await?;
            expected += bytes.len() as u64;
            let taken = mp
                .put_part(&target, &open.id, parts.len(), PutPayload::from(bytes))
                .await
                .map_err(io_error)?;
            parts.push(taken);
        }
        mp.complete_multipart(&target, &open.id, parts)
            .await
            .map_err(io_error)?;
        let size = self.store.head(&target).await.map_err(io_error)?.size;
        if size != expected {
            return Err(io::Error::other(format!(
                "multipart upload completed at {size} bytes, {expected} recorded"
            )));
        }
        // Its records are stale now (and harmless: the piece holds as many
        // bytes).
        let dir = self.upload_dir(id)?;
        not_found_is_none(
            self.store
                .delete(&self.upload_record(id, open.offset, &open.id)?)
                .await,
        )?;
        self.delete_under(&dir.join("parts").join(offset_name(open.offset)))
            .await?;
        Ok(target)
    }

    /// Completes every open upload, so the data is readable pieces.
    async fn sealed(&self, id: &str) -> io::Result<Vec<(u64, Path)>> {
        let layout = self.layout(id).await?.unwrap_or(Layout {
            stretches: Vec::new(),
            size: 0,
            uploads: BTreeMap::new(),
        });
        let mut pieces = Vec::with_capacity(layout.stretches.len());
        for s in &layout.stretches {
            match s {
                Stretch::Piece { size, path, .. } => pieces.push((*size, path.clone())),
                Stretch::Open(o) => {
                    let path = self.complete(id, o, None).await?;
                    pieces.push((o.size(), path));
                }
            }
        }
        Ok(pieces)
    }

    pub(super) async fn read_session(&self, id: &str) -> io::Result<ByteStream> {
        let pieces = self.sealed(id).await?;
        let store = self.store.clone();
        let stream = futures_util::stream::iter(pieces)
            .then(move |(_, path)| {
                let store = store.clone();
                async move {
                    let got = store.get(&path).await.map_err(io_error)?;
                    Ok::<_, io::Error>(got.into_stream().map_err(io_error))
                }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    /// Makes the session's data the blob `digest` at `dest`, hashing what
    /// it joins on the way: the caller's running hash covers the bytes its
    /// requests sent, but two requests racing on one session through
    /// different replicas could leave other bytes stored, and a blob must
    /// never differ from its digest. `InvalidData` when it would.
    pub(super) async fn commit_session(
        &self,
        id: &str,
        digest: &Digest,
        dest: &Path,
    ) -> io::Result<()> {
        let layout = self
            .layout(id)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such upload"))?;
        // One multipart upload (and a short last piece): joined in the
        // store, read back once to check, copied into place; no byte sent
        // again.
        let whole = match layout.stretches.as_slice() {
            [] => None,
            [Stretch::Piece { path, .. }] => Some(path.clone()),
            [Stretch::Open(o)] => Some(self.complete(id, o, None).await?),
            [Stretch::Open(o), Stretch::Piece { path, size, .. }] if *size < MIN_PART as u64 => {
                Some(self.complete(id, o, Some(path)).await?)
            }
            _ => return self.commit_pieces(id, digest, dest).await,
        };
        let mut hasher = digest.hasher();
        if let Some(path) = &whole {
            let mut data = self.store.get(path).await.map_err(io_error)?.into_stream();
            while let Some(chunk) = data.next().await {
                hasher.update(&chunk.map_err(io_error)?);
            }
        }
        check(hasher, digest)?;
        match whole {
            None => self
                .store
                .put(dest, PutPayload::default())
                .await
                .map(drop)
                .map_err(io_error),
            Some(path) => self.copy_into_place(&path, layout.size, digest, dest).await,
        }
    }

    /// Several pieces streamed into one multipart upload at `dest`, hashed
    /// on the way: it completes only when they are `digest`.
    async fn commit_pieces(&self, id: &str, digest: &Digest, dest: &Path) -> io::Result<()> {
        let data = self.read_session(id).await?;
        self.write_checked(data, digest, dest).await
    }

    /// Puts `from`, checked to be `digest` and `size` bytes long, in its
    /// place at `dest`: one copy in the store, or, where the store refuses
    /// one that large (AWS S3 copies at most 5 GiB in one request), its
    /// bytes streamed through this process into a multipart upload at
    /// `dest`, hashed again on the way.
    pub(super) async fn copy_into_place(
        &self,
        from: &Path,
        size: u64,
        digest: &Digest,
        dest: &Path,
    ) -> io::Result<()> {
        match self.store.copy(from, dest).await {
            Ok(()) => Ok(()),
            Err(e) if size > self.copy_limit => {
                tracing::debug!(error = %e, size, "the store refused the copy; streaming the blob into place");
                let data = self.store.get(from).await.map_err(io_error)?;
                let data = data.into_stream().map_err(io_error).boxed();
                self.write_checked(data, digest, dest).await
            }
            Err(e) => Err(io_error(e)),
        }
    }

    /// `data` streamed into one multipart upload at `dest`, hashed on the
    /// way: it completes only when the bytes are `digest`.
    async fn write_checked(
        &self,
        mut data: ByteStream,
        digest: &Digest,
        dest: &Path,
    ) -> io::Result<()> {
        let upload = self.store.put_multipart(dest).await.map_err(io_error)?;
        let mut writer = WriteMultipart::new(upload);
        let mut hasher = digest.hasher();
        let result = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                writer
                    .wait_for_capacity(IN_FLIGHT)
                    .await
                    .map_err(io_error)?;
                writer.put(chunk);
            }
            check(hasher, digest)
        }
        .await;
        match result {
            Ok(()) => writer.finish().await.map(drop).map_err(io_error),
            Err(e) => {
                writer.abort().await.ok();
                Err(e)
            }
        }
    }

    /// Removes a session: its open multipart uploads aborted, every object
    /// under it deleted.
    pub(super) async fn delete_session(&self, id: &str) -> io::Result<()> {
        let dir = self.upload_dir(id)?;
        if let Some(mp) = &self.multipart {
            let records: Vec<Path> = self
                .store
                .list(Some(&dir.clone().join("multipart")))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(io_error)?;
            for record in records {
                if let Some((o, u)) = record.filename().and_then(|n| n.split_once('.'))
                    && let (Ok(o), Some(u)) = (o.parse::<u64>(), unhex(u))
                {
                    // Gone already (completed or aborted) is fine.
                    mp.abort_multipart(&self.piece_path(id, o)?, &u).await.ok();
                }
            }
        }
        self.delete_under(&dir).await
    }

    /// The record of multipart upload `upload` starting at `offset`.
    fn upload_record(&self, id: &str, offset: u64, upload: &str) -> io::Result<Path> {
        let name = format!("{}.{}", offset_name(offset), hex(upload));
        Ok(self.upload_dir(id)?.join("multipart").join(name))
    }
}

/// The size a part record names (`<uploads>/<id>/parts/<start>/<offset>.
/// <size>.<etag>`, `depth` the parts of `<uploads>`), 0 for other objects.
pub(super) fn recorded_part_size(path: &Path, depth: usize) -> u64 {
    let names: Vec<_> = path.parts().skip(depth + 1).collect();
    match names.as_slice() {
        [kind, _, name] if kind.as_ref() == "parts" => {
            part_record(name.as_ref()).map_or(0, |(_, size, _)| size)
        }
        _ => 0,
    }
}

/// A part record's name, `<offset>.<size>.<hex etag>`, read.
fn part_record(name: &str) -> Option<(u64, u64, String)> {
    let mut fields = name.splitn(3, '.');
    Some((
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
        unhex(fields.next()?)?,
    ))
}

/// `InvalidData` unless the bytes hashed are `digest`.
fn check(hasher: Hasher, digest: &Digest) -> io::Result<()> {
    let actual = hasher.finish();
    if &actual == digest {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the upload's stored bytes have digest {actual}, not {digest}"),
        ))
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, "upload over the size limit")
}

fn continuing(open: &Open) -> Filling {
    Filling {
        start: open.offset,
        id: Some(open.id.clone()),
        next: open.parts.len(),
    }
}

/// A multipart upload to start at `start`; one created there before that
/// never got a part recorded is used again.
fn new_filling(start: u64, uploads: &BTreeMap<u64, String>) -> Filling {
    Filling {
        start,
        id: uploads.get(&start).cloned(),
        next: 0,
    }
}
