//! Stream an OCI image straight into a bootable ext4 disk image.
//!
//! No `mkfs`, no loop mount, no unpack directory, no root: layers are read
//! once, in order, and file data goes straight to its final place in the
//! image while later layers may still delete or replace it. Whiteouts and
//! opaque directories are applied as umoci and containerd apply them; the
//! result is deterministic (same image, same bytes) and sized exactly from
//! the content plus the free space asked for.
//!
//! ```no_run
//! use kiln_ext4::{Image, OciLayout, Options, Selector, convert};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layout = OciLayout::open("image-dir")?;
//! let image = Image::resolve(&layout, &Selector::default())?;
//! let out = std::fs::File::create("rootfs.ext4")?;
//! let (_, summary) = convert(&layout, &image, out, Options::default(), &mut |_| {})?;
//! println!("{} bytes", summary.bytes);
//! std::fs::write("rootfs.json", image.run_config_json())?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every failure is an [`Error`]. Images that are not runnable (BuildKit
//! cache manifests, artifacts) give [`Error::NotRunnableImage`], so a
//! registry converting everything pushed to it can skip them. Entries that
//! ext4 cannot hold, or that would escape the root, give [`Error::Entry`];
//! [`Limits`] bound everything that hostile input could inflate.

#![forbid(unsafe_code)]

mod apply;
mod convert;
mod error;
mod ext4;
mod image;
mod layer;
mod source;
mod tree;

pub use convert::{Progress, convert};
pub use error::{EntryError, Error, Limit, Result};
pub use ext4::{EXT4_BLOCK_SIZE, Ext4Writer, FreeSpace, Options, Summary};
pub use image::{Image, Platform, Reference, RunConfig, Selector};
pub use source::{BlobSource, OciLayout};

/// Bounds on what an image may make the converter do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Uncompressed tar bytes over all layers (default 64 GiB).
    pub max_layer_bytes: u64,
    /// Size of the resulting file system (default 64 GiB; at most 16 TiB).
    pub max_image_bytes: u64,
    /// Files, directories and links created over all layers (default 8 Mi).
    pub max_inodes: u32,
    /// Path components below the root (default 512).
    pub max_path_depth: u32,
    /// Size of a manifest, index or config (default 4 MiB).
    pub max_document_bytes: u64,
    /// Layers of an image (default 512; Docker's overlay storage stops at
    /// 128).
    pub max_layers: u32,
    /// Bytes of names, symlink targets and xattrs taken in over all layers
    /// (default 1 GiB): what the converter holds in memory beyond a fixed
    /// size per inode.
    pub max_metadata_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_layer_bytes: 64 << 30,
            max_image_bytes: 64 << 30,
            max_inodes: 8 << 20,
            max_path_depth: 512,
            max_document_bytes: 4 << 20,
            max_layers: 512,
            max_metadata_bytes: 1 << 30,
        }
    }
}
