//! Layer streams: decompression on a second thread (so inflating the next
//! megabytes overlaps writing the previous ones), digest and `diff_id`
//! verified over every byte.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::source::sha256_digest;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn of(media_type: &str) -> Result<Self> {
        let base = media_type
            .strip_prefix("application/vnd.oci.image.layer.")
            .and_then(|rest| {
                rest.strip_prefix("v1.")
                    .or_else(|| rest.strip_prefix("nondistributable.v1."))
            });
        match (base, media_type) {
            (Some("tar"), _) => Ok(Self::None),
            (Some("tar+gzip"), _) => Ok(Self::Gzip),
            (Some("tar+zstd"), _) => Ok(Self::Zstd),
            (
                None,
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            ) => Ok(Self::Gzip),
            (None, "application/vnd.docker.image.rootfs.diff.tar") => Ok(Self::None),
            _ => Err(Error::UnsupportedMediaType {
                media_type: media_type.to_string(),
            }),
        }
    }
}

/// Bytes handed from the decompression thread per message.
const CHUNK: usize = 1 << 20;
/// Messages in flight (bounds memory at about `(DEPTH + 2) * CHUNK`).
const DEPTH: usize = 4;

/// One message: uncompressed bytes and the compressed bytes read so far.
type Chunk = io::Result<(Vec<u8>, u64)>;

/// What the decompression thread saw of the compressed blob.
pub(crate) struct Compressed {
    pub(crate) digest: String,
    pub(crate) size: u64,
}

/// Runs on the helper thread: reads, hashes and decompresses `blob`,
/// sending uncompressed chunks until the blob ends or the receiver hangs up.
pub(crate) fn decompress(
    blob: Box<dyn Read + Send + '_>,
    compression: Compression,
    tx: SyncSender<Chunk>,
) -> io::Result<Compressed> {
    let read = Arc::new(AtomicU64::new(0));
    let mut hashing = Hashing {
        inner: blob,
        hasher: Sha256::new(),
        bytes: 0,
        read: Arc::clone(&read),
    };
    let result = {
        let input = BufReader::with_capacity(CHUNK, &mut hashing);
        match compression {
            Compression::None => pump(input, &tx, &read),
            Compression::Gzip => pump(flate2::bufread::MultiGzDecoder::new(input), &tx, &read),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
                Ok(decoder) => pump(decoder, &tx, &read),
                Err(e) => Err(e),
            },
        }
    };
    if let Err(e) = result {
        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
        return Err(e);
    }
    // Trailing bytes after the compressed stream still count for the digest.
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(Compressed {
        digest: sha256_digest(hashing.hasher),
        size: hashing.bytes,
    })
}

fn pump(mut src: impl Read, tx: &SyncSender<Chunk>, read: &AtomicU64) -> io::Result<()> {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        buf.truncate(filled);
        if tx.send(Ok((buf, read.load(Ordering::Relaxed)))).is_err() {
            // The writer stopped (an error on its side): nothing to do.
            return Ok(());
        }
    }
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.read.store(self.bytes, Ordering::Relaxed);
        Ok(n)
    }
}

/// The writer's side: uncompressed bytes from the channel, hashed for the
/// `diff_id`.
pub(crate) struct Uncompressed<'p> {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    hasher: Sha256,
    bytes: u64,
    compressed: u64,
    progress: &'p mut dyn FnMut(u64, u64),
}

impl<'p> Uncompressed<'p> {
    pub(crate) fn channel(progress: &'p mut dyn FnMut(u64, u64)) -> (SyncSender<Chunk>, Self) {
        let (tx, rx) = sync_channel(DEPTH);
        let reader = Self {
            rx,
            chunk: Vec::new(),
            pos: 0,
            hasher: Sha256::new(),
            bytes: 0,
            compressed: 0,
            progress,
        };
        (tx, reader)
    }

    /// Reads to the end (bytes after the tar end marker count too, at most
    /// `limit` of them) and returns the `diff_id` of everything read, or
    /// `None` when more than `limit` bytes followed.
    /// Uncompressed bytes read so far.
    pub(crate) fn read_so_far(&self) -> u64 {
        self.bytes
    }

    /// Reads what follows the tar stream's end (at most `limit` bytes)
    /// into the hash; returns the layer's diff ID (`None` when more than
    /// `limit` bytes followed) and the uncompressed bytes read in all.
    pub(crate) fn finish(mut self, limit: u64) -> io::Result<(Option<String>, u64)> {
        let rest = io::copy(
            &mut (&mut self).take(limit.saturating_add(1)),
            &mut io::sink(),
        )?;
        let bytes = self.bytes;
        let diff_id = (rest <= limit).then(|| sha256_digest(self.hasher));
        Ok((diff_id, bytes))
    }
}

impl Read for Uncompressed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok((chunk, compressed))) => {
                    self.chunk = chunk;
                    self.pos = 0;
                    self.compressed = compressed;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        let bytes = &self.chunk[self.pos..self.pos + n];
        buf[..n].copy_from_slice(bytes);
        self.hasher.update(bytes);
        self.pos += n;
        self.bytes += n as u64;
        (self.progress)(self.bytes, self.compressed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compression() {
        for (media_type, expected) in [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
        ] {
            assert_eq!(
                Compression::of(media_type).unwrap(),
                expected,
                "{media_type}"
            );
        }
        assert!(Compression::of("application/vnd.oci.image.layer.v1.tar+bzip2").is_err());
        assert!(Compression::of("application/octet-stream").is_err());
    }

    #[test]
    fn gzip_round_trip_through_the_channel() {
        use std::io::Write;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let compressed = gz.finish().unwrap();
        let mut seen = 0;
        let mut progress = |n, _| seen = n;
        let (tx, mut reader) = Uncompressed::channel(&mut progress);
        let blob: Box<dyn Read + Send> = Box::new(io::Cursor::new(compressed.clone()));
        let handle = std::thread::spawn(move || decompress(blob, Compression::Gzip, tx));
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        let diff_id = reader.finish(u64::MAX - 1).unwrap().0.unwrap();
        let c = handle.join().unwrap().unwrap();
        assert_eq!(out, data);
        assert_eq!(diff_id, sha256_digest(Sha256::new_with_prefix(&data)));
        assert_eq!(c.size, compressed.len() as u64);
        assert_eq!(seen, data.len() as u64);
    }
}
