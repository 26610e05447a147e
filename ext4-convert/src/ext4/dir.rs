//! Directory blocks: one linear block (`.`, `..`, entries in name order)
//! when everything fits, else an htree.

use zerocopy::IntoBytes;

use super::data::BLOCK_SIZE;
use super::htree::Htree;
use super::raw::DirEntry;

/// One directory entry to write.
#[derive(Debug)]
pub(crate) struct Dirent<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) inode: u32,
    pub(crate) file_type: u8,
}

pub(crate) fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// Whether the entries fit in one block.
pub(crate) fn entries_fit(entries: &[&Dirent<'_>]) -> bool {
    entries.iter().map(|e| rec_len(e.name.len())).sum::<usize>() <= BLOCK_SIZE
}

/// Writes entries that fit into one block; the last record spans the rest.
pub(crate) fn write_block(block: &mut [u8], entries: &[&Dirent<'_>]) {
    let mut off = 0;
    for (i, e) in entries.iter().enumerate() {
        let len = if i + 1 == entries.len() {
            BLOCK_SIZE - off
        } else {
            rec_len(e.name.len())
        };
        let header = DirEntry {
            inode: e.inode.into(),
            rec_len: (len as u16).into(),
            name_len: e.name.len() as u8,
            file_type: e.file_type,
        };
        block[off..off + 8].copy_from_slice(header.as_bytes());
        block[off + 8..off + 8 + e.name.len()].copy_from_slice(e.name);
        off += len;
    }
}

/// How a directory is stored.
pub(crate) enum Layout<'a> {
    Linear,
    Hashed(Htree<'a>),
}

/// Chooses the layout for `children` (sorted, without `.` and `..`).
pub(crate) fn plan<'a>(children: &'a [Dirent<'a>], seed: [u32; 4]) -> Layout<'a> {
    let size = 12
        + 12
        + children
            .iter()
            .map(|e| rec_len(e.name.len()))
            .sum::<usize>();
    if size <= BLOCK_SIZE {
        return Layout::Linear;
    }
    match Htree::plan(children, seed) {
        Some(tree) => Layout::Hashed(tree),
        None => Layout::Linear,
    }
}

impl Layout<'_> {
    /// Blocks the directory takes.
    pub(crate) fn blocks(&self, children: &[Dirent<'_>]) -> usize {
        match self {
            Self::Linear => linear(children, &mut |_, _| {}),
            Self::Hashed(tree) => tree.blocks(),
        }
    }

    /// Whether the inode gets `EXT4_INDEX_FL`.
    pub(crate) fn indexed(&self) -> bool {
        matches!(self, Self::Hashed(_))
    }

    /// The directory's bytes.
    pub(crate) fn encode(&self, children: &[Dirent<'_>], self_ino: u32, parent: u32) -> Vec<u8> {
        match self {
            Self::Hashed(tree) => tree.encode(self_ino, parent),
            Self::Linear => {
                let dot = Dirent {
                    name: b".",
                    inode: self_ino,
                    file_type: 2,
                };
                let dotdot = Dirent {
                    name: b"..",
                    inode: parent,
                    file_type: 2,
                };
                let all: Vec<&Dirent<'_>> = [&dot, &dotdot].into_iter().chain(children).collect();
                let blocks = linear(children, &mut |_, _| {});
                let mut out = vec![0u8; blocks * BLOCK_SIZE];
                linear(children, &mut |block, range| {
                    let bytes = &mut out[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE];
                    write_block(bytes, &all[range]);
                });
                out
            }
        }
    }
}

/// Packs `.`, `..` and `children` greedily into blocks; calls `emit(block,
/// range of entries in the `[., .., children...]` list)`; returns the count.
fn linear(children: &[Dirent<'_>], emit: &mut dyn FnMut(usize, std::ops::Range<usize>)) -> usize {
    let lens = [1usize, 2]
        .into_iter()
        .chain(children.iter().map(|e| e.name.len()));
    let mut block = 0;
    let mut start = 0;
    let mut used = 0;
    for (i, len) in lens.enumerate() {
        let rec = rec_len(len);
        if used + rec > BLOCK_SIZE {
            emit(block, start..i);
            block += 1;
            start = i;
            used = 0;
        }
        used += rec;
    }
    emit(block, start..children.len() + 2);
    block + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8]) -> Dirent<'_> {
        Dirent {
            name,
            inode: 12,
            file_type: 1,
        }
    }

    #[test]
    fn an_empty_directory_is_one_block() {
        let layout = plan(&[], [0; 4]);
        assert!(!layout.indexed());
        let blocks = layout.encode(&[], 2, 2);
        assert_eq!(blocks.len(), BLOCK_SIZE);
        assert_eq!(u16::from_le_bytes([blocks[16], blocks[17]]), 4096 - 12);
    }

    #[test]
    fn big_directories_are_hashed_and_every_leaf_is_filled_exactly() {
        let names: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        let children: Vec<Dirent<'_>> = names.iter().map(|n| entry(n)).collect();
        let layout = plan(&children, [0; 4]);
        assert!(layout.indexed());
        let bytes = layout.encode(&children, 2, 2);
        assert_eq!(bytes.len() / BLOCK_SIZE, layout.blocks(&children));
        let mut seen = 0;
        for block in bytes.chunks(BLOCK_SIZE).skip(1) {
            let mut off = 0;
            while off < BLOCK_SIZE {
                let rec = u16::from_le_bytes([block[off + 4], block[off + 5]]) as usize;
                assert!(rec >= 12 && rec.is_multiple_of(4));
                off += rec;
                seen += 1;
            }
            assert_eq!(off, BLOCK_SIZE);
        }
        assert_eq!(seen, children.len());
    }

    #[test]
    fn linear_packing_spills_into_more_blocks() {
        let names: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        let children: Vec<Dirent<'_>> = names.iter().map(|n| entry(n)).collect();
        let bytes = Layout::Linear.encode(&children, 2, 2);
        assert_eq!(bytes.len() / BLOCK_SIZE, 3);
    }
}
