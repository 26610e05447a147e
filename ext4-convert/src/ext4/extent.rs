//! Extent trees: up to four extents live in the inode, more go into a tree
//! of 4 KiB blocks below an index in the inode.

use zerocopy::IntoBytes;

use super::data::BLOCK_SIZE;
use super::raw::{ExtentHeader, ExtentIndex, ExtentLeaf};
use crate::tree::Extent;

const MAGIC: u16 = 0xF30A;
const IN_INODE: usize = 4;
const PER_BLOCK: usize = (BLOCK_SIZE - 12) / 12;

/// Tree blocks needed for `extents` extents (0 when they fit in the inode).
pub(crate) fn tree_blocks(extents: usize) -> usize {
    let mut total = 0;
    let mut count = extents;
    while count > IN_INODE {
        count = count.div_ceil(PER_BLOCK);
        total += count;
    }
    total
}

fn header(entries: usize, max: usize, depth: u16) -> ExtentHeader {
    ExtentHeader {
        magic: MAGIC.into(),
        entries: (entries as u16).into(),
        max: (max as u16).into(),
        depth: depth.into(),
        generation: 0.into(),
    }
}

fn leaf(e: &Extent) -> ExtentLeaf {
    ExtentLeaf {
        block: e.logical.into(),
        len: (e.len as u16).into(),
        start_hi: 0.into(),
        start_lo: e.start.into(),
    }
}

fn index(first_logical: u32, child: u32) -> ExtentIndex {
    ExtentIndex {
        block: first_logical.into(),
        leaf_lo: child.into(),
        leaf_hi: 0.into(),
        unused: 0.into(),
    }
}

/// Builds the tree: the 60-byte `i_block` root and the tree blocks, which
/// the caller writes at `first_block`, `first_block + 1`, ... in order.
pub(crate) fn build(extents: &[Extent], first_block: u32) -> ([u8; 60], Vec<u8>) {
    let mut root = [0u8; 60];
    let mut blocks = Vec::new();
    // Each level: (first logical block, encoded entry) for the level above.
    let mut level: Vec<(u32, [u8; 12])> = extents
        .iter()
        .map(|e| {
            let mut b = [0u8; 12];
            b.copy_from_slice(leaf(e).as_bytes());
            (e.logical, b)
        })
        .collect();
    let mut depth = 0u16;
    let mut next_block = first_block;
    while level.len() > IN_INODE {
        let mut upper = Vec::with_capacity(level.len().div_ceil(PER_BLOCK));
        for chunk in level.chunks(PER_BLOCK) {
            let mut block = vec![0u8; BLOCK_SIZE];
            block[..12].copy_from_slice(header(chunk.len(), PER_BLOCK, depth).as_bytes());
            for (i, (_, entry)) in chunk.iter().enumerate() {
                block[12 + i * 12..24 + i * 12].copy_from_slice(entry);
            }
            blocks.extend_from_slice(&block);
            let mut b = [0u8; 12];
            b.copy_from_slice(index(chunk[0].0, next_block).as_bytes());
            upper.push((chunk[0].0, b));
            next_block += 1;
        }
        level = upper;
        depth += 1;
    }
    root[..12].copy_from_slice(header(level.len(), IN_INODE, depth).as_bytes());
    for (i, (_, entry)) in level.iter().enumerate() {
        root[12 + i * 12..24 + i * 12].copy_from_slice(entry);
    }
    (root, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extents(n: u32) -> Vec<Extent> {
        (0..n)
            .map(|i| Extent {
                logical: i * 2,
                start: 1000 + i * 3,
                len: 1,
            })
            .collect()
    }

    #[test]
    fn small_files_keep_extents_in_the_inode() {
        let (root, blocks) = build(&extents(4), 50);
        assert!(blocks.is_empty());
        assert_eq!(&root[..8], &[0x0a, 0xf3, 4, 0, 4, 0, 0, 0]);
        assert_eq!(tree_blocks(4), 0);
        let (root, _) = build(&[], 50);
        assert_eq!(&root[..8], &[0x0a, 0xf3, 0, 0, 4, 0, 0, 0]);
    }

    #[test]
    fn many_extents_build_a_tree_in_order() {
        for n in [5u32, 340, 341, 1360, 1361, 2000] {
            let (root, blocks) = build(&extents(n), 50);
            assert_eq!(blocks.len() / BLOCK_SIZE, tree_blocks(n as usize), "n={n}");
            let depth = u16::from_le_bytes([root[6], root[7]]);
            assert_eq!(depth, if n <= 1360 { 1 } else { 2 }, "n={n}");
            // The first leaf block starts at extent 0.
            assert_eq!(&blocks[12..16], &0u32.to_le_bytes());
            // The root's first child is the block written first at its level.
            let child = u32::from_le_bytes(root[16..20].try_into().unwrap());
            assert!(child >= 50);
        }
    }
}
