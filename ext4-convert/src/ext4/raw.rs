//! The on-disk ext4 structures this crate writes, as little-endian
//! `#[repr(C)]` records (field names as in the kernel's `fs/ext4/ext4.h`).
//!
//! Only the fields we set are documented; the rest stay zero.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `struct ext4_super_block`, 1024 bytes at byte offset 1024.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct SuperBlock {
    pub(crate) inodes_count: U32,
    pub(crate) blocks_count_lo: U32,
    pub(crate) r_blocks_count_lo: U32,
    pub(crate) free_blocks_count_lo: U32,
    pub(crate) free_inodes_count: U32,
    pub(crate) first_data_block: U32,
    pub(crate) log_block_size: U32,
    pub(crate) log_cluster_size: U32,
    pub(crate) blocks_per_group: U32,
    pub(crate) clusters_per_group: U32,
    pub(crate) inodes_per_group: U32,
    pub(crate) mtime: U32,
    pub(crate) wtime: U32,
    pub(crate) mnt_count: U16,
    pub(crate) max_mnt_count: U16,
    pub(crate) magic: U16,
    pub(crate) state: U16,
    pub(crate) errors: U16,
    pub(crate) minor_rev_level: U16,
    pub(crate) lastcheck: U32,
    pub(crate) checkinterval: U32,
    pub(crate) creator_os: U32,
    pub(crate) rev_level: U32,
    pub(crate) def_resuid: U16,
    pub(crate) def_resgid: U16,
    pub(crate) first_ino: U32,
    pub(crate) inode_size: U16,
    pub(crate) block_group_nr: U16,
    pub(crate) feature_compat: U32,
    pub(crate) feature_incompat: U32,
    pub(crate) feature_ro_compat: U32,
    pub(crate) uuid: [u8; 16],
    pub(crate) volume_name: [u8; 16],
    pub(crate) last_mounted: [u8; 64],
    pub(crate) algorithm_usage_bitmap: U32,
    pub(crate) prealloc_blocks: u8,
    pub(crate) prealloc_dir_blocks: u8,
    pub(crate) reserved_gdt_blocks: U16,
    pub(crate) journal_uuid: [u8; 16],
    pub(crate) journal_inum: U32,
    pub(crate) journal_dev: U32,
    pub(crate) last_orphan: U32,
    pub(crate) hash_seed: [U32; 4],
    pub(crate) def_hash_version: u8,
    pub(crate) jnl_backup_type: u8,
    pub(crate) desc_size: U16,
    pub(crate) default_mount_opts: U32,
    pub(crate) first_meta_bg: U32,
    pub(crate) mkfs_time: U32,
    pub(crate) jnl_blocks: [U32; 17],
    pub(crate) blocks_count_hi: U32,
    pub(crate) r_blocks_count_hi: U32,
    pub(crate) free_blocks_count_hi: U32,
    pub(crate) min_extra_isize: U16,
    pub(crate) want_extra_isize: U16,
    pub(crate) flags: U32,
    pub(crate) raid_stride: U16,
    pub(crate) mmp_update_interval: U16,
    pub(crate) mmp_block: U64,
    pub(crate) raid_stripe_width: U32,
    pub(crate) log_groups_per_flex: u8,
    pub(crate) checksum_type: u8,
    pub(crate) encryption_level: u8,
    pub(crate) reserved_pad: u8,
    pub(crate) kbytes_written: U64,
    pub(crate) snapshot_inum: U32,
    pub(crate) snapshot_id: U32,
    pub(crate) snapshot_r_blocks_count: U64,
    pub(crate) snapshot_list: U32,
    pub(crate) error_count: U32,
    pub(crate) first_error_time: U32,
    pub(crate) first_error_ino: U32,
    pub(crate) first_error_block: U64,
    pub(crate) first_error_func: [u8; 32],
    pub(crate) first_error_line: U32,
    pub(crate) last_error_time: U32,
    pub(crate) last_error_ino: U32,
    pub(crate) last_error_line: U32,
    pub(crate) last_error_block: U64,
    pub(crate) last_error_func: [u8; 32],
    pub(crate) mount_opts: [u8; 64],
    pub(crate) usr_quota_inum: U32,
    pub(crate) grp_quota_inum: U32,
    pub(crate) overhead_clusters: U32,
    /// The two groups that hold backups with `sparse_super2` (0 = none).
    pub(crate) backup_bgs: [U32; 2],
    pub(crate) encrypt_algos: [u8; 4],
    pub(crate) encrypt_pw_salt: [u8; 16],
    pub(crate) lpf_ino: U32,
    pub(crate) prj_quota_inum: U32,
    pub(crate) checksum_seed: U32,
    pub(crate) reserved: [u8; 392],
    pub(crate) checksum: U32,
}

/// `struct ext4_group_desc` without the `64bit` feature: 32 bytes.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct GroupDesc {
    pub(crate) block_bitmap: U32,
    pub(crate) inode_bitmap: U32,
    pub(crate) inode_table: U32,
    pub(crate) free_blocks_count: U16,
    pub(crate) free_inodes_count: U16,
    pub(crate) used_dirs_count: U16,
    pub(crate) flags: U16,
    pub(crate) exclude_bitmap: U32,
    pub(crate) block_bitmap_csum: U16,
    pub(crate) inode_bitmap_csum: U16,
    pub(crate) itable_unused: U16,
    pub(crate) checksum: U16,
}

/// `struct ext4_inode` with a 32-byte extra part; the rest of the 256-byte
/// record is the in-inode extended attribute area.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Inode {
    pub(crate) mode: U16,
    pub(crate) uid: U16,
    pub(crate) size_lo: U32,
    pub(crate) atime: U32,
    pub(crate) ctime: U32,
    pub(crate) mtime: U32,
    pub(crate) dtime: U32,
    pub(crate) gid: U16,
    pub(crate) links_count: U16,
    /// In 512-byte sectors (`huge_file` without `EXT4_HUGE_FILE_FL`).
    pub(crate) blocks_lo: U32,
    pub(crate) flags: U32,
    pub(crate) version: U32,
    /// Extent tree root, fast symlink target or device number.
    pub(crate) block: [u8; 60],
    pub(crate) generation: U32,
    pub(crate) file_acl_lo: U32,
    pub(crate) size_high: U32,
    pub(crate) obso_faddr: U32,
    pub(crate) blocks_high: U16,
    pub(crate) file_acl_high: U16,
    pub(crate) uid_high: U16,
    pub(crate) gid_high: U16,
    pub(crate) checksum_lo: U16,
    pub(crate) reserved: U16,
    pub(crate) extra_isize: U16,
    pub(crate) checksum_hi: U16,
    pub(crate) ctime_extra: U32,
    pub(crate) mtime_extra: U32,
    pub(crate) atime_extra: U32,
    pub(crate) crtime: U32,
    pub(crate) crtime_extra: U32,
    pub(crate) version_hi: U32,
    pub(crate) projid: U32,
    /// In-inode extended attributes (`ext4_xattr_ibody_header` + entries).
    pub(crate) xattrs: [u8; INODE_XATTR_SPACE],
}

/// Bytes after the 160-byte inode core in a 256-byte inode record.
pub(crate) const INODE_XATTR_SPACE: usize = 96;

/// `struct ext4_extent_header`.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ExtentHeader {
    pub(crate) magic: U16,
    pub(crate) entries: U16,
    pub(crate) max: U16,
    pub(crate) depth: U16,
    pub(crate) generation: U32,
}

/// `struct ext4_extent`: a leaf entry.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ExtentLeaf {
    pub(crate) block: U32,
    pub(crate) len: U16,
    pub(crate) start_hi: U16,
    pub(crate) start_lo: U32,
}

/// `struct ext4_extent_idx`: an index entry.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ExtentIndex {
    pub(crate) block: U32,
    pub(crate) leaf_lo: U32,
    pub(crate) leaf_hi: U16,
    pub(crate) unused: U16,
}

/// `struct ext4_dir_entry_2` without its name.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct DirEntry {
    pub(crate) inode: U32,
    pub(crate) rec_len: U16,
    pub(crate) name_len: u8,
    pub(crate) file_type: u8,
}

/// `struct ext4_xattr_entry` without its name.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct XattrEntry {
    pub(crate) name_len: u8,
    pub(crate) name_index: u8,
    pub(crate) value_offs: U16,
    pub(crate) value_inum: U32,
    pub(crate) value_size: U32,
    pub(crate) hash: U32,
}

/// `struct ext4_xattr_header`, at the start of an xattr block.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct XattrBlockHeader {
    pub(crate) magic: U32,
    pub(crate) refcount: U32,
    pub(crate) blocks: U32,
    pub(crate) hash: U32,
    pub(crate) checksum: U32,
    pub(crate) reserved: [U32; 3],
}

/// `struct dx_root_info` follows the fake `.` and `..` entries of an htree root.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct DxRootInfo {
    pub(crate) reserved_zero: U32,
    pub(crate) hash_version: u8,
    pub(crate) info_length: u8,
    pub(crate) indirect_levels: u8,
    pub(crate) unused_flags: u8,
}

/// `struct dx_countlimit` / first `struct dx_entry` of an index block.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct DxCountLimit {
    pub(crate) limit: U16,
    pub(crate) count: U16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_match_the_kernel() {
        assert_eq!(size_of::<SuperBlock>(), 1024);
        assert_eq!(size_of::<GroupDesc>(), 32);
        assert_eq!(size_of::<Inode>(), 256);
        assert_eq!(size_of::<ExtentHeader>(), 12);
        assert_eq!(size_of::<ExtentLeaf>(), 12);
        assert_eq!(size_of::<ExtentIndex>(), 12);
        assert_eq!(size_of::<DirEntry>(), 8);
        assert_eq!(size_of::<XattrEntry>(), 16);
        assert_eq!(size_of::<XattrBlockHeader>(), 32);
        assert_eq!(size_of::<DxRootInfo>(), 8);
        assert_eq!(std::mem::offset_of!(SuperBlock, backup_bgs), 0x24c);
        assert_eq!(std::mem::offset_of!(SuperBlock, checksum), 0x3fc);
        assert_eq!(std::mem::offset_of!(SuperBlock, hash_seed), 0xec);
        assert_eq!(std::mem::offset_of!(SuperBlock, blocks_count_hi), 0x150);
        assert_eq!(std::mem::offset_of!(Inode, extra_isize), 0x80);
    }
}
