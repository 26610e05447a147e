//! Applying one layer's tar stream to the tree, as umoci and containerd
//! unpack it: paths cleaned and confined to the root, parent symlinks
//! resolved inside the root, whiteouts and opaque directories hiding lower
//! layers only, a later entry replacing an earlier one (a directory over a
//! directory only updates its metadata).

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;

use crate::error::{EntryError, Error, Limit};
use crate::ext4::xattr;
use crate::tree::{Extent, Kind, Meta, NodeId, ROOT, Timestamp, Tree};
use crate::{Limits, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Symlinks followed while resolving one path (as filepath-securejoin).
const MAX_SYMLINKS: u32 = 255;
const MAX_NAME: usize = 255;
const MAX_SYMLINK_TARGET: usize = 4095;
/// Path components handled while resolving one path, symlink targets
/// included (bounds the work a chain of long `./././…` targets can cause).
const MAX_RESOLVE_STEPS: usize = 4096;

/// Where file contents go: the ext4 data region.
pub(crate) trait Blocks {
    /// Stores a file's content; returns its size and extents.
    fn write_file(&mut self, src: &mut dyn Read) -> Result<(u64, Vec<Extent>)>;
    /// Returns the blocks of a file that lost its last name.
    fn free(&mut self, extents: &[Extent]);
}

/// Bytes tar-rs may read while looking for the next entry (headers, PAX
/// records, GNU long names, bodies of entries it skips): it buffers PAX and
/// long-name bodies whole, so they must be bounded (Go's archive/tar caps
/// PAX records at 1 MiB).
const MAX_BETWEEN_ENTRIES: u64 = 64 << 20;

/// Counts what tar-rs reads between two entries.
struct HeaderGuard<'a> {
    inner: &'a mut dyn Read,
    /// Bytes read since the current search for an entry began (`None`
    /// while an entry's own data is read).
    between: std::rc::Rc<std::cell::Cell<Option<u64>>>,
    /// Set when the cap stopped a read, so the error can be named.
    tripped: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Read for HeaderGuard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(seen) = self.between.get() {
            let seen = seen + n as u64;
            if seen > MAX_BETWEEN_ENTRIES {
                self.tripped.set(true);
                return Err(std::io::Error::other(
                    "tar header or skipped body over 64 MiB",
                ));
            }
            self.between.set(Some(seen));
        }
        Ok(n)
    }
}

/// Applies layer number `layer` (0 = bottom) read from `src`.
/// `sparse_budget` bounds the bytes GNU sparse entries expand to (their
/// holes never pass through the stream, so the layer byte limit does not
/// see them).
pub(crate) fn apply_layer(
    tree: &mut Tree,
    blocks: &mut dyn Blocks,
    limits: &Limits,
    layer: u32,
    src: &mut dyn Read,
    sparse_budget: &mut u64,
) -> Result<()> {
    let between = std::rc::Rc::new(std::cell::Cell::new(None));
    let tripped = std::rc::Rc::new(std::cell::Cell::new(false));
    let read_err = |source: std::io::Error| {
        if tripped.get() {
            Error::Entry {
                layer: layer as usize,
                path: String::new(),
                kind: EntryError::HeaderTooLarge,
            }
        } else {
            Error::ReadLayer {
                layer: layer as usize,
                source,
            }
        }
    };
    let guard = HeaderGuard {
        inner: src,
        between: std::rc::Rc::clone(&between),
        tripped: std::rc::Rc::clone(&tripped),
    };
    let mut archive = tar::Archive::new(guard);
    let mut entries = archive.entries().map_err(read_err)?;
    loop {
        between.set(Some(0));
        let next = entries.next();
        between.set(None);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(read_err)?;
        let path = entry.path_bytes().into_owned();
        let fail = |kind| Error::Entry {
            layer: layer as usize,
            path: String::from_utf8_lossy(&path).into_owned(),
            kind,
        };
        let header = Header::read(&mut entry).map_err(fail)?;
        if header.kind == b'S' {
            // Holes expand inside tar-rs: charge the full size.
            *sparse_budget =
                sparse_budget
                    .checked_sub(header.size)
                    .ok_or(Error::LimitExceeded {
                        limit: Limit::LayerBytes,
                        max: limits.max_layer_bytes,
                    })?;
        }
        let mut ctx = Apply {
            tree: &mut *tree,
            blocks: &mut *blocks,
            limits,
            layer,
        };
        match ctx.entry(&path, header, &mut entry) {
            Ok(()) => {}
            Err(Step::Entry(kind)) => return Err(fail(kind)),
            Err(Step::Other(e)) => return Err(e),
        }
        if tree.nodes.len() as u64 + tree.hardlinks > u64::from(limits.max_inodes) {
            return Err(Error::LimitExceeded {
                limit: Limit::Inodes,
                max: limits.max_inodes.into(),
            });
        }
        if tree.meta_bytes > limits.max_metadata_bytes {
            return Err(Error::LimitExceeded {
                limit: Limit::MetadataBytes,
                max: limits.max_metadata_bytes,
            });
        }
    }
    Ok(())
}

/// What one tar entry asks for, with PAX records applied.
struct Header {
    kind: u8,
    /// The entry's size (a GNU sparse file's full size).
    size: u64,
    meta: Meta,
    link: Option<Vec<u8>>,
    device: (u32, u32),
}

impl Header {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Self, EntryError> {
        let bad = |_| EntryError::InvalidHeader;
        let h = entry.header();
        let raw = h.as_old();
        let kind = h.entry_type().as_byte();
        let perm = (numeric(&raw.mode, h.mode().map(u64::from))? & 0o7777) as u16;
        let mut uid = numeric(&raw.uid, h.uid())?;
        let mut gid = numeric(&raw.gid, h.gid())?;
        let mut mtime = Timestamp {
            secs: i64::try_from(numeric(&raw.mtime, h.mtime())?)
                .map_err(|_| EntryError::InvalidHeader)?,
            nanos: 0,
        };
        let device = if matches!(kind, b'3' | b'4') {
            let (major, minor) = (
                h.device_major().map_err(bad)?.unwrap_or(0),
                h.device_minor().map_err(bad)?.unwrap_or(0),
            );
            // What ext4 (and Linux's dev_t) can hold: 12 and 20 bits.
            if major > 0xfff || minor > 0xf_ffff {
                return Err(EntryError::InvalidHeader);
            }
            (major, minor)
        } else {
            (0, 0)
        };
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax {
                let ext = ext.map_err(bad)?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                match key {
                    b"uid" => uid = parse_decimal(value)?,
                    b"gid" => gid = parse_decimal(value)?,
                    b"mtime" => mtime = parse_pax_time(value)?,
                    b"atime" => atime = Some(parse_pax_time(value)?),
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push(xattr::from_tar(name, value)?);
                        }
                    }
                }
            }
        }
        // Last record wins for a repeated name.
        xattrs.reverse();
        let mut seen = std::collections::BTreeSet::new();
        xattrs.retain(|x| seen.insert(x.name.clone()));
        xattr::placement(&xattrs)?;
        let meta = Meta {
            perm,
            uid: u32::try_from(uid).map_err(|_| EntryError::InvalidHeader)?,
            gid: u32::try_from(gid).map_err(|_| EntryError::InvalidHeader)?,
            mtime,
            atime: atime.unwrap_or(mtime),
            xattrs,
        };
        Ok(Self {
            kind,
            size: entry.size(),
            meta,
            link,
            device,
        })
    }
}

/// A numeric header field; an empty one (all NUL or spaces) reads as 0, as
/// Go's `archive/tar` (and so umoci and containerd) reads it.
fn numeric(raw: &[u8], parsed: std::io::Result<u64>) -> Result<u64, EntryError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(_) => Err(EntryError::InvalidHeader),
    }
}

fn parse_decimal(value: &[u8]) -> Result<u64, EntryError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(EntryError::InvalidHeader)
}

/// A PAX time: decimal seconds with an optional fraction, maybe negative
/// (Go's `archive/tar` `parsePAXTime`).
fn parse_pax_time(value: &[u8]) -> Result<Timestamp, EntryError> {
    let s = std::str::from_utf8(value).map_err(|_| EntryError::InvalidHeader)?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().map_err(|_| EntryError::InvalidHeader)?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryError::InvalidHeader);
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().map_err(|_| EntryError::InvalidHeader)?;
    if whole.starts_with('-') && nanos > 0 {
        Ok(Timestamp {
            secs: secs.checked_sub(1).ok_or(EntryError::InvalidHeader)?,
            nanos: 1_000_000_000 - nanos,
        })
    } else {
        Ok(Timestamp { secs, nanos })
    }
}

/// The cleaned components of a tar path: no empty or `.` parts, `..`
/// never above the root.
fn components(path: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

enum Step {
    Entry(EntryError),
    Other(Error),
}

impl From<EntryError> for Step {
    fn from(e: EntryError) -> Self {
        Self::Entry(e)
    }
}

struct Apply<'a> {
    tree: &'a mut Tree,
    blocks: &'a mut dyn Blocks,
    limits: &'a Limits,
    layer: u32,
}

impl Apply<'_> {
    fn entry(&mut self, path: &[u8], header: Header, data: &mut dyn Read) -> Result<(), Step> {
        if header.kind == b'g' {
            // A PAX global header: nothing to create.
            return Ok(());
        }
        if path.contains(&0) || header.link.as_ref().is_some_and(|l| l.contains(&0)) {
            return Err(EntryError::NulByte.into());
        }
        let parts = components(path);
        if parts.len() > self.limits.max_path_depth as usize {
            return Err(Step::Other(Error::LimitExceeded {
                limit: Limit::PathDepth,
                max: self.limits.max_path_depth.into(),
            }));
        }
        let Some((&name, parents)) = parts.split_last() else {
            return self.root(header);
        };
        if name.len() > MAX_NAME {
            return Err(EntryError::NameTooLong.into());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let Some(dir) = self.resolve_dir(parents, false)? else {
                return Ok(());
            };
            let layer = self.layer;
            let blocks = &mut *self.blocks;
            if name == OPAQUE {
                self.tree.opaque(dir, layer, &mut |e| blocks.free(e));
            } else {
                self.tree
                    .whiteout(dir, hidden, layer, &mut |e| blocks.free(e));
            }
            return Ok(());
        }
        let dir = self
            .resolve_dir(parents, true)?
            .ok_or(EntryError::NotADirectory)?;
        let existing = self.tree.lookup(dir, name);
        if header.kind == b'5'
            && let Some(existing) = existing
            && matches!(self.tree.node(existing.node).kind, Kind::Dir(_))
        {
            self.tree.node_mut(existing.node).meta = header.meta;
            if let Kind::Dir(entries) = &mut self.tree.node_mut(dir).kind
                && let Some(e) = entries.get_mut(name)
            {
                e.layer = self.layer;
            }
            return Ok(());
        }
        if existing.is_some() {
            let blocks = &mut *self.blocks;
            self.tree.unlink(dir, name, &mut |e| blocks.free(e));
        }
        let kind = match header.kind {
            b'1' => return self.hardlink(dir, name, header.link.as_deref().unwrap_or_default()),
            b'0' | b'\0' | b'7' | b'S' => {
                let (size, extents) = self.blocks.write_file(data).map_err(Step::Other)?;
                Kind::File { size, extents }
            }
            b'5' => Kind::Dir(BTreeMap::new()),
            b'2' => {
                let target = header.link.unwrap_or_default();
                if target.is_empty() {
                    return Err(EntryError::EmptySymlink.into());
                }
                if target.len() > MAX_SYMLINK_TARGET {
                    return Err(EntryError::SymlinkTooLong.into());
                }
                Kind::Symlink(target.into())
            }
            b'3' => Kind::CharDevice {
                major: header.device.0,
                minor: header.device.1,
            },
            b'4' => Kind::BlockDevice {
                major: header.device.0,
                minor: header.device.1,
            },
            b'6' => Kind::Fifo,
            other => return Err(EntryError::UnsupportedType(other).into()),
        };
        let mut meta = header.meta;
        if matches!(kind, Kind::Symlink(_)) {
            // Linux symlinks are always 0777, whatever the tar header says.
            meta.perm = 0o777;
        }
        let node = self.tree.push(meta, kind);
        self.tree.link(dir, name, node, self.layer);
        Ok(())
    }

    /// `./` itself: only a directory, whose metadata the root takes.
    fn root(&mut self, header: Header) -> Result<(), Step> {
        match header.kind {
            b'5' => {
                self.tree.node_mut(ROOT).meta = header.meta;
                Ok(())
            }
            _ => Err(EntryError::RootNotDirectory.into()),
        }
    }

    fn hardlink(&mut self, dir: NodeId, name: &[u8], target: &[u8]) -> Result<(), Step> {
        let missing = || EntryError::HardlinkTargetMissing {
            target: String::from_utf8_lossy(target).into_owned(),
        };
        let parts = components(target);
        let (&target_name, target_parents) = parts.split_last().ok_or_else(missing)?;
        let target_dir = self
            .resolve_dir(target_parents, false)?
            .ok_or_else(missing)?;
        let entry = self
            .tree
            .lookup(target_dir, target_name)
            .ok_or_else(missing)?;
        if matches!(self.tree.node(entry.node).kind, Kind::Dir(_)) {
            return Err(EntryError::HardlinkToDirectory.into());
        }
        if self.tree.node(entry.node).links >= 65000 {
            return Err(EntryError::TooManyLinks.into());
        }
        self.tree.link(dir, name, entry.node, self.layer);
        self.tree.hardlinks += 1;
        Ok(())
    }

    /// Walks `parts` from the root following symlinks inside the root.
    /// Missing directories are created when `create` is set (mode 0755,
    /// owned by root, as umoci's `MkdirAll`), else `None` is returned.
    fn resolve_dir(&mut self, parts: &[&[u8]], create: bool) -> Result<Option<NodeId>, Step> {
        let mut stack: Vec<NodeId> = vec![ROOT];
        let mut pending: VecDeque<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let mut followed = 0;
        let mut steps = 0usize;
        while let Some(part) = pending.pop_front() {
            steps += 1;
            if steps > MAX_RESOLVE_STEPS {
                return Err(EntryError::TooManySymlinks.into());
            }
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            if part.len() > MAX_NAME {
                return Err(EntryError::NameTooLong.into());
            }
            if stack.len() > self.limits.max_path_depth as usize {
                return Err(Step::Other(Error::LimitExceeded {
                    limit: Limit::PathDepth,
                    max: self.limits.max_path_depth.into(),
                }));
            }
            let cur = *stack.last().unwrap_or(&ROOT);
            let Some(entry) = self.tree.lookup(cur, &part) else {
                if !create {
                    return Ok(None);
                }
                let meta = Meta {
                    perm: 0o755,
                    ..Meta::default()
                };
                let node = self.tree.push(meta, Kind::Dir(BTreeMap::new()));
                self.tree.link(cur, &part, node, self.layer);
                stack.push(node);
                continue;
            };
            match &self.tree.node(entry.node).kind {
                Kind::Dir(_) => stack.push(entry.node),
                Kind::Symlink(target) => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(EntryError::TooManySymlinks.into());
                    }
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    // The target's parts count against the budget before
                    // they are queued, not only as they are walked.
                    let parts: Vec<&[u8]> = target.split(|&b| b == b'/').collect();
                    steps += parts.len();
                    if steps > MAX_RESOLVE_STEPS {
                        return Err(EntryError::TooManySymlinks.into());
                    }
                    for p in parts.into_iter().rev() {
                        pending.push_front(p.to_vec());
                    }
                }
                _ => return Err(EntryError::NotADirectory.into()),
            }
        }
        Ok(stack.last().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_confined() {
        assert_eq!(components(b"./a//b/./c/"), [b"a", b"b", b"c"]);
        assert_eq!(
            components(b"../../etc/passwd"),
            [b"etc" as &[u8], b"passwd"]
        );
        assert_eq!(components(b"/a/../../b"), [b"b"]);
        assert!(components(b"./").is_empty());
    }

    #[test]
    fn pax_times_match_go() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).unwrap();
        assert_eq!(
            t("1700000000.5"),
            Timestamp {
                secs: 1_700_000_000,
                nanos: 500_000_000
            }
        );
        assert_eq!(t("12"), Timestamp { secs: 12, nanos: 0 });
        assert_eq!(
            t("-1.25"),
            Timestamp {
                secs: -2,
                nanos: 750_000_000
            }
        );
        assert_eq!(
            t("1.1234567891"),
            Timestamp {
                secs: 1,
                nanos: 123_456_789
            }
        );
        assert!(parse_pax_time(b"1.x").is_err());
        assert!(parse_pax_time(b"").is_err());
    }
}
