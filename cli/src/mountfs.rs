//! The read-only filesystem `dedupe mount` serves through FUSE:
//!
//! ```text
//! by-id/<snapshot id>/…              every snapshot's tree
//! by-name/<name>/<time>/…            the same, by name and time (UTC)
//! by-name/<name>/latest -> <time>
//! ```
//!
//! Trees are read from the repository when a snapshot is first entered;
//! file contents when they are read, chunk by chunk, through a shared cache
//! (`dedupe_store::ChunkCache`). A stream snapshot (xbstream, tar) shows
//! its files, as it was demuxed. Hard links are the same inode as their
//! target. A read that meets a damaged object fails with EIO and the
//! object's name on stderr; other files still read.
//!
//! `fuser` (maintained, pure Rust, no libfuse at build time; mounting goes
//! through `fusermount3`) rather than bindings to libfuse.

use dedupe_store::{ChunkCache, FileMap, Indexed, Node, NodeKind};
use fuser::{FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The kernel may keep attributes and names this long: nothing changes.
const TTL: Duration = Duration::from_secs(3600);
/// Decoded chunks kept for all open files together.
const CACHE_BYTES: usize = 64 << 20;

enum Entry {
    /// A directory made by the mount (the root, `by-id`, `by-name`, a name).
    Dir(BTreeMap<String, u64>),
    /// `latest`.
    Link(String),
    /// A snapshot's root, its tree read on first use.
    Snapshot { snap: usize },
    /// A node of a loaded tree.
    Node { snap: usize, node: usize },
}

struct Tree {
    nodes: Vec<Node>,
    /// Inode of node 0; node `i` is `base + i`.
    base: u64,
    /// Per node: its children by name (directories only).
    children: Vec<BTreeMap<String, usize>>,
}

pub(crate) struct MountFs {
    repo: Indexed,
    /// Snapshot ids, in the catalogue's order.
    snapshots: Vec<String>,
    trees: Vec<Option<Tree>>,
    /// Inode `n` is `entries[n - 1]`.
    entries: Vec<Entry>,
    open: HashMap<u64, Arc<FileMap>>,
    next_fh: u64,
    cache: ChunkCache,
    /// When the mount started: the time of the directories it makes.
    started: SystemTime,
    uid: u32,
    gid: u32,
}

/// The name of a snapshot under `by-name/<name>/`: its time in UTC, to the second.
fn time_name(time: &str) -> String {
    time.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| time.replace('/', "_"))
}

impl MountFs {
    /// The layout of every snapshot in `repo`'s listing (of `name` only, if given).
    pub(crate) fn new(repo: Indexed, name: Option<&str>) -> dedupe_store::Result<MountFs> {
        let listed = repo.snapshots(name)?;
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut fs = MountFs {
            repo,
            snapshots: Vec::new(),
            trees: Vec::new(),
            entries: Vec::new(),
            open: HashMap::new(),
            next_fh: 1,
            cache: ChunkCache::new(CACHE_BYTES),
            started: SystemTime::now(),
            uid,
            gid,
        };
        let root = fs.push(Entry::Dir(BTreeMap::new()));
        let by_id = fs.push(Entry::Dir(BTreeMap::new()));
        let by_name = fs.push(Entry::Dir(BTreeMap::new()));
        fs.add(root, "by-id", by_id);
        fs.add(root, "by-name", by_name);
        let mut names: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for (snap, (id, m)) in listed.into_iter().enumerate() {
            fs.snapshots.push(id.clone());
            fs.trees.push(None);
            let ino = fs.push(Entry::Snapshot { snap });
            fs.add(by_id, &id, ino);
            let dir = match names.get(&m.name) {
                Some((dir, _)) => *dir,
                None => {
                    let dir = fs.push(Entry::Dir(BTreeMap::new()));
                    fs.add(by_name, &m.name, dir);
                    dir
                }
            };
            let mut t = time_name(&m.time);
            // Two snapshots of one name in the same second.
            if matches!(&fs.entries[dir as usize - 1], Entry::Dir(c) if c.contains_key(&t)) {
                t = format!("{t}-{}", &id[..8]);
            }
            fs.add(dir, &t, ino);
            names.insert(m.name.clone(), (dir, t));
        }
        for (dir, newest) in names.into_values() {
            let link = fs.push(Entry::Link(newest));
            fs.add(dir, "latest", link);
        }
        Ok(fs)
    }

    fn push(&mut self, e: Entry) -> u64 {
        self.entries.push(e);
        self.entries.len() as u64
    }

    fn add(&mut self, dir: u64, name: &str, ino: u64) {
        if let Entry::Dir(c) = &mut self.entries[dir as usize - 1] {
            c.insert(name.to_string(), ino);
        }
    }

    /// Reads snapshot `snap`'s tree if it is not yet; false (logged) when it cannot be read.
    fn load(&mut self, snap: usize) -> bool {
        if self.trees[snap].is_some() {
            return true;
        }
        let id = &self.snapshots[snap];
        let tree = self.repo.find_snapshot(id, None).and_then(|(_, m)| self.repo.read_tree(&m));
        let mut nodes = match tree {
            Ok(t) => t.nodes,
            Err(e) => {
                eprintln!("dedupe: mount: snapshot {id}: {e}");
                return false;
            }
        };
        // A stream's tree has no root node (its files are the stream's members): one is made.
        if !nodes.iter().any(|n| n.path == ".") {
            let like = nodes.first();
            nodes.push(Node {
                path: ".".into(),
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: like.map_or(0, |n| n.uid),
                gid: like.map_or(0, |n| n.gid),
                mtime_ns: like.map_or(0, |n| n.mtime_ns),
                size: 0,
                target: None,
                content: Vec::new(),
                inode: 0,
                ctime_ns: 0,
            });
        }
        let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.path.as_str(), i)).collect();
        let mut children = vec![BTreeMap::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            if n.path == "." {
                continue;
            }
            let (parent, leaf) = n.path.rsplit_once('/').unwrap_or((".", &n.path));
            if let Some(&p) = index.get(parent) {
                children[p].insert(leaf.to_string(), i);
            }
        }
        let base = self.entries.len() as u64 + 1;
        for node in 0..nodes.len() {
            self.push(Entry::Node { snap, node });
        }
        self.trees[snap] = Some(Tree { nodes, base, children });
        true
    }

    /// The node an inode shows (a snapshot's root once loaded), hard links resolved.
    fn node(&mut self, ino: u64) -> Option<(usize, usize)> {
        let (snap, node) = match self.entries.get(ino as usize - 1)? {
            Entry::Snapshot { snap } => {
                let snap = *snap;
                if !self.load(snap) {
                    return None;
                }
                let tree = self.trees[snap].as_ref()?;
                (snap, tree.nodes.iter().position(|n| n.path == ".")?)
            }
            Entry::Node { snap, node } => (*snap, *node),
            _ => return None,
        };
        let tree = self.trees[snap].as_ref()?;
        let n = &tree.nodes[node];
        if n.kind == NodeKind::Hardlink {
            let target = n.target.as_deref()?;
            return tree.nodes.iter().position(|m| m.path == target).map(|t| (snap, t));
        }
        Some((snap, node))
    }

    /// The inode a tree node is shown as (a snapshot's root keeps the snapshot's).
    fn ino_of(&self, ino_asked: u64, snap: usize, node: usize) -> u64 {
        let tree = self.trees[snap].as_ref().expect("loaded");
        if tree.nodes[node].path == "." {
            ino_asked
        } else {
            tree.base + node as u64
        }
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o555, 0, self.started, self.uid, self.gid)
    }

    #[allow(clippy::too_many_arguments)]
    fn attr(&self, ino: u64, kind: FileType, perm: u16, size: u64, t: SystemTime, uid: u32, gid: u32) -> FileAttr {
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn getattr_of(&mut self, ino: u64) -> Option<FileAttr> {
        match self.entries.get(ino as usize - 1)? {
            Entry::Dir(_) => return Some(self.dir_attr(ino)),
            Entry::Link(t) => {
                return Some(self.attr(ino, FileType::Symlink, 0o777, t.len() as u64, self.started, self.uid, self.gid))
            }
            _ => {}
        }
        let (snap, node) = self.node(ino)?;
        let shown = self.ino_of(ino, snap, node);
        let n = &self.trees[snap].as_ref()?.nodes[node];
        let t = UNIX_EPOCH + Duration::from_nanos(n.mtime_ns.max(0) as u64);
        let (kind, size) = match n.kind {
            NodeKind::Dir => (FileType::Directory, 0),
            NodeKind::Symlink => (FileType::Symlink, n.target.as_deref().map_or(0, |t| t.len() as u64)),
            NodeKind::File | NodeKind::Hardlink => (FileType::RegularFile, n.size),
        };
        Some(self.attr(shown, kind, (n.mode & 0o7777) as u16, size, t, n.uid, n.gid))
    }

    /// The children of a directory inode: name, inode.
    fn children(&mut self, ino: u64) -> Option<Vec<(String, u64)>> {
        if let Entry::Dir(c) = self.entries.get(ino as usize - 1)? {
            return Some(c.iter().map(|(k, v)| (k.clone(), *v)).collect());
        }
        let (snap, node) = self.node(ino)?;
        let tree = self.trees[snap].as_ref()?;
        Some(tree.children[node].iter().map(|(k, &i)| (k.clone(), tree.base + i as u64)).collect())
    }
}

impl Filesystem for MountFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut fuser::KernelConfig) -> Result<(), libc::c_int> {
        // Larger reads ahead: fewer requests for a `cat` of a table file (the kernel may grant less).
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_string_lossy();
        let child = self.children(parent).and_then(|c| c.into_iter().find(|(n, _)| *n == name).map(|(_, i)| i));
        match child.and_then(|ino| self.getattr_of(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.getattr_of(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        if let Some(Entry::Link(t)) = self.entries.get(ino as usize - 1) {
            return reply.data(t.as_bytes());
        }
        let target = self.node(ino).and_then(|(s, n)| self.trees[s].as_ref()?.nodes[n].target.clone());
        match target {
            Some(t) => reply.data(t.as_bytes()),
            None => reply.error(libc::EINVAL),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        let Some((snap, node)) = self.node(ino) else { return reply.error(libc::ENOENT) };
        let n = &self.trees[snap].as_ref().expect("loaded").nodes[node];
        match self.repo.file_map(n) {
            Ok(map) => {
                let fh = self.next_fh;
                self.next_fh += 1;
                self.open.insert(fh, Arc::new(map));
                reply.opened(fh, 0);
            }
            Err(e) => {
                eprintln!("dedupe: mount: {} in snapshot {}: {e}", n.path, self.snapshots[snap]);
                reply.error(libc::EIO);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(map) = self.open.get(&fh).cloned() else { return reply.error(libc::EBADF) };
        let mut buf = vec![0u8; size as usize];
        match self.repo.read_at(&map, offset.max(0) as u64, &mut buf, &self.cache) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                let what = self.node(ino).and_then(|(s, n)| Some(self.trees[s].as_ref()?.nodes[n].path.clone()));
                eprintln!("dedupe: mount: {}: {e}", what.unwrap_or_else(|| format!("inode {ino}")));
                reply.error(libc::EIO);
            }
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.open.remove(&fh);
        reply.ok();
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let Some(children) = self.children(ino) else { return reply.error(libc::ENOTDIR) };
        let mut all = vec![(".".to_string(), ino), ("..".to_string(), ino)];
        all.extend(children);
        for (i, (name, child)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            let kind = match self.entries.get(child as usize - 1) {
                Some(Entry::Dir(_)) | Some(Entry::Snapshot { .. }) => FileType::Directory,
                Some(Entry::Link(_)) => FileType::Symlink,
                _ => self.getattr_of(child).map_or(FileType::RegularFile, |a| a.kind),
            };
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}
