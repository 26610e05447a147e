//! Hashed (htree) directories for directories larger than one block: a
//! `dx_root` block, leaf blocks holding the entries in hash order, and one
//! level of index blocks when the root's 508 slots are not enough.

use zerocopy::IntoBytes;

use super::data::BLOCK_SIZE;
use super::dir::{Dirent, entries_fit, write_block};
use super::raw::{DirEntry, DxCountLimit, DxRootInfo};

/// `DX_HASH_HALF_MD4` (signed characters, as `EXT2_FLAGS_SIGNED_HASH`).
pub(crate) const HASH_VERSION: u8 = 1;
const ROOT_LIMIT: usize = (BLOCK_SIZE - 32) / 8;
const NODE_LIMIT: usize = (BLOCK_SIZE - 8) / 8;

/// The kernel's default seed when the superblock's is all zero.
const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// `str2hashbuf_signed`: 32 name bytes into 8 words, padded with the
/// length.
fn hash_block(chunk: &[u8], remaining: usize) -> [u32; 8] {
    let len = remaining as u32 & 0xff;
    let pad = len | (len << 8) | (len << 16) | (len << 24);
    let mut out = [pad; 8];
    for (word, bytes) in out.iter_mut().zip(chunk.chunks(4)) {
        let mut val = pad;
        for &b in bytes {
            val = (b as i8 as i32 as u32).wrapping_add(val << 8);
        }
        *word = val;
    }
    out
}

/// `half_md4_transform`.
fn half_md4(buf: &mut [u32; 4], input: &[u32; 8]) {
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    let round = |f: &dyn Fn(u32, u32, u32) -> u32, a: u32, b: u32, c: u32, d: u32, x: u32, s| {
        a.wrapping_add(f(b, c, d)).wrapping_add(x).rotate_left(s)
    };
    for i in [0, 4] {
        a = round(&f, a, b, c, d, input[i], 3);
        d = round(&f, d, a, b, c, input[i + 1], 7);
        c = round(&f, c, d, a, b, input[i + 2], 11);
        b = round(&f, b, c, d, a, input[i + 3], 19);
    }
    for i in [1, 0] {
        a = round(&g, a, b, c, d, input[i].wrapping_add(K2), 3);
        d = round(&g, d, a, b, c, input[i + 2].wrapping_add(K2), 5);
        c = round(&g, c, d, a, b, input[i + 4].wrapping_add(K2), 9);
        b = round(&g, b, c, d, a, input[i + 6].wrapping_add(K2), 13);
    }
    for i in [3, 1] {
        a = round(&h, a, b, c, d, input[i].wrapping_add(K3), 3);
        d = round(&h, d, a, b, c, input[i + 4].wrapping_add(K3), 9);
        c = round(&h, c, d, a, b, input[i - 1].wrapping_add(K3), 11);
        b = round(&h, b, c, d, a, input[i + 3].wrapping_add(K3), 15);
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// `ext4fs_dirhash` with half-MD4: the major hash (low bit clear).
pub(crate) fn name_hash(name: &[u8], seed: [u32; 4]) -> u32 {
    let mut buf = if seed == [0; 4] { DEFAULT_SEED } else { seed };
    let mut remaining = name.len();
    for chunk in name.chunks(32) {
        half_md4(&mut buf, &hash_block(chunk, remaining));
        remaining -= chunk.len();
    }
    let hash = buf[1] & !1;
    if hash == 0x7fff_ffff << 1 {
        (0x7fff_ffff - 1) << 1
    } else {
        hash
    }
}

/// An htree directory's shape: entries in hash order cut into leaves.
pub(crate) struct Htree<'a> {
    /// `(hash, entry)` sorted by hash then name.
    entries: Vec<(u32, &'a Dirent<'a>)>,
    /// Start index in `entries` of each leaf.
    leaves: Vec<usize>,
    /// Index blocks below the root (0 = the root indexes leaves itself).
    nodes: usize,
}

impl<'a> Htree<'a> {
    /// Plans the tree for `children` (without `.` and `..`); `None` if it
    /// would need more than two index levels.
    pub(crate) fn plan(children: &'a [Dirent<'a>], seed: [u32; 4]) -> Option<Self> {
        let mut entries: Vec<(u32, &Dirent<'_>)> = children
            .iter()
            .map(|e| (name_hash(e.name, seed), e))
            .collect();
        entries.sort_by(|a, b| (a.0, a.1.name).cmp(&(b.0, b.1.name)));
        let mut leaves = vec![0];
        let mut used = 0;
        for (i, (_, e)) in entries.iter().enumerate() {
            let len = super::dir::rec_len(e.name.len());
            if used + len > BLOCK_SIZE {
                leaves.push(i);
                used = 0;
            }
            used += len;
        }
        let nodes = if leaves.len() <= ROOT_LIMIT {
            0
        } else {
            leaves.len().div_ceil(NODE_LIMIT)
        };
        (nodes <= ROOT_LIMIT).then_some(Self {
            entries,
            leaves,
            nodes,
        })
    }

    /// Blocks: root, leaves, index nodes.
    pub(crate) fn blocks(&self) -> usize {
        1 + self.leaves.len() + self.nodes
    }

    /// The index hash of leaf `i`: its first entry's hash, with the low
    /// ("continued collision") bit set when the previous leaf ends with the
    /// same hash.
    fn leaf_hash(&self, i: usize) -> u32 {
        let start = self.leaves[i];
        let hash = self.entries[start].0;
        if i > 0 && self.entries[start - 1].0 == hash {
            hash | 1
        } else {
            hash
        }
    }

    /// Encodes the directory; `self_ino`/`parent` fill `.` and `..`.
    pub(crate) fn encode(&self, self_ino: u32, parent: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.blocks() * BLOCK_SIZE];
        // Leaves at logical blocks 1..=leaves.
        for (i, &start) in self.leaves.iter().enumerate() {
            let end = self
                .leaves
                .get(i + 1)
                .copied()
                .unwrap_or(self.entries.len());
            let block: Vec<&Dirent<'_>> =
                self.entries[start..end].iter().map(|(_, e)| *e).collect();
            debug_assert!(entries_fit(&block));
            write_block(&mut out[(1 + i) * BLOCK_SIZE..(2 + i) * BLOCK_SIZE], &block);
        }
        // (hash, logical block) of what the root points at.
        let leaf_refs: Vec<(u32, u32)> = (0..self.leaves.len())
            .map(|i| (self.leaf_hash(i), 1 + i as u32))
            .collect();
        let root_refs = if self.nodes == 0 {
            leaf_refs
        } else {
            let first_node = 1 + self.leaves.len();
            leaf_refs
                .chunks(NODE_LIMIT)
                .enumerate()
                .map(|(n, chunk)| {
                    let block = first_node + n;
                    let area = &mut out[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE];
                    let fake = DirEntry {
                        inode: 0.into(),
                        rec_len: (BLOCK_SIZE as u16).into(),
                        name_len: 0,
                        file_type: 0,
                    };
                    area[..8].copy_from_slice(fake.as_bytes());
                    write_index(&mut area[8..], NODE_LIMIT, chunk);
                    (chunk[0].0, block as u32)
                })
                .collect()
        };
        // The root: `.`, `..` spanning the block, dx_root_info, entries.
        let root = &mut out[..BLOCK_SIZE];
        let dot = DirEntry {
            inode: self_ino.into(),
            rec_len: 12.into(),
            name_len: 1,
            file_type: 2,
        };
        root[..8].copy_from_slice(dot.as_bytes());
        root[8] = b'.';
        let dotdot = DirEntry {
            inode: parent.into(),
            rec_len: ((BLOCK_SIZE - 12) as u16).into(),
            name_len: 2,
            file_type: 2,
        };
        root[12..20].copy_from_slice(dotdot.as_bytes());
        root[20..22].copy_from_slice(b"..");
        let info = DxRootInfo {
            reserved_zero: 0.into(),
            hash_version: HASH_VERSION,
            info_length: 8,
            indirect_levels: u8::from(self.nodes > 0),
            unused_flags: 0,
        };
        root[24..32].copy_from_slice(info.as_bytes());
        write_index(&mut root[32..], ROOT_LIMIT, &root_refs);
        out
    }
}

/// `dx_countlimit` then `dx_entry`s; the first entry's hash slot holds the
/// count and limit (its hash is implicitly 0).
fn write_index(area: &mut [u8], limit: usize, refs: &[(u32, u32)]) {
    let countlimit = DxCountLimit {
        limit: (limit as u16).into(),
        count: (refs.len() as u16).into(),
    };
    area[..4].copy_from_slice(countlimit.as_bytes());
    for (i, (hash, block)) in refs.iter().enumerate() {
        let at = i * 8;
        if i > 0 {
            area[at..at + 4].copy_from_slice(&hash.to_le_bytes());
        }
        area[at + 4..at + 8].copy_from_slice(&block.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        // Values from e2fsprogs' `debugfs -R "dx_hash -h half_md4 NAME"`
        // (signed, default seed), checked in the integration tests by
        // e2fsck on real directories; here: stable and low bit clear.
        let h = name_hash(b"lost+found", [0; 4]);
        assert_eq!(h & 1, 0);
        assert_ne!(name_hash(b"a", [0; 4]), name_hash(b"b", [0; 4]));
        assert_eq!(name_hash(b"a", [0; 4]), name_hash(b"a", DEFAULT_SEED));
        let long = [b'x'; 255];
        assert_eq!(name_hash(&long, [1, 2, 3, 4]) & 1, 0);
    }

    #[test]
    fn big_directories_get_two_levels() {
        let names: Vec<Vec<u8>> = (0..200_000)
            .map(|i| format!("f{i:07}").into_bytes())
            .collect();
        let children: Vec<Dirent<'_>> = names
            .iter()
            .map(|n| Dirent {
                name: n,
                inode: 12,
                file_type: 1,
            })
            .collect();
        let tree = Htree::plan(&children, [0; 4]).unwrap();
        assert!(tree.nodes > 0);
        let bytes = tree.encode(2, 2);
        assert_eq!(bytes.len(), tree.blocks() * BLOCK_SIZE);
        assert_eq!(bytes[24 + 6], 1, "indirect_levels");
    }
}
