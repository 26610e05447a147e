//! File data as it streams in: allocated block by block from the front of
//! the data region, all-zero blocks left as holes.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::tree::{Extent, MAX_EXTENT_LEN};

/// ext4 block size used for every image.
pub const BLOCK_SIZE: usize = 4096;

/// `Write + Seek` as one object-safe trait, so the byte-moving code is not
/// generic.
pub(crate) trait WriteSeek: Write + Seek {}
impl<T: Write + Seek + ?Sized> WriteSeek for T {}

/// One bit per block: set = in use.
#[derive(Debug, Default)]
pub(crate) struct BlockBitmap {
    words: Vec<u64>,
}

impl BlockBitmap {
    pub(crate) fn set_range(&mut self, start: u64, len: u64, used: bool) {
        for block in start..start + len {
            let word = (block / 64) as usize;
            if word >= self.words.len() {
                if !used {
                    continue;
                }
                self.words.resize(word + 1, 0);
            }
            let bit = 1u64 << (block % 64);
            if used {
                self.words[word] |= bit;
            } else {
                self.words[word] &= !bit;
            }
        }
    }

    pub(crate) fn is_set(&self, block: u64) -> bool {
        self.words
            .get((block / 64) as usize)
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    /// Blocks in use in `start..end`.
    pub(crate) fn count(&self, start: u64, end: u64) -> u64 {
        (start..end).filter(|&b| self.is_set(b)).count() as u64
    }

    /// The bitmap of blocks `start..start + 8 * out.len()`, as ext4 stores it.
    pub(crate) fn copy_bits(&self, start: u64, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let mut value = 0u8;
            for bit in 0..8 {
                if self.is_set(start + (i * 8 + bit) as u64) {
                    value |= 1 << bit;
                }
            }
            *byte = value;
        }
    }
}

/// The output with its current position, so writes in order never seek.
pub(crate) struct Disk<'a> {
    out: &'a mut dyn WriteSeek,
    pos: u64,
}

impl<'a> Disk<'a> {
    pub(crate) fn new(out: &'a mut dyn WriteSeek, pos: u64) -> Self {
        Self { out, pos }
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset != self.pos {
            self.out.seek(SeekFrom::Start(offset))?;
        }
        self.out.write_all(data)?;
        self.pos = offset + data.len() as u64;
        Ok(())
    }

    pub(crate) fn write_block(&mut self, block: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(block * BLOCK_SIZE as u64, data)
    }
}

/// Allocates data blocks in streaming order.
#[derive(Debug)]
pub(crate) struct DataRegion {
    pub(crate) bitmap: BlockBitmap,
    /// Next block to hand out; everything below is allocated or was freed.
    pub(crate) next: u64,
    /// Blocks freed again because a later entry or layer replaced the file.
    pub(crate) dead: u64,
    buf: Vec<u8>,
}

/// Bytes read from a file's stream per step.
const CHUNK: usize = 256 * 1024;

impl DataRegion {
    pub(crate) fn new(first_block: u64) -> Self {
        Self {
            bitmap: BlockBitmap::default(),
            next: first_block,
            dead: 0,
            buf: vec![0; CHUNK],
        }
    }

    /// Frees the blocks of a file that lost its last name.
    pub(crate) fn free(&mut self, extents: &[Extent]) {
        for e in extents {
            self.bitmap
                .set_range(u64::from(e.start), u64::from(e.len), false);
            self.dead += u64::from(e.len);
        }
    }

    /// Copies a file's content from `src` to newly allocated blocks.
    /// Returns its size and extents; `max_block` bounds the allocation.
    pub(crate) fn write_file(
        &mut self,
        disk: &mut Disk<'_>,
        src: &mut dyn Read,
        max_block: u64,
    ) -> Result<(u64, Vec<Extent>), DataError> {
        let mut size = 0u64;
        let mut extents: Vec<Extent> = Vec::new();
        let mut logical = 0u64;
        loop {
            let n = read_full(src, &mut self.buf).map_err(DataError::Read)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            // Pad the last partial block with zeros: the block is written
            // whole, so the output never depends on what W held before.
            let padded = n.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
            self.buf[n..padded].fill(0);
            let mut i = 0;
            while i < padded {
                if is_zero(&self.buf[i..i + BLOCK_SIZE]) {
                    i += BLOCK_SIZE;
                    logical += 1;
                    if logical > u64::from(u32::MAX) {
                        return Err(DataError::Full);
                    }
                    continue;
                }
                let mut j = i + BLOCK_SIZE;
                while j < padded && !is_zero(&self.buf[j..j + BLOCK_SIZE]) {
                    j += BLOCK_SIZE;
                }
                let count = ((j - i) / BLOCK_SIZE) as u64;
                if self.next + count > max_block || logical + count > u64::from(u32::MAX) {
                    return Err(DataError::Full);
                }
                disk.write_block(self.next, &self.buf[i..j])
                    .map_err(DataError::Write)?;
                self.bitmap.set_range(self.next, count, true);
                push_extent(&mut extents, logical, self.next, count);
                self.next += count;
                logical += count;
                i = j;
            }
            if n < self.buf.len() {
                break;
            }
        }
        Ok((size, extents))
    }
}

/// Why [`DataRegion::write_file`] stopped.
#[derive(Debug)]
pub(crate) enum DataError {
    Read(io::Error),
    Write(io::Error),
    Full,
}

/// Appends `count` blocks at `logical`→`start`, merging with the last extent
/// when contiguous and splitting at ext4's maximum extent length.
pub(crate) fn push_extent(extents: &mut Vec<Extent>, logical: u64, start: u64, count: u64) {
    let (mut logical, mut start, mut count) = (logical as u32, start as u32, count as u32);
    if let Some(last) = extents.last_mut()
        && last.logical + last.len == logical
        && last.start + last.len == start
    {
        let room = (MAX_EXTENT_LEN - last.len).min(count);
        last.len += room;
        logical += room;
        start += room;
        count -= room;
    }
    while count > 0 {
        let len = count.min(MAX_EXTENT_LEN);
        extents.push(Extent {
            logical,
            start,
            len,
        });
        logical += len;
        start += len;
        count -= len;
    }
}

fn is_zero(block: &[u8]) -> bool {
    let (chunks, rest) = block.as_chunks::<16>();
    chunks.iter().all(|c| u128::from_ne_bytes(*c) == 0) && rest.iter().all(|&b| b == 0)
}

/// Reads until `buf` is full or the stream ends.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn zero_blocks_become_holes_and_runs_merge() {
        let mut data = vec![0u8; 5 * BLOCK_SIZE + 10];
        data[0] = 1;
        data[BLOCK_SIZE] = 2;
        data[4 * BLOCK_SIZE + 5] = 3;
        data[5 * BLOCK_SIZE + 9] = 4;
        let mut out = Cursor::new(Vec::new());
        let mut disk = Disk::new(&mut out, 0);
        let mut region = DataRegion::new(10);
        let (size, extents) = region
            .write_file(&mut disk, &mut Cursor::new(&data), 1000)
            .unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(
            extents,
            [
                Extent {
                    logical: 0,
                    start: 10,
                    len: 2
                },
                Extent {
                    logical: 4,
                    start: 12,
                    len: 2
                }
            ]
        );
        let written = out.into_inner();
        assert_eq!(written.len(), 14 * BLOCK_SIZE);
        assert_eq!(written[13 * BLOCK_SIZE + 9], 4);
        assert_eq!(region.next, 14);
    }

    #[test]
    fn extents_split_at_the_maximum_length() {
        let mut extents = Vec::new();
        push_extent(&mut extents, 0, 100, 40000);
        push_extent(&mut extents, 40000, 40100, 30000);
        assert_eq!(extents.len(), 3);
        assert_eq!(extents[0].len, MAX_EXTENT_LEN);
        assert_eq!(extents[1].len, MAX_EXTENT_LEN);
        assert_eq!(extents.iter().map(|e| e.len).sum::<u32>(), 70000);
    }

    #[test]
    fn bitmap_counts_and_clears() {
        let mut bitmap = BlockBitmap::default();
        bitmap.set_range(60, 10, true);
        bitmap.set_range(62, 2, false);
        assert_eq!(bitmap.count(0, 200), 8);
        let mut bytes = [0u8; 16];
        bitmap.copy_bits(56, &mut bytes);
        assert_eq!(bytes[0], 0b0011_0000);
        assert_eq!(bytes[1], 0b0011_1111);
    }
}
