//! The ext4 writer: tar layers in, a finished file system out.

pub(crate) mod data;
mod dir;
mod extent;
mod htree;
mod inode;
mod layout;
mod raw;
pub(crate) mod xattr;

use std::io::{self, Read, Seek, Write};

use crate::apply::{self, Blocks};
use crate::error::{Error, Limit};
use crate::tree::{Extent, Tree};
use crate::{Limits, Result};
use data::{DataError, DataRegion, Disk, WriteSeek};

pub use data::BLOCK_SIZE as EXT4_BLOCK_SIZE;

/// Free space to leave in the file system, beyond what the content needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FreeSpace {
    /// None: a read-only root (the default).
    #[default]
    None,
    /// This many bytes (rounded up to whole blocks).
    Bytes(u64),
    /// This percentage of the whole file system (below 100).
    Percent(u32),
}

impl FreeSpace {
    fn blocks(self, used: u64) -> u64 {
        match self {
            Self::None => 0,
            Self::Bytes(b) => b.div_ceil(data::BLOCK_SIZE as u64),
            Self::Percent(p) => {
                let p = u64::from(p.min(99));
                (used * p).div_ceil(100 - p)
            }
        }
    }
}

impl std::str::FromStr for FreeSpace {
    type Err = String;

    /// `10%`, `512M`, `2G`, `4096` (bytes) or `0`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid free space {s:?} (expected e.g. 10%, 512M, 2G)");
        if let Some(p) = s.strip_suffix('%') {
            return match p.parse() {
                Ok(0) => Ok(Self::None),
                Ok(p) if p < 100 => Ok(Self::Percent(p)),
                _ => Err(bad()),
            };
        }
        let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, ""),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let shift = match unit {
            "" => 0,
            "K" | "k" => 10,
            "M" | "m" => 20,
            "G" | "g" => 30,
            _ => return Err(bad()),
        };
        let bytes = n
            .checked_shl(shift)
            .filter(|b| b >> shift == n)
            .ok_or_else(bad)?;
        Ok(if bytes == 0 {
            Self::None
        } else {
            Self::Bytes(bytes)
        })
    }
}

/// How to build the file system.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Free space beyond the content (default none).
    pub free_space: FreeSpace,
    /// Free inodes beyond the content (default 0; the inode table is
    /// rounded up to whole blocks, so a few are always free).
    pub free_inodes: u32,
    /// The file system UUID, also the directory hash seed (default all
    /// zero; [`crate::convert`] derives it from the manifest digest so the
    /// same image always gives the same bytes).
    pub uuid: [u8; 16],
    /// The volume label (at most 16 bytes are kept).
    pub label: String,
    /// Bounds on hostile input.
    pub limits: Limits,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Size of the file system (and of the output) in bytes.
    pub bytes: u64,
    /// Blocks in the file system.
    pub blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Inodes in the file system.
    pub inodes: u64,
    /// Inodes in use (the 10 reserved ones included).
    pub used_inodes: u64,
    /// Data blocks written for files a later entry or layer replaced; they
    /// are free in the result and count towards the requested free space.
    pub replaced_blocks: u64,
}

/// Builds an ext4 file system from tar layers, bottom layer first.
///
/// File data is written to `W` as it streams in; metadata when
/// [`Ext4Writer::finish`] is called. Regions of `W` that are never written
/// are holes of the file system (free blocks, sparse file ranges); `W` should
/// be empty (a new file or an empty `Cursor`).
#[derive(Debug)]
pub struct Ext4Writer<W: Write + Seek> {
    out: W,
    state: State,
}

#[derive(Debug)]
struct State {
    options: Options,
    tree: Tree,
    data: DataRegion,
    data_start: u64,
    pos: u64,
    layers: u32,
    layer_bytes: u64,
    sparse_budget: u64,
}

impl<W: Write + Seek> Ext4Writer<W> {
    /// A writer with nothing added yet.
    pub fn new(out: W, options: Options) -> Self {
        let max_blocks = max_blocks(&options.limits);
        let data_start = 1 + layout::gdt_blocks(max_blocks.max(1));
        let sparse_budget = options.limits.max_layer_bytes;
        Self {
            out,
            state: State {
                options,
                tree: Tree::new(),
                data: DataRegion::new(data_start),
                data_start,
                pos: 0,
                layers: 0,
                layer_bytes: 0,
                sparse_budget,
            },
        }
    }

    /// Applies the next layer, an uncompressed tar stream.
    ///
    /// Reads the tar archive up to its end-of-archive marker; the caller
    /// drains anything after it if it checks the stream's digest.
    ///
    /// # Errors
    ///
    /// A tar stream that cannot be read, an entry that cannot be applied
    /// ([`Error::Entry`]), an exceeded limit or a write error. The output is
    /// then unusable.
    pub fn add_layer<R: Read>(&mut self, tar: R) -> Result<()> {
        let mut tar = tar;
        self.state.add_layer(&mut self.out, &mut tar)
    }

    /// Writes the metadata and returns the output.
    ///
    /// # Errors
    ///
    /// A write error or a file system beyond the size limit.
    pub fn finish(mut self) -> Result<(W, Summary)> {
        let summary = self.state.finish(&mut self.out)?;
        self.out.flush().map_err(Error::Write)?;
        Ok((self.out, summary))
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

impl State {
    fn add_layer(&mut self, out: &mut dyn WriteSeek, tar: &mut dyn Read) -> Result<()> {
        let layer = self.layers;
        self.layers += 1;
        let limits = self.options.limits.clone();
        let mut counted = Counted {
            inner: tar,
            remaining: limits.max_layer_bytes.saturating_sub(self.layer_bytes),
            exceeded: false,
        };
        let mut disk = Disk::new(out, self.pos);
        let mut sink = Sink {
            data: &mut self.data,
            disk: &mut disk,
            max_block: max_blocks(&limits),
            layer,
            max_image_bytes: limits.max_image_bytes,
        };
        let result = apply::apply_layer(
            &mut self.tree,
            &mut sink,
            &limits,
            layer,
            &mut counted,
            &mut self.sparse_budget,
        );
        self.pos = disk.position();
        self.layer_bytes = limits.max_layer_bytes - counted.remaining;
        if counted.exceeded {
            return Err(Error::LimitExceeded {
                limit: Limit::LayerBytes,
                max: limits.max_layer_bytes,
            });
        }
        result
    }

    fn finish(&mut self, out: &mut dyn WriteSeek) -> Result<Summary> {
        let mut disk = Disk::new(out, self.pos);
        layout::finish(
            &mut self.tree,
            &mut self.data,
            &mut disk,
            &self.options,
            self.data_start,
        )
    }
}

/// Blocks the file system may have: the size limit, at most 2^32 (block
/// numbers are 32-bit without the `64bit` feature).
fn max_blocks(limits: &Limits) -> u64 {
    (limits.max_image_bytes / data::BLOCK_SIZE as u64).min(u64::from(u32::MAX))
}

/// Counts uncompressed bytes against [`Limits::max_layer_bytes`].
struct Counted<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
    exceeded: bool,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.remaining.checked_sub(n as u64) {
            Some(rest) => {
                self.remaining = rest;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(io::Error::other("layer byte limit exceeded"))
            }
        }
    }
}

struct Sink<'a, 'b> {
    data: &'a mut DataRegion,
    disk: &'a mut Disk<'b>,
    max_block: u64,
    layer: u32,
    max_image_bytes: u64,
}

impl Blocks for Sink<'_, '_> {
    fn write_file(&mut self, src: &mut dyn Read) -> Result<(u64, Vec<Extent>)> {
        self.data
            .write_file(self.disk, src, self.max_block)
            .map_err(|e| match e {
                DataError::Read(source) => Error::ReadLayer {
                    layer: self.layer as usize,
                    source,
                },
                DataError::Write(e) => Error::Write(e),
                DataError::Full => Error::LimitExceeded {
                    limit: Limit::ImageBytes,
                    max: self.max_image_bytes,
                },
            })
    }

    fn free(&mut self, extents: &[Extent]) {
        self.data.free(extents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_parses_units_and_percentages() {
        assert_eq!("10%".parse(), Ok(FreeSpace::Percent(10)));
        assert_eq!("512M".parse(), Ok(FreeSpace::Bytes(512 << 20)));
        assert_eq!("2G".parse(), Ok(FreeSpace::Bytes(2 << 30)));
        assert_eq!("4096".parse(), Ok(FreeSpace::Bytes(4096)));
        assert_eq!("0".parse(), Ok(FreeSpace::None));
        assert!("x".parse::<FreeSpace>().is_err());
        assert!("99999999999999999999G".parse::<FreeSpace>().is_err());
        assert!("100%".parse::<FreeSpace>().is_err());
        assert_eq!(FreeSpace::Percent(10).blocks(900), 100);
        assert_eq!(FreeSpace::Percent(50).blocks(1000), 1000);
        assert_eq!(FreeSpace::Bytes(1).blocks(0), 1);
    }
}
