//! The read-only filesystem `dedupe mount` serves through FUSE:
//!
//! ```text
//! by-id/<snapshot id>/…              every snapshot's tree
//! by-name/<name>/<time>/…            the same, by name and time (UTC)
//! by-name/<name>/latest -> <time>
//! logs/<name>/<file>                 every archived binlog and WAL file (the best copy)
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

use dedupe_ingest::facts::LogKind;
use dedupe_recovery::archive::archived;
use dedupe_store::{ChunkCache, FileMap, Indexed, Node, NodeKind};
use fuser::{FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The kernel may keep a snapshot's names and attributes this long: they never change.
const TTL: Duration = Duration::from_secs(3600);
/// And the mount's own directories' (and `latest`'s) this long: new snapshots appear.
const SHORT_TTL: Duration = Duration::from_secs(1);
/// A look at the mount's own directories lists the repository again at most this often.
const REFRESH: Duration = Duration::from_secs(5);
const BY_ID: u64 = 2;
const BY_NAME: u64 = 3;
const LOGS: u64 = 4;
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
    /// An archived log file: the one file of its manifest's tree (read on
    /// open; its size and time come from the manifest, so listing a
    /// thousand WAL files reads nothing).
    Log { snap: usize, size: u64, time: SystemTime },
}

struct Tree {
    nodes: Vec<Node>,
    /// Inode of node 0; node `i` is `base + i`.
    base: u64,
    /// Per node: its children by name (directories only).
    children: Vec<BTreeMap<String, usize>>,
    /// The root node (`.`).
    root: usize,
}

pub(crate) struct MountFs {
    repo: Indexed,
    /// `--name`: only its snapshots and logs.
    only: Option<String>,
    /// Snapshot (and archived log) ids and manifests, in the order seen.
    snapshots: Vec<String>,
    manifests: Vec<dedupe_store::Manifest>,
    /// Each id shown, to its position in `snapshots`.
    known: HashMap<String, usize>,
    /// Per name: its `by-name/<name>` directory and `latest` link.
    names: HashMap<String, (u64, u64)>,
    /// Per name: its `logs/<name>` directory.
    log_names: HashMap<String, u64>,
    trees: Vec<Option<Tree>>,
    /// Inode `n` is `entries[n - 1]`.
    entries: Vec<Entry>,
    open: HashMap<u64, Arc<FileMap>>,
    next_fh: u64,
    /// The buffer reads are served from (reused: see `read`).
    buf: Vec<u8>,
    cache: ChunkCache,
    /// When the mount started: the time of the directories it makes.
    started: SystemTime,
    refreshed: Instant,
    uid: u32,
    gid: u32,
}

/// The name of a snapshot under `by-name/<name>/`: its time in UTC, to the second.
fn time_name(time: &str) -> String {
    time.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| time.replace('/', "_"))
}

/// A directory the tree does not hold, with the owner and time of `like`;
/// private (0700), as a database server wants its data directory.
fn dir_like(path: &str, like: Option<&Node>) -> Node {
    Node {
        path: path.into(),
        kind: NodeKind::Dir,
        mode: 0o700,
        uid: like.map_or(0, |n| n.uid),
        gid: like.map_or(0, |n| n.gid),
        mtime_ns: like.map_or(0, |n| n.mtime_ns),
        size: 0,
        target: None,
        content: Vec::new(),
        inode: 0,
        ctime_ns: 0,
    }
}

/// `nodes` with the directories their paths name and the tree does not
/// hold: a stream's tree has no root node, nor nodes for the directories of
/// its members (`sbtest/t1.ibd`); they are made, like the first node.
pub(crate) fn with_parents(mut nodes: Vec<Node>) -> Vec<Node> {
    let mut have: std::collections::HashSet<String> = nodes.iter().map(|n| n.path.clone()).collect();
    let mut made = Vec::new();
    for n in &nodes {
        let mut path = n.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if have.insert(parent.to_string()) {
                made.push(dir_like(parent, Some(n)));
            }
            path = parent;
        }
        if n.path != "." && have.insert(".".into()) {
            made.push(dir_like(".", Some(n)));
        }
    }
    nodes.extend(made);
    if nodes.is_empty() {
        nodes.push(dir_like(".", None));
    }
    nodes
}

/// The attributes of a file the mount shows, all its times `t`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attr(ino: u64, kind: FileType, perm: u16, size: u64, t: SystemTime, uid: u32, gid: u32) -> FileAttr {
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

impl MountFs {
    /// Nothing shown yet.
    fn empty(repo: Indexed) -> MountFs {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MountFs {
            repo,
            only: None,
            snapshots: Vec::new(),
            manifests: Vec::new(),
            known: HashMap::new(),
            names: HashMap::new(),
            log_names: HashMap::new(),
            trees: Vec::new(),
            entries: Vec::new(),
            open: HashMap::new(),
            next_fh: 1,
            buf: Vec::new(),
            cache: ChunkCache::new(CACHE_BYTES),
            started: SystemTime::now(),
            refreshed: Instant::now(),
            uid,
            gid,
        }
    }

    /// The layout of every snapshot in `repo`'s listing (of `name` only, if given).
    pub(crate) fn new(repo: Indexed, name: Option<&str>) -> dedupe_store::Result<MountFs> {
        let mut fs = MountFs::empty(repo);
        fs.only = name.map(str::to_string);
        let root = fs.push(Entry::Dir(BTreeMap::new()));
        for (dir, ino) in [("by-id", BY_ID), ("by-name", BY_NAME), ("logs", LOGS)] {
            assert_eq!(fs.push(Entry::Dir(BTreeMap::new())), ino);
            fs.add(root, dir, ino);
        }
        fs.add_new()?;
        Ok(fs)
    }

    /// One snapshot's tree as the whole filesystem (`restore --mount`).
    pub(crate) fn one(repo: Indexed, id: &str, manifest: &dedupe_store::Manifest) -> MountFs {
        let mut fs = MountFs::empty(repo);
        let snap = fs.remember(id, manifest);
        // The root (inode 1) is the snapshot's root.
        fs.push(Entry::Snapshot { snap });
        fs
    }

    /// Adds the snapshots and archived logs of the listing not shown yet.
    fn add_new(&mut self) -> dedupe_store::Result<()> {
        let only = self.only.clone();
        for (id, m) in self.repo.snapshots(only.as_deref())? {
            if self.known.contains_key(&id) {
                continue;
            }
            let snap = self.remember(&id, &m);
            let ino = self.push(Entry::Snapshot { snap });
            self.add(BY_ID, &id, ino);
            let (dir, link) = match self.names.get(&m.name) {
                Some(&d) => d,
                None => {
                    let dir = self.push(Entry::Dir(BTreeMap::new()));
                    self.add(BY_NAME, &m.name, dir);
                    let link = self.push(Entry::Link(String::new()));
                    self.add(dir, "latest", link);
                    self.names.insert(m.name.clone(), (dir, link));
                    (dir, link)
                }
            };
            let mut t = time_name(&m.time);
            // Two snapshots of one name in the same second.
            if matches!(&self.entries[dir as usize - 1], Entry::Dir(c) if c.contains_key(&t)) {
                t = format!("{t}-{}", &id[..8]);
            }
            self.add(dir, &t, ino);
            // The listing is oldest first: the last one seen is the newest.
            self.entries[link as usize - 1] = Entry::Link(t);
        }
        let mut log_names: Vec<String> = self
            .repo
            .catalogue()
            .list(dedupe_store::Kind::Log, only.as_deref())?
            .into_iter()
            .map(|(_, m)| m.name)
            .collect();
        log_names.sort();
        log_names.dedup();
        for log_name in log_names {
            let dir = match self.log_names.get(&log_name) {
                Some(&d) => d,
                None => {
                    let dir = self.push(Entry::Dir(BTreeMap::new()));
                    self.add(LOGS, &log_name, dir);
                    self.log_names.insert(log_name.clone(), dir);
                    dir
                }
            };
            for kind in [LogKind::Binlog, LogKind::Wal] {
                let files = archived(self.repo.catalogue(), &log_name, kind).map_err(|e| {
                    dedupe_store::Error::Invalid(format!("listing the archived logs of {log_name}: {e}"))
                })?;
                for f in files {
                    // A complete copy that replaces a partial one takes its name.
                    if self.known.contains_key(&f.id) {
                        continue;
                    }
                    let snap = self.remember(&f.id, &f.manifest);
                    let time = f.manifest.time.parse::<jiff::Timestamp>().map(SystemTime::from).unwrap_or(UNIX_EPOCH);
                    let ino = self.push(Entry::Log { snap, size: f.size(), time });
                    self.add(dir, f.file(), ino);
                }
            }
        }
        Ok(())
    }

    fn remember(&mut self, id: &str, m: &dedupe_store::Manifest) -> usize {
        let snap = self.snapshots.len();
        self.snapshots.push(id.to_string());
        self.manifests.push(m.clone());
        self.trees.push(None);
        self.known.insert(id.to_string(), snap);
        snap
    }

    /// Lists the repository again when the last listing is older than
    /// `REFRESH`, on a look at the mount's own directories: new snapshots
    /// and logs appear without remounting.
    fn refresh(&mut self, ino: u64) {
        if !matches!(self.entries.get(ino as usize - 1), Some(Entry::Dir(_))) || self.refreshed.elapsed() < REFRESH {
            return;
        }
        self.refreshed = Instant::now();
        let again = self.repo.relisted().and_then(|repo| {
            self.repo = repo;
            self.add_new()
        });
        if let Err(e) = again {
            eprintln!("dedupe: mount: listing the repository again: {e}");
        }
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
        let tree = self.repo.read_tree(&self.manifests[snap]);
        let nodes = match tree {
            Ok(t) => t.nodes,
            Err(e) => {
                eprintln!("dedupe: mount: snapshot {id}: {e}");
                return false;
            }
        };
        let nodes = with_parents(nodes);
        let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.path.as_str(), i)).collect();
        let root = index["."];
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
        self.trees[snap] = Some(Tree { nodes, base, children, root });
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
                (snap, tree.root)
            }
            Entry::Node { snap, node } => (*snap, *node),
            Entry::Log { snap, .. } => {
                let snap = *snap;
                if !self.load(snap) {
                    return None;
                }
                (snap, 0)
            }
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
        if tree.nodes[node].path == "." || matches!(self.entries[ino_asked as usize - 1], Entry::Log { .. }) {
            ino_asked
        } else {
            tree.base + node as u64
        }
    }

    /// How long the kernel may keep what it was told about `ino`.
    fn ttl(&self, ino: u64) -> Duration {
        match self.entries.get(ino as usize - 1) {
            Some(Entry::Dir(_)) | Some(Entry::Link(_)) => SHORT_TTL,
            _ => TTL,
        }
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        attr(ino, FileType::Directory, 0o555, 0, self.started, self.uid, self.gid)
    }

    fn getattr_of(&mut self, ino: u64) -> Option<FileAttr> {
        match self.entries.get(ino as usize - 1)? {
            Entry::Dir(_) => return Some(self.dir_attr(ino)),
            Entry::Link(t) => {
                return Some(attr(ino, FileType::Symlink, 0o777, t.len() as u64, self.started, self.uid, self.gid))
            }
            Entry::Log { size, time, .. } => {
                return Some(attr(ino, FileType::RegularFile, 0o440, *size, *time, self.uid, self.gid))
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
        Some(attr(shown, kind, (n.mode & 0o7777) as u16, size, t, n.uid, n.gid))
    }

    /// The inode of `name` in directory `ino` (one map lookup, not a copy of the listing).
    fn child(&mut self, ino: u64, name: &str) -> Option<u64> {
        if let Entry::Dir(c) = self.entries.get(ino as usize - 1)? {
            return c.get(name).copied();
        }
        let (snap, node) = self.node(ino)?;
        let tree = self.trees[snap].as_ref()?;
        tree.children[node].get(name).map(|&i| tree.base + i as u64)
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
        let mut child = self.child(parent, &name);
        if child.is_none() {
            self.refresh(parent);
            child = self.child(parent, &name);
        }
        match child.and_then(|ino| self.getattr_of(ino).map(|a| (ino, a))) {
            Some((ino, attr)) => reply.entry(&self.ttl(ino), &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.getattr_of(ino) {
            Some(attr) => reply.attr(&self.ttl(ino), &attr),
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
        // One buffer for every read: a new one would be zeroed each time,
        // one more pass over every byte a `cat` reads.
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < size as usize {
            buf.resize(size as usize, 0);
        }
        let read = self.repo.read_at(&map, offset.max(0) as u64, &mut buf[..size as usize], &self.cache);
        match read {
            Ok(n) => {
                reply.data(&buf[..n]);
                self.buf = buf;
            }
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
        if offset == 0 {
            self.refresh(ino);
        }
        let Some(children) = self.children(ino) else { return reply.error(libc::ENOTDIR) };
        let mut all = vec![(".".to_string(), ino), ("..".to_string(), ino)];
        all.extend(children);
        for (i, (name, child)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            let kind = match self.entries.get(child as usize - 1) {
                Some(Entry::Dir(_)) | Some(Entry::Snapshot { .. }) => FileType::Directory,
                Some(Entry::Link(_)) => FileType::Symlink,
                Some(Entry::Log { .. }) => FileType::RegularFile,
                _ => self.getattr_of(child).map_or(FileType::RegularFile, |a| a.kind),
            };
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}
