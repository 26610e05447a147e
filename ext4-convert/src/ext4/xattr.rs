//! Extended attributes: name prefixes, POSIX ACL conversion, and the
//! in-inode and block encodings.

use zerocopy::{FromZeros, IntoBytes};

use super::data::BLOCK_SIZE;
use super::raw::{INODE_XATTR_SPACE, XattrBlockHeader, XattrEntry};
use crate::error::EntryError;
use crate::tree::Xattr;

const MAGIC: u32 = 0xEA02_0000;
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Splits a full attribute name into ext4's name index and suffix.
fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    if name == ACL_ACCESS {
        return Some((2, b""));
    }
    if name == ACL_DEFAULT {
        return Some((3, b""));
    }
    const PREFIXES: [(&[u8], u8); 3] = [(b"user.", 1), (b"trusted.", 4), (b"security.", 6)];
    PREFIXES.iter().find_map(|(prefix, index)| {
        let suffix = name.strip_prefix(*prefix)?;
        (!suffix.is_empty() && suffix.len() <= 255).then_some((*index, suffix))
    })
}

/// Checks one attribute from a tar header and converts its value to the
/// form ext4 stores (POSIX ACLs have their own on-disk format).
pub(crate) fn from_tar(name: &[u8], value: &[u8]) -> Result<Xattr, EntryError> {
    let (index, _) = split_name(name).ok_or(EntryError::InvalidXattrName)?;
    let value = if index == 2 || index == 3 {
        acl_to_disk(value)?
    } else {
        value.to_vec()
    };
    Ok(Xattr {
        name: name.into(),
        value: value.into(),
    })
}

/// `posix_acl_xattr` (version 2, 8-byte entries) → `ext4_acl` (version 1,
/// 4-byte entries except named users and groups).
fn acl_to_disk(value: &[u8]) -> Result<Vec<u8>, EntryError> {
    let body = value
        .strip_prefix(&2u32.to_le_bytes())
        .ok_or(EntryError::InvalidAcl)?;
    let (entries, rest) = body.as_chunks::<8>();
    if !rest.is_empty() {
        return Err(EntryError::InvalidAcl);
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in entries {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[..4]);
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => {}
            0x02 | 0x08 => out.extend_from_slice(&e[4..]),
            _ => return Err(EntryError::InvalidAcl),
        }
    }
    Ok(out)
}

/// Where an inode's attributes go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    None,
    InInode,
    Block,
}

struct Sorted<'a> {
    index: u8,
    suffix: &'a [u8],
    value: &'a [u8],
}

fn sorted(xattrs: &[Xattr]) -> Vec<Sorted<'_>> {
    let mut out: Vec<Sorted<'_>> = xattrs
        .iter()
        .filter_map(|x| {
            let (index, suffix) = split_name(&x.name)?;
            Some(Sorted {
                index,
                suffix,
                value: &x.value,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.index, a.suffix.len(), a.suffix).cmp(&(b.index, b.suffix.len(), b.suffix))
    });
    out
}

fn entries_len(list: &[Sorted<'_>]) -> usize {
    list.iter()
        .map(|x| 16 + x.suffix.len().next_multiple_of(4))
        .sum::<usize>()
        + 4
}

fn values_len(list: &[Sorted<'_>]) -> usize {
    list.iter().map(|x| x.value.len().next_multiple_of(4)).sum()
}

/// Decides where attributes fit: in the inode, else one block.
pub(crate) fn placement(xattrs: &[Xattr]) -> Result<Placement, EntryError> {
    if xattrs.is_empty() {
        return Ok(Placement::None);
    }
    let list = sorted(xattrs);
    let need = entries_len(&list) + values_len(&list);
    if need <= INODE_XATTR_SPACE - 4 {
        Ok(Placement::InInode)
    } else if need <= BLOCK_SIZE - size_of::<XattrBlockHeader>() {
        Ok(Placement::Block)
    } else {
        Err(EntryError::XattrTooLarge)
    }
}

/// `ext4_xattr_hash_entry`.
fn entry_hash(suffix: &[u8], value: &[u8]) -> u32 {
    let mut hash = 0u32;
    for &b in suffix {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(b);
    }
    let (words, rest) = value.as_chunks::<4>();
    let last = (!rest.is_empty()).then(|| {
        let mut w = [0u8; 4];
        w[..rest.len()].copy_from_slice(rest);
        w
    });
    for w in words.iter().chain(last.as_ref()) {
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(*w);
    }
    hash
}

/// Encodes entries and values into `area`; value offsets count from
/// `offset_base` bytes before `area`'s entry list start.
fn encode(list: &[Sorted<'_>], area: &mut [u8], entries_at: usize, offset_base: usize) -> u32 {
    let mut entry_pos = entries_at;
    let mut value_end = area.len();
    let mut hashes = 0u32;
    let mut all_hashed = true;
    for x in list {
        let padded = x.value.len().next_multiple_of(4);
        value_end -= padded;
        area[value_end..value_end + x.value.len()].copy_from_slice(x.value);
        let hash = entry_hash(x.suffix, x.value);
        all_hashed &= hash != 0;
        hashes = (hashes << 16) ^ (hashes >> 16) ^ hash;
        let header = XattrEntry {
            name_len: x.suffix.len() as u8,
            name_index: x.index,
            value_offs: ((value_end - offset_base) as u16).into(),
            value_inum: 0.into(),
            value_size: (x.value.len() as u32).into(),
            hash: hash.into(),
        };
        area[entry_pos..entry_pos + 16].copy_from_slice(header.as_bytes());
        area[entry_pos + 16..entry_pos + 16 + x.suffix.len()].copy_from_slice(x.suffix);
        entry_pos += 16 + x.suffix.len().next_multiple_of(4);
    }
    if all_hashed { hashes } else { 0 }
}

/// The in-inode attribute area (magic, entries, values).
pub(crate) fn encode_in_inode(xattrs: &[Xattr]) -> [u8; INODE_XATTR_SPACE] {
    let mut area = [0u8; INODE_XATTR_SPACE];
    area[..4].copy_from_slice(&MAGIC.to_le_bytes());
    encode(&sorted(xattrs), &mut area, 4, 4);
    area
}

/// A whole attribute block (refcount 1).
pub(crate) fn encode_block(xattrs: &[Xattr]) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_SIZE];
    let header_len = size_of::<XattrBlockHeader>();
    let hash = encode(&sorted(xattrs), &mut block, header_len, 0);
    let header = XattrBlockHeader {
        magic: MAGIC.into(),
        refcount: 1.into(),
        blocks: 1.into(),
        hash: hash.into(),
        ..FromZeros::new_zeroed()
    };
    block[..header_len].copy_from_slice(header.as_bytes());
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(name: &str, value: &[u8]) -> Xattr {
        from_tar(name.as_bytes(), value).unwrap()
    }

    #[test]
    fn names_need_a_known_namespace() {
        assert!(from_tar(b"user.a", b"1").is_ok());
        assert!(from_tar(b"security.capability", b"1").is_ok());
        assert_eq!(
            from_tar(b"system.data", b"1"),
            Err(EntryError::InvalidXattrName)
        );
        assert_eq!(from_tar(b"user.", b"1"), Err(EntryError::InvalidXattrName));
        assert_eq!(from_tar(b"foo", b"1"), Err(EntryError::InvalidXattrName));
    }

    #[test]
    fn acls_are_converted_to_the_disk_format() {
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let disk = x("system.posix_acl_access", &acl).value;
        assert_eq!(disk.len(), 4 + 4 * 4 + 8);
        assert_eq!(&disk[..4], &1u32.to_le_bytes());
        assert_eq!(&disk[8..16], &[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert_eq!(
            from_tar(b"system.posix_acl_access", b"junk"),
            Err(EntryError::InvalidAcl)
        );
    }

    #[test]
    fn placement_prefers_the_inode() {
        assert_eq!(placement(&[]).unwrap(), Placement::None);
        let cap = x("security.capability", &[0; 20]);
        assert_eq!(placement(&[cap]).unwrap(), Placement::InInode);
        let big = x("user.big", &[1; 2000]);
        assert_eq!(placement(&[big]).unwrap(), Placement::Block);
        let huge = x("user.huge", &[1; 5000]);
        assert_eq!(placement(&[huge]), Err(EntryError::XattrTooLarge));
    }

    #[test]
    fn in_inode_layout_has_magic_entries_and_values_at_the_end() {
        let area = encode_in_inode(&[x("user.ab", b"xyz")]);
        assert_eq!(&area[..4], &MAGIC.to_le_bytes());
        assert_eq!(area[4], 2, "name_len");
        assert_eq!(area[5], 1, "user index");
        let offs = u16::from_le_bytes([area[6], area[7]]) as usize;
        assert_eq!(&area[4 + offs..4 + offs + 3], b"xyz");
        assert_eq!(&area[20..22], b"ab");
        assert_eq!(&area[24..28], &[0; 4], "terminator");
    }
}
