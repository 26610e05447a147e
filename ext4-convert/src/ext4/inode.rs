//! Encoding one inode record.

use zerocopy::FromZeros;

use super::raw::Inode;
use super::xattr;
use crate::tree::{Kind, Node, Timestamp};

/// `EXT4_EXTENTS_FL`.
pub(crate) const EXTENTS_FL: u32 = 0x0008_0000;
/// `EXT4_INDEX_FL`: a hashed directory.
pub(crate) const INDEX_FL: u32 = 0x1000;
/// Symlink targets shorter than this live in `i_block` ("fast" symlinks).
pub(crate) const FAST_SYMLINK_MAX: usize = 59;

/// What the layout decided for one inode.
#[derive(Debug)]
pub(crate) struct Placed {
    /// `i_block`: extent root, fast symlink target or device number.
    pub(crate) block: [u8; 60],
    /// Blocks owned by the inode (data, directory, tree), for `i_blocks`.
    pub(crate) blocks: u64,
    /// `i_size`.
    pub(crate) size: u64,
    /// `i_links_count`.
    pub(crate) links: u16,
    /// External xattr block, if any.
    pub(crate) xattr_block: u32,
    pub(crate) uses_extents: bool,
    /// An htree directory (`EXT4_INDEX_FL`).
    pub(crate) indexed: bool,
}

impl Default for Placed {
    fn default() -> Self {
        Self {
            block: [0; 60],
            blocks: 0,
            size: 0,
            links: 0,
            xattr_block: 0,
            uses_extents: false,
            indexed: false,
        }
    }
}

/// `(seconds low 32 bits, extra field)`: epoch bits and nanoseconds.
fn time(t: Timestamp) -> (u32, u32) {
    // ext4's range: 32 signed bits plus 2 epoch bits.
    let secs = t.secs.clamp(-(1 << 31), (1 << 34) - (1 << 31) - 1);
    let t = Timestamp { secs, ..t };
    let low = t.secs as i32;
    let epoch = ((t.secs - i64::from(low)) >> 32) as u32 & 3;
    (low as u32, epoch | (t.nanos << 2))
}

/// The device number as the kernel stores it in `i_block`.
pub(crate) fn device_block(major: u32, minor: u32) -> [u8; 60] {
    let mut block = [0u8; 60];
    if major < 256 && minor < 256 {
        block[..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        block[4..8].copy_from_slice(&new.to_le_bytes());
    }
    block
}

/// Builds the 256-byte record.
pub(crate) fn encode(node: &Node, placed: &Placed) -> Inode {
    let meta = &node.meta;
    let (mtime, mtime_extra) = time(meta.mtime);
    let (atime, atime_extra) = time(meta.atime);
    let sectors = placed.blocks * 8;
    let xattrs = if placed.xattr_block == 0 && !meta.xattrs.is_empty() {
        xattr::encode_in_inode(&meta.xattrs)
    } else {
        [0; 96]
    };
    let mut flags = if placed.uses_extents { EXTENTS_FL } else { 0 };
    if placed.indexed {
        flags |= INDEX_FL;
    }
    debug_assert!(!matches!(node.kind, Kind::CharDevice { .. }) || !placed.uses_extents);
    Inode {
        mode: (node.kind.format_bits() | meta.perm).into(),
        uid: (meta.uid as u16).into(),
        size_lo: (placed.size as u32).into(),
        atime: atime.into(),
        ctime: mtime.into(),
        mtime: mtime.into(),
        gid: (meta.gid as u16).into(),
        links_count: placed.links.into(),
        blocks_lo: (sectors as u32).into(),
        flags: flags.into(),
        block: placed.block,
        file_acl_lo: placed.xattr_block.into(),
        size_high: ((placed.size >> 32) as u32).into(),
        blocks_high: ((sectors >> 32) as u16).into(),
        uid_high: ((meta.uid >> 16) as u16).into(),
        gid_high: ((meta.gid >> 16) as u16).into(),
        extra_isize: 32.into(),
        ctime_extra: mtime_extra.into(),
        mtime_extra: mtime_extra.into(),
        atime_extra: atime_extra.into(),
        xattrs,
        ..FromZeros::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_epoch_bits_and_nanoseconds() {
        assert_eq!(time(Timestamp { secs: 0, nanos: 0 }), (0, 0));
        assert_eq!(time(Timestamp { secs: 5, nanos: 7 }), (5, 28));
        // 2038-01-19T03:14:08Z, the first second past i32.
        assert_eq!(
            time(Timestamp {
                secs: 1 << 31,
                nanos: 0
            }),
            (1 << 31, 1)
        );
        // Before 1970: negative seconds, epoch 0.
        assert_eq!(time(Timestamp { secs: -1, nanos: 0 }), (u32::MAX, 0));
        // Out of range: clamped, never an overflow.
        assert_eq!(
            time(Timestamp {
                secs: i64::MAX,
                nanos: 0
            })
            .1 & 3,
            3
        );
        assert_eq!(
            time(Timestamp {
                secs: i64::MIN,
                nanos: 0
            })
            .0,
            1 << 31
        );
    }

    #[test]
    fn devices_use_the_old_encoding_when_small() {
        assert_eq!(&device_block(1, 3)[..4], &0x0103u32.to_le_bytes());
        let big = device_block(300, 70000);
        assert_eq!(&big[..4], &[0; 4]);
        let expected = (70000u32 & 0xff) | (300 << 8) | ((70000 & !0xff) << 12);
        assert_eq!(&big[4..8], &expected.to_le_bytes());
    }
}
