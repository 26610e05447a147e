//! The file system being built: an arena of inodes with their metadata and
//! block extents (file data is already on disk when a node exists).

use std::collections::BTreeMap;

/// Index of a node in [`Tree::nodes`] (not the ext4 inode number).
pub(crate) type NodeId = u32;

/// The root directory's node.
pub(crate) const ROOT: NodeId = 0;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timestamp {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
}

/// An extended attribute: full name (`user.foo`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Xattr {
    pub(crate) name: Box<[u8]>,
    pub(crate) value: Box<[u8]>,
}

/// Inode metadata taken from a tar header.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    /// Permission bits, incl. setuid/setgid/sticky (`mode & 0o7777`).
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: Timestamp,
    pub(crate) atime: Timestamp,
    pub(crate) xattrs: Vec<Xattr>,
}

/// A run of physical blocks holding logical blocks `logical..logical+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) logical: u32,
    pub(crate) start: u32,
    pub(crate) len: u32,
}

/// Longest extent ext4 allows for initialized data.
pub(crate) const MAX_EXTENT_LEN: u32 = 32768;

/// A directory entry: the node it names and the layer that wrote it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) node: NodeId,
    pub(crate) layer: u32,
}

/// What a node is.
#[derive(Debug)]
pub(crate) enum Kind {
    Dir(BTreeMap<Box<[u8]>, Entry>),
    File { size: u64, extents: Vec<Extent> },
    Symlink(Box<[u8]>),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

impl Kind {
    /// The `S_IFMT` bits of `i_mode`.
    pub(crate) fn format_bits(&self) -> u16 {
        match self {
            Self::Dir(_) => 0o040000,
            Self::File { .. } => 0o100000,
            Self::Symlink(_) => 0o120000,
            Self::CharDevice { .. } => 0o020000,
            Self::BlockDevice { .. } => 0o060000,
            Self::Fifo => 0o010000,
        }
    }

    /// The `file_type` byte of a directory entry.
    pub(crate) fn dirent_type(&self) -> u8 {
        match self {
            Self::File { .. } => 1,
            Self::Dir(_) => 2,
            Self::CharDevice { .. } => 3,
            Self::BlockDevice { .. } => 4,
            Self::Fifo => 5,
            Self::Symlink(_) => 7,
        }
    }
}

/// An inode.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) meta: Meta,
    pub(crate) kind: Kind,
    /// Directory entries naming this node (hardlinks); 0 once removed.
    pub(crate) links: u32,
}

/// The whole file system tree.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
    /// Nodes currently linked into the tree (the root included).
    pub(crate) live: u64,
    /// Hardlinks made (they count against the inode limit too).
    pub(crate) hardlinks: u64,
    /// Bytes of names, symlink targets and xattrs taken in so far (what
    /// the tree holds in memory beyond its fixed-size nodes).
    pub(crate) meta_bytes: u64,
    /// Directories already made opaque in `memo_layer`.
    opaque_done: std::collections::HashSet<NodeId>,
    /// Entries known to hold something `memo_layer` wrote (which stays so
    /// for the rest of that layer: its whiteouts only remove lower content).
    touched: std::collections::HashSet<NodeId>,
    memo_layer: Option<u32>,
}

impl Tree {
    /// A tree with only a root directory (`0755`, owned by root, time 0),
    /// as an image whose layers never mention `/` gets.
    pub(crate) fn new() -> Self {
        let root = Node {
            meta: Meta {
                perm: 0o755,
                ..Meta::default()
            },
            kind: Kind::Dir(BTreeMap::new()),
            links: 1,
        };
        Self {
            nodes: vec![root],
            live: 1,
            hardlinks: 0,
            meta_bytes: 0,
            opaque_done: std::collections::HashSet::new(),
            touched: std::collections::HashSet::new(),
            memo_layer: None,
        }
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// The entries of `dir`, or `None` if it is not a directory.
    pub(crate) fn entries(&self, dir: NodeId) -> Option<&BTreeMap<Box<[u8]>, Entry>> {
        match &self.node(dir).kind {
            Kind::Dir(entries) => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<Entry> {
        self.entries(dir)?.get(name).copied()
    }

    /// Adds a node; the caller links it with [`Tree::link`].
    pub(crate) fn push(&mut self, meta: Meta, kind: Kind) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
        let xattrs: usize = meta
            .xattrs
            .iter()
            .map(|x| x.name.len() + x.value.len())
            .sum();
        let target = match &kind {
            Kind::Symlink(t) => t.len(),
            _ => 0,
        };
        self.meta_bytes = self.meta_bytes.saturating_add((xattrs + target) as u64);
        self.nodes.push(Node {
            meta,
            kind,
            links: 0,
        });
        id
    }

    /// Names `node` as `name` in `dir` (which must be a directory without
    /// that name).
    pub(crate) fn link(&mut self, dir: NodeId, name: &[u8], node: NodeId, layer: u32) {
        self.meta_bytes = self.meta_bytes.saturating_add(name.len() as u64);
        if let Kind::Dir(entries) = &mut self.nodes[dir as usize].kind {
            entries.insert(name.into(), Entry { node, layer });
            let target = &mut self.nodes[node as usize];
            target.links += 1;
            if target.links == 1 {
                self.live += 1;
            }
        }
    }

    /// Removes `name` from `dir`; a node whose last name goes is freed with
    /// its whole subtree, and its data blocks are passed to `free`.
    pub(crate) fn unlink(&mut self, dir: NodeId, name: &[u8], free: &mut dyn FnMut(&[Extent])) {
        let Kind::Dir(entries) = &mut self.nodes[dir as usize].kind else {
            return;
        };
        let Some(entry) = entries.remove(name) else {
            return;
        };
        let mut pending = vec![entry.node];
        while let Some(id) = pending.pop() {
            let node = &mut self.nodes[id as usize];
            node.links = node.links.saturating_sub(1);
            if node.links > 0 {
                continue;
            }
            self.live -= 1;
            // A dead node keeps no xattrs or link target in memory.
            node.meta = Meta::default();
            match std::mem::replace(&mut node.kind, Kind::Fifo) {
                Kind::Dir(children) => pending.extend(children.values().map(|e| e.node)),
                Kind::File { extents, .. } => free(&extents),
                _ => {}
            }
        }
    }

    /// Whether the entry was written by `layer`, or is a directory holding
    /// something that was: such entries survive that layer's whiteouts.
    /// (Remembered for the layer, so that repeated whiteouts of a big
    /// directory do not walk it again each time.)
    pub(crate) fn touched_by(&mut self, entry: Entry, layer: u32) -> bool {
        self.memo_for(layer);
        if self.touched.contains(&entry.node) {
            return true;
        }
        // Directories are never hardlinked, so this walk is a tree walk.
        let mut pending = vec![entry];
        while let Some(e) = pending.pop() {
            if e.layer == layer {
                self.touched.insert(entry.node);
                return true;
            }
            if let Some(children) = self.entries(e.node) {
                pending.extend(children.values().copied());
            }
        }
        false
    }

    /// Forgets what was remembered for an earlier layer.
    fn memo_for(&mut self, layer: u32) {
        if self.memo_layer != Some(layer) {
            self.memo_layer = Some(layer);
            self.opaque_done.clear();
            self.touched.clear();
        }
    }

    /// Applies a whiteout of `name` in `dir` for `layer`: removes what lower
    /// layers put there, keeping anything `layer` itself wrote (OCI image
    /// spec: whiteouts only hide lower content).
    pub(crate) fn whiteout(
        &mut self,
        dir: NodeId,
        name: &[u8],
        layer: u32,
        free: &mut dyn FnMut(&[Extent]),
    ) {
        let Some(entry) = self.lookup(dir, name) else {
            return;
        };
        if self.touched_by(entry, layer) {
            // Written (or partly written) by this layer: only the lower
            // content inside it goes.
            self.opaque(entry.node, layer, free);
        } else {
            self.unlink(dir, name, free);
        }
    }

    /// Applies an opaque-directory marker: everything lower layers put in
    /// `dir` goes, what `layer` wrote stays.
    pub(crate) fn opaque(&mut self, dir: NodeId, layer: u32, free: &mut dyn FnMut(&[Extent])) {
        // Once per directory and layer: what the layer adds afterwards is
        // its own, so a repeated marker has nothing left to hide (and must
        // not cost a walk over the directory again).
        self.memo_for(layer);
        if !self.opaque_done.insert(dir) {
            return;
        }
        let names: Vec<Box<[u8]>> = match self.entries(dir) {
            Some(entries) => entries.keys().cloned().collect(),
            None => return,
        };
        for name in names {
            let Some(entry) = self.lookup(dir, &name) else {
                continue;
            };
            if entry.layer == layer {
                // Re-declared (or created) by this layer: its lower
                // children still go, as umoci's walk removes them.
                if self.entries(entry.node).is_some() {
                    self.opaque(entry.node, layer, free);
                }
                continue;
            }
            if self.touched_by(entry, layer) {
                self.opaque(entry.node, layer, free);
            } else {
                self.unlink(dir, &name, free);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_layer_touched_is_remembered_for_that_layer_only() {
        let mut t = Tree::new();
        let d = t.push(Meta::default(), Kind::Dir(BTreeMap::new()));
        t.link(ROOT, b"d", d, 0);
        for (name, layer) in [(&b"old"[..], 0), (&b"new"[..], 1)] {
            let f = t.push(Meta::default(), Kind::Fifo);
            t.link(d, name, f, layer);
        }
        let entry = t.lookup(ROOT, b"d").unwrap();
        assert!(t.touched_by(entry, 1));
        assert!(t.touched.contains(&d));
        assert!(!t.touched_by(entry, 2));
        assert!(t.touched.is_empty());
    }

    fn file(tree: &mut Tree, dir: NodeId, name: &str, layer: u32) -> NodeId {
        let id = tree.push(Meta::default(), Kind::Fifo);
        tree.link(dir, name.as_bytes(), id, layer);
        id
    }

    fn dir(tree: &mut Tree, parent: NodeId, name: &str, layer: u32) -> NodeId {
        let id = tree.push(Meta::default(), Kind::Dir(BTreeMap::new()));
        tree.link(parent, name.as_bytes(), id, layer);
        id
    }

    fn names(tree: &Tree, dir: NodeId) -> Vec<String> {
        tree.entries(dir)
            .unwrap()
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn unlinking_a_directory_frees_its_subtree_but_not_shared_inodes() {
        let mut tree = Tree::new();
        let d = dir(&mut tree, ROOT, "d", 0);
        let f = tree.push(
            Meta::default(),
            Kind::File {
                size: 4096,
                extents: vec![Extent {
                    logical: 0,
                    start: 100,
                    len: 1,
                }],
            },
        );
        tree.link(d, b"f", f, 0);
        tree.link(ROOT, b"hard", f, 0);
        let mut freed = Vec::new();
        tree.unlink(ROOT, b"d", &mut |e| freed.extend_from_slice(e));
        assert!(freed.is_empty(), "the file still has a name");
        assert_eq!(tree.node(f).links, 1);
        tree.unlink(ROOT, b"hard", &mut |e| freed.extend_from_slice(e));
        assert_eq!(freed.len(), 1);
        assert_eq!(tree.live, 1);
    }

    #[test]
    fn opaque_keeps_only_what_the_layer_wrote() {
        let mut tree = Tree::new();
        let d = dir(&mut tree, ROOT, "d", 0);
        file(&mut tree, d, "lower", 0);
        let sub = dir(&mut tree, d, "sub", 0);
        file(&mut tree, sub, "lower", 0);
        file(&mut tree, sub, "upper", 1);
        file(&mut tree, d, "upper", 1);
        tree.opaque(d, 1, &mut |_| {});
        assert_eq!(names(&tree, d), ["sub", "upper"]);
        assert_eq!(names(&tree, sub), ["upper"]);
    }

    #[test]
    fn opaque_reaches_into_directories_the_layer_redeclared() {
        let mut tree = Tree::new();
        let d = dir(&mut tree, ROOT, "d", 0);
        let sub = dir(&mut tree, d, "sub", 0);
        file(&mut tree, sub, "old", 0);
        // Layer 1 re-declares d/sub, then marks d opaque.
        if let Kind::Dir(entries) = &mut tree.node_mut(d).kind {
            entries.get_mut(b"sub".as_slice()).unwrap().layer = 1;
        }
        tree.opaque(d, 1, &mut |_| {});
        assert_eq!(names(&tree, d), ["sub"]);
        assert!(names(&tree, sub).is_empty());
    }

    #[test]
    fn whiteout_hides_lower_entries_only() {
        let mut tree = Tree::new();
        file(&mut tree, ROOT, "a", 0);
        file(&mut tree, ROOT, "b", 1);
        tree.whiteout(ROOT, b"a", 1, &mut |_| {});
        tree.whiteout(ROOT, b"b", 1, &mut |_| {});
        tree.whiteout(ROOT, b"missing", 1, &mut |_| {});
        assert_eq!(names(&tree, ROOT), ["b"]);
    }
}
