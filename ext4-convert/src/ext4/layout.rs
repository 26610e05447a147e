//! Finishing the file system: once every layer is applied, number the
//! inodes, place directories, long symlinks, xattr blocks and extent trees
//! after the file data, size the block groups exactly, and write inode
//! tables, bitmaps, group descriptors and the superblock.
//!
//! Layout (4 KiB blocks, `flex_bg`, no journal, `sparse_super2` with no
//! backups):
//!
//! ```text
//! 0: boot + superblock | 1..: group descriptors | reserved for more |
//! file data (streamed) | dirs, symlinks, xattrs, extent trees |
//! inode tables | inode bitmaps | block bitmaps | free space
//! ```

use std::collections::VecDeque;

use zerocopy::{FromZeros, IntoBytes};

use super::data::{BLOCK_SIZE, DataRegion, Disk, push_extent};
use super::dir::{self, Dirent};
use super::inode::{self, FAST_SYMLINK_MAX, Placed};
use super::raw::{GroupDesc, SuperBlock};
use super::{Options, Summary, extent, xattr};
use crate::Result;
use crate::error::{Error, Limit};
use crate::tree::{Extent, Kind, Meta, NodeId, ROOT, Tree};

pub(crate) const BLOCKS_PER_GROUP: u64 = 32768;
const INODE_SIZE: u64 = 256;
const INODES_PER_BLOCK: u64 = BLOCK_SIZE as u64 / INODE_SIZE;
const DESC_SIZE: u64 = 32;
const FIRST_INO: u32 = 11;
const ROOT_INO: u32 = 2;
/// `EXT4_LINK_MAX`; directories with more subdirectories count 1 (`dir_nlink`).
const LINK_MAX: u32 = 65000;

const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;

/// Group descriptor blocks needed for `blocks` blocks.
pub(crate) fn gdt_blocks(blocks: u64) -> u64 {
    (blocks.div_ceil(BLOCKS_PER_GROUP) * DESC_SIZE).div_ceil(BLOCK_SIZE as u64)
}

/// One inode's placement.
struct Plan {
    node: NodeId,
    /// The parent directory's inode number (directories only).
    parent: u32,
    placed: Placed,
    /// First block of what this inode owns outside the data region.
    first: u64,
}

struct Geometry {
    groups: u64,
    inodes_per_group: u64,
    table_blocks: u64,
    blocks: u64,
    tables_at: u64,
    inode_bitmaps_at: u64,
    block_bitmaps_at: u64,
}

/// Writes everything but the file data; `data_start` is where the data
/// region began (the blocks before it are reserved for descriptors).
pub(crate) fn finish(
    tree: &mut Tree,
    data: &mut DataRegion,
    disk: &mut Disk<'_>,
    options: &Options,
    data_start: u64,
) -> Result<Summary> {
    match tree.lookup(ROOT, b"lost+found") {
        None => {
            let meta = Meta {
                perm: 0o700,
                ..Meta::default()
            };
            let node = tree.push(meta, Kind::Dir(Default::default()));
            tree.link(ROOT, b"lost+found", node, u32::MAX);
        }
        Some(e) if matches!(tree.node(e.node).kind, Kind::Dir(_)) => {}
        Some(_) => return Err(Error::LostFoundNotADirectory),
    }
    let (numbers, order) = number(tree);
    let used_inodes = u64::from(FIRST_INO) - 1 + order.len() as u64;

    // Place what each inode owns beyond its file data.
    let seed = hash_seed(options);
    let mut cursor = data.next;
    let mut plans = Vec::with_capacity(order.len() + 1);
    for &(node, parent) in std::iter::once(&(ROOT, ROOT)).chain(order.iter()) {
        let plan = place(tree, node, numbers[parent as usize], seed, &mut cursor);
        plans.push(plan);
    }
    let meta_end = cursor;

    let geometry = geometry(options, used_inodes, meta_end, data.dead)?;
    let gdt = gdt_blocks(geometry.blocks);
    if 1 + gdt > data_start {
        return Err(Error::LimitExceeded {
            limit: Limit::ImageBytes,
            max: options.limits.max_image_bytes,
        });
    }
    let bitmap = &mut data.bitmap;
    bitmap.set_range(0, 1 + gdt, true);
    bitmap.set_range(
        data.next,
        geometry.block_bitmaps_at + geometry.groups - data.next,
        true,
    );

    // Directory, symlink, xattr and extent tree blocks, in placement order.
    let write = |disk: &mut Disk<'_>, block: u64, bytes: &[u8]| {
        disk.write_block(block, bytes).map_err(Error::Write)
    };
    for plan in &plans {
        let node = tree.node(plan.node);
        let mut at = plan.first;
        match &node.kind {
            Kind::Dir(entries) => {
                let children = children(tree, entries, &numbers);
                let layout = dir::plan(&children, seed);
                let self_ino = numbers[plan.node as usize];
                let blocks = layout.encode(&children, self_ino, plan.parent);
                write(disk, at, &blocks)?;
                at += (blocks.len() / BLOCK_SIZE) as u64;
                at += write_tree(disk, contiguous_extents(plan.first, blocks.len()), at)?;
            }
            Kind::File { extents, .. } => at += write_tree(disk, extents.clone(), at)?,
            Kind::Symlink(target) if target.len() > FAST_SYMLINK_MAX => {
                let mut block = vec![0u8; BLOCK_SIZE];
                block[..target.len()].copy_from_slice(target);
                write(disk, at, &block)?;
                at += 1;
            }
            _ => {}
        }
        debug_assert!(plan.placed.xattr_block == 0 || u64::from(plan.placed.xattr_block) == at);
        if plan.placed.xattr_block != 0 {
            let at = u64::from(plan.placed.xattr_block);
            write(disk, at, &xattr::encode_block(&node.meta.xattrs))?;
        }
    }

    // Inode tables.
    let ipg = geometry.inodes_per_group;
    let mut used_dirs = vec![0u64; geometry.groups as usize];
    let mut table = vec![0u8; (ipg * INODE_SIZE) as usize];
    let mut by_ino = plans.iter().peekable();
    for group in 0..geometry.groups {
        table.fill(0);
        let first_ino = group * ipg + 1;
        while let Some(plan) = by_ino.peek() {
            let ino = u64::from(numbers[plan.node as usize]);
            if ino >= first_ino + ipg {
                break;
            }
            let node = tree.node(plan.node);
            if matches!(node.kind, Kind::Dir(_)) {
                used_dirs[((ino - 1) / ipg) as usize] += 1;
            }
            let raw = inode::encode(node, &plan.placed);
            let off = ((ino - first_ino) * INODE_SIZE) as usize;
            table[off..off + INODE_SIZE as usize].copy_from_slice(raw.as_bytes());
            by_ino.next();
        }
        write(
            disk,
            geometry.tables_at + group * geometry.table_blocks,
            &table,
        )?;
    }

    // Inode bitmaps, then block bitmaps.
    let mut block = vec![0u8; BLOCK_SIZE];
    let mut free_inodes = Vec::with_capacity(geometry.groups as usize);
    for group in 0..geometry.groups {
        block.fill(0);
        let first = group * ipg + 1;
        let used = used_inodes.saturating_sub(first - 1).min(ipg);
        free_inodes.push(ipg - used);
        set_bits(&mut block, 0, used);
        set_bits(&mut block, ipg, BLOCK_SIZE as u64 * 8);
        write(disk, geometry.inode_bitmaps_at + group, &block)?;
    }
    let mut free_blocks = Vec::with_capacity(geometry.groups as usize);
    for group in 0..geometry.groups {
        let start = group * BLOCKS_PER_GROUP;
        let end = (start + BLOCKS_PER_GROUP).min(geometry.blocks);
        bitmap.copy_bits(start, &mut block);
        set_bits(&mut block, end - start, BLOCKS_PER_GROUP);
        free_blocks.push(end - start - bitmap.count(start, end));
        write(disk, geometry.block_bitmaps_at + group, &block)?;
    }

    // Group descriptors.
    let mut gdt_bytes = vec![0u8; (gdt * BLOCK_SIZE as u64) as usize];
    for group in 0..geometry.groups as usize {
        let g = group as u64;
        let desc = GroupDesc {
            block_bitmap: ((geometry.block_bitmaps_at + g) as u32).into(),
            inode_bitmap: ((geometry.inode_bitmaps_at + g) as u32).into(),
            inode_table: ((geometry.tables_at + g * geometry.table_blocks) as u32).into(),
            free_blocks_count: (free_blocks[group] as u16).into(),
            free_inodes_count: (free_inodes[group] as u16).into(),
            used_dirs_count: (used_dirs[group] as u16).into(),
            ..FromZeros::new_zeroed()
        };
        let off = group * DESC_SIZE as usize;
        gdt_bytes[off..off + DESC_SIZE as usize].copy_from_slice(desc.as_bytes());
    }
    write(disk, 1, &gdt_bytes)?;

    // Superblock, with the boot sector area before it zeroed.
    let total_free_blocks: u64 = free_blocks.iter().sum();
    let total_free_inodes: u64 = free_inodes.iter().sum();
    let sb = superblock(options, &geometry, total_free_blocks, total_free_inodes);
    let mut first = vec![0u8; BLOCK_SIZE];
    first[1024..2048].copy_from_slice(sb.as_bytes());
    write(disk, 0, &first)?;
    let end = geometry.blocks * BLOCK_SIZE as u64;
    if disk.position() < end && geometry.blocks > geometry.block_bitmaps_at + geometry.groups {
        disk.write_at(end - 1, &[0]).map_err(Error::Write)?;
    }
    Ok(Summary {
        bytes: end,
        blocks: geometry.blocks,
        free_blocks: total_free_blocks,
        inodes: geometry.groups * ipg,
        used_inodes,
        replaced_blocks: data.dead,
    })
}

/// A directory's entries for [`dir`]; inode numbers from `numbers` (or 0
/// while only sizes matter).
fn children<'a>(
    tree: &Tree,
    entries: &'a std::collections::BTreeMap<Box<[u8]>, crate::tree::Entry>,
    numbers: &[u32],
) -> Vec<Dirent<'a>> {
    entries
        .iter()
        .map(|(name, e)| Dirent {
            name,
            inode: numbers.get(e.node as usize).copied().unwrap_or(0),
            file_type: tree.node(e.node).kind.dirent_type(),
        })
        .collect()
}

/// The directory hash seed: the superblock's `s_hash_seed` words.
fn hash_seed(options: &Options) -> [u32; 4] {
    let u = options.uuid;
    std::array::from_fn(|i| {
        u32::from_le_bytes([u[4 * i], u[4 * i + 1], u[4 * i + 2], u[4 * i + 3]])
    })
}

/// Numbers inodes breadth-first from the root (2), the rest from 11.
/// Returns node → inode number, and (node, parent node) in number order.
fn number(tree: &Tree) -> (Vec<u32>, Vec<(NodeId, NodeId)>) {
    let mut numbers = vec![0u32; tree.nodes.len()];
    numbers[ROOT as usize] = ROOT_INO;
    let mut order = Vec::new();
    let mut queue = VecDeque::from([ROOT]);
    while let Some(dir) = queue.pop_front() {
        for entry in tree.entries(dir).into_iter().flat_map(|e| e.values()) {
            let slot = &mut numbers[entry.node as usize];
            if *slot != 0 {
                continue;
            }
            *slot = FIRST_INO + order.len() as u32;
            order.push((entry.node, dir));
            if tree.entries(entry.node).is_some() {
                queue.push_back(entry.node);
            }
        }
    }
    (numbers, order)
}

/// The extents of `bytes` (whole blocks) stored contiguously from `first`
/// (directories, long symlinks).
fn contiguous_extents(first: u64, bytes: usize) -> Vec<Extent> {
    let mut extents = Vec::new();
    push_extent(&mut extents, 0, first, (bytes / BLOCK_SIZE) as u64);
    extents
}

/// Writes an inode's extent tree blocks (if any) at `at`; returns how many.
fn write_tree(disk: &mut Disk<'_>, extents: Vec<Extent>, at: u64) -> Result<u64> {
    if extent::tree_blocks(extents.len()) == 0 {
        return Ok(0);
    }
    let (_, blocks) = extent::build(&extents, at as u32);
    disk.write_block(at, &blocks).map_err(Error::Write)?;
    Ok((blocks.len() / BLOCK_SIZE) as u64)
}

/// Decides `i_block`, sizes and extra blocks of one inode, advancing `cursor`
/// over the blocks it gets after the data region.
fn place(tree: &Tree, node_id: NodeId, parent: u32, seed: [u32; 4], cursor: &mut u64) -> Plan {
    let node = tree.node(node_id);
    let first = *cursor;
    let mut placed = Placed {
        links: node.links.min(LINK_MAX) as u16,
        ..Placed::default()
    };
    match &node.kind {
        Kind::Dir(entries) => {
            let children = children(tree, entries, &[]);
            let layout = dir::plan(&children, seed);
            let blocks = layout.blocks(&children) as u64;
            let extents = contiguous_extents(first, blocks as usize * BLOCK_SIZE);
            let tree_blocks = extent::tree_blocks(extents.len()) as u64;
            placed.block = extent::build(&extents, (first + blocks) as u32).0;
            placed.blocks = blocks + tree_blocks;
            placed.size = blocks * BLOCK_SIZE as u64;
            placed.uses_extents = true;
            placed.indexed = layout.indexed();
            let subdirs = entries
                .values()
                .filter(|e| tree.entries(e.node).is_some())
                .count() as u32;
            let links = 2 + subdirs;
            placed.links = if links >= LINK_MAX { 1 } else { links as u16 };
            *cursor += placed.blocks;
        }
        Kind::File { size, extents } => {
            let tree_blocks = extent::tree_blocks(extents.len()) as u64;
            placed.block = extent::build(extents, first as u32).0;
            placed.blocks = extents.iter().map(|e| u64::from(e.len)).sum::<u64>() + tree_blocks;
            placed.size = *size;
            placed.uses_extents = true;
            *cursor += tree_blocks;
        }
        Kind::Symlink(target) => {
            placed.size = target.len() as u64;
            if target.len() <= FAST_SYMLINK_MAX {
                placed.block[..target.len()].copy_from_slice(target);
            } else {
                placed.block = extent::build(&contiguous_extents(first, BLOCK_SIZE), 0).0;
                placed.blocks = 1;
                placed.uses_extents = true;
                *cursor += 1;
            }
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            placed.block = inode::device_block(*major, *minor);
        }
        Kind::Fifo => {}
    }
    if xattr::placement(&node.meta.xattrs) == Ok(xattr::Placement::Block) {
        placed.xattr_block = *cursor as u32;
        placed.blocks += 1;
        *cursor += 1;
    }
    Plan {
        node: node_id,
        parent,
        placed,
        first,
    }
}

/// Sizes the groups: enough inodes for `used_inodes` plus the free ones
/// asked for, and blocks for everything plus the free space asked for
/// (blocks freed by replaced files count towards it).
fn geometry(options: &Options, used_inodes: u64, meta_end: u64, dead: u64) -> Result<Geometry> {
    let want_inodes = used_inodes + u64::from(options.free_inodes);
    let too_large = || Error::LimitExceeded {
        limit: Limit::ImageBytes,
        max: options.limits.max_image_bytes,
    };
    let max_blocks = (options.limits.max_image_bytes / BLOCK_SIZE as u64).min(u64::from(u32::MAX));
    let mut groups = 1u64;
    loop {
        let ipg = want_inodes
            .div_ceil(groups)
            .next_multiple_of(INODES_PER_BLOCK)
            .max(INODES_PER_BLOCK);
        if ipg > BLOCKS_PER_GROUP {
            groups += 1;
            continue;
        }
        let table_blocks = ipg / INODES_PER_BLOCK;
        let tables_at = meta_end;
        let inode_bitmaps_at = tables_at + groups * table_blocks;
        let block_bitmaps_at = inode_bitmaps_at + groups;
        let used = block_bitmaps_at + groups;
        let mut blocks = used + options.free_space.blocks(used).saturating_sub(dead);
        let needed = blocks.div_ceil(BLOCKS_PER_GROUP);
        if needed > groups {
            groups = needed;
        } else {
            // More groups than blocks need (for inodes): the last group
            // gets at least a few blocks.
            blocks = blocks.max((groups - 1) * BLOCKS_PER_GROUP + 64);
            if blocks > max_blocks {
                return Err(too_large());
            }
            return Ok(Geometry {
                groups,
                inodes_per_group: ipg,
                table_blocks,
                blocks,
                tables_at,
                inode_bitmaps_at,
                block_bitmaps_at,
            });
        }
        if groups * BLOCKS_PER_GROUP > max_blocks + BLOCKS_PER_GROUP {
            return Err(too_large());
        }
    }
}

/// Sets bits `from..to` of a bitmap block.
fn set_bits(block: &mut [u8], from: u64, to: u64) {
    for bit in from..to.min(block.len() as u64 * 8) {
        block[(bit / 8) as usize] |= 1 << (bit % 8);
    }
}

fn superblock(options: &Options, g: &Geometry, free_blocks: u64, free_inodes: u64) -> SuperBlock {
    let mut volume_name = [0u8; 16];
    let label = options.label.as_bytes();
    let n = label.len().min(16);
    volume_name[..n].copy_from_slice(&label[..n]);
    let seed = hash_seed(options);
    SuperBlock {
        inodes_count: ((g.groups * g.inodes_per_group) as u32).into(),
        blocks_count_lo: (g.blocks as u32).into(),
        free_blocks_count_lo: (free_blocks as u32).into(),
        free_inodes_count: (free_inodes as u32).into(),
        first_data_block: 0.into(),
        log_block_size: 2.into(),
        log_cluster_size: 2.into(),
        blocks_per_group: (BLOCKS_PER_GROUP as u32).into(),
        clusters_per_group: (BLOCKS_PER_GROUP as u32).into(),
        inodes_per_group: (g.inodes_per_group as u32).into(),
        max_mnt_count: 0xFFFF.into(),
        magic: 0xEF53.into(),
        state: 1.into(),
        errors: 1.into(),
        rev_level: 1.into(),
        first_ino: FIRST_INO.into(),
        inode_size: (INODE_SIZE as u16).into(),
        feature_compat: (COMPAT_EXT_ATTR | COMPAT_DIR_INDEX | COMPAT_SPARSE_SUPER2).into(),
        feature_incompat: (INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG).into(),
        feature_ro_compat: (RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE)
            .into(),
        uuid: options.uuid,
        volume_name,
        hash_seed: seed.map(Into::into),
        def_hash_version: super::htree::HASH_VERSION,
        min_extra_isize: 32.into(),
        want_extra_isize: 32.into(),
        // Signed directory hashes, as mke2fs on x86.
        flags: 1.into(),
        log_groups_per_flex: 4,
        ..FromZeros::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_blocks_follow_the_group_count() {
        assert_eq!(gdt_blocks(1), 1);
        assert_eq!(gdt_blocks(128 * BLOCKS_PER_GROUP), 1);
        assert_eq!(gdt_blocks(128 * BLOCKS_PER_GROUP + 1), 2);
    }

    #[test]
    fn geometry_gives_exact_inode_and_block_counts() {
        let options = Options::default();
        let g = geometry(&options, 100_000, 200_000, 0).unwrap();
        assert!(g.groups * g.inodes_per_group >= 100_000);
        assert_eq!(g.inodes_per_group % INODES_PER_BLOCK, 0);
        assert!(g.inodes_per_group <= BLOCKS_PER_GROUP);
        assert_eq!(g.blocks, g.block_bitmaps_at + g.groups);
        assert_eq!(g.groups, g.blocks.div_ceil(BLOCKS_PER_GROUP));
    }
}
