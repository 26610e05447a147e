//! The whole conversion: an image's layers, verified, into an ext4 writer.

use std::io::{self, Read, Seek, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::ext4::{Ext4Writer, Options, Summary};
use crate::image::Image;
use crate::layer::{Compression, Uncompressed, decompress};
use crate::source::{BlobSource, check_algorithm};

/// Where a conversion is, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The layer being applied (0 = bottom).
    pub layer: usize,
    /// Layers in the image.
    pub layers: usize,
    /// Compressed bytes of this layer read so far.
    pub layer_bytes_read: u64,
    /// Compressed bytes read in earlier layers.
    pub earlier_bytes_read: u64,
    /// Uncompressed bytes of this layer applied so far.
    pub layer_bytes_applied: u64,
}

/// Converts `image` from `source` into an ext4 file system written to `out`.
///
/// Layers are read once, bottom first; each is decompressed on a helper
/// thread while the previous megabytes are written. Every layer's blob
/// digest and size and its `diff_id` are checked. When `options.uuid` is
/// all zero it is derived from the manifest digest, so converting the same
/// image twice gives identical bytes.
///
/// # Errors
///
/// Any [`Error`]; the output is then incomplete and must be discarded.
pub fn convert<W: Write + Seek>(
    source: &dyn BlobSource,
    image: &Image,
    out: W,
    mut options: Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(W, Summary)> {
    if options.uuid == [0; 16] {
        options.uuid = uuid_for(image.manifest_digest().as_ref());
    }
    let max_layer_bytes = options.limits.max_layer_bytes;
    // Uncompressed bytes read over all layers, what follows a tar stream's
    // end included: every layer's reading comes out of one budget.
    let mut used = 0u64;
    let mut writer = Ext4Writer::new(out, options);
    let layers = image.layers().len();
    let mut earlier = 0;
    for (index, (layer, diff_id)) in image.layers().iter().zip(image.diff_ids()).enumerate() {
        let compression = Compression::of(layer.media_type().as_ref())?;
        check_algorithm(layer.digest())?;
        let blob = source
            .open_blob(layer.digest())
            .map_err(|source| Error::ReadBlob {
                digest: layer.digest().to_string(),
                source,
            })?;
        let read_err = |source| Error::ReadLayer {
            layer: index,
            source,
        };
        let mut report = |applied, read| {
            progress(&Progress {
                layer: index,
                layers,
                layer_bytes_read: read,
                earlier_bytes_read: earlier,
                layer_bytes_applied: applied,
            });
        };
        let (applied, actual_diff_id, compressed) = std::thread::scope(|s| {
            let (tx, mut reader) = Uncompressed::channel(&mut report);
            let helper = s.spawn(move || decompress(blob, compression, tx));
            let applied = writer.add_layer(&mut reader);
            let left = max_layer_bytes.saturating_sub(used.saturating_add(reader.read_so_far()));
            let diff_id = match &applied {
                Ok(()) => Some(reader.finish(left)),
                // An unreadable tar stream is most often a corrupt blob:
                // read on (boundedly) so the digest check can say so.
                Err(Error::ReadLayer { .. }) => {
                    let _ = std::io::copy(&mut (&mut reader).take(left), &mut std::io::sink());
                    drop(reader);
                    None
                }
                Err(_) => {
                    drop(reader);
                    None
                }
            };
            let compressed = helper
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("decompression thread panicked")));
            (applied, diff_id, compressed)
        });
        if let (Err(applied), Ok(c)) = (&applied, &compressed)
            && matches!(applied, Error::ReadLayer { .. })
            && c.digest != layer.digest().to_string()
        {
            return Err(Error::DigestMismatch {
                expected: layer.digest().to_string(),
                actual: c.digest.clone(),
            });
        }
        applied?;
        let compressed = compressed.map_err(read_err)?;
        let (actual_diff_id, read) = actual_diff_id
            .unwrap_or_else(|| Ok((Some(String::new()), 0)))
            .map_err(read_err)?;
        used = used.saturating_add(read);
        let Some(actual_diff_id) = actual_diff_id else {
            return Err(Error::LimitExceeded {
                limit: crate::error::Limit::LayerBytes,
                max: max_layer_bytes,
            });
        };
        if compressed.size != layer.size() {
            return Err(Error::SizeMismatch {
                digest: layer.digest().to_string(),
                expected: layer.size(),
                actual: compressed.size,
            });
        }
        if compressed.digest != layer.digest().to_string() {
            return Err(Error::DigestMismatch {
                expected: layer.digest().to_string(),
                actual: compressed.digest,
            });
        }
        if &actual_diff_id != diff_id {
            return Err(Error::DiffIdMismatch {
                layer: index,
                expected: diff_id.clone(),
                actual: actual_diff_id,
            });
        }
        earlier += compressed.size;
    }
    writer.finish()
}

/// A version-4-shaped UUID derived from the manifest digest.
fn uuid_for(digest: &str) -> [u8; 16] {
    let hash = Sha256::new_with_prefix(digest.as_bytes()).finalize();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&hash[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}
