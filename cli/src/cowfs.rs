//! The filesystem `restore SNAPSHOT --mount DIR --writable` serves: one
//! snapshot, writable, its changes kept in a local overlay directory, so a
//! server can be prepared and started on last night's backup at once.
//!
//! Copy-on-write happens inside this filesystem, per 4 KiB block: a file's
//! first change makes a sparse file of its size in the overlay, a block is
//! copied there from the repository only when a write covers part of it,
//! and a bitmap says which blocks the overlay holds. A recovery that writes
//! a few pages of a 100 GB table stores those pages, not the table. (An
//! overlayfs over the read-only mount, tried first, copies a whole file up
//! on its first write, and PostgreSQL's recovery failed on it with "Stale
//! file handle" on a rename.) Names, modes, owners and times live in
//! memory: the overlay serves one mount and is removed when it ends; the
//! repository is never written.

use crate::mountfs::{attr, with_parents};
use dedupe_store::{ChunkCache, FileMap, Indexed, Manifest, NodeKind};
use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every change goes through this process, so the kernel may keep
/// attributes briefly; it updates sizes on writes itself.
const TTL: Duration = Duration::from_secs(1);
/// The unit of copy-on-write: the smallest page of the databases we serve.
const BLOCK: u64 = 4096;
/// Decoded chunks kept for all files together.
const CACHE_BYTES: usize = 64 << 20;

/// A file's changes: a sparse file of its size in the overlay.
struct Upper {
    file: File,
    path: PathBuf,
    /// Blocks below `lower_len` the overlay holds (the others read from the snapshot).
    present: Vec<u64>,
    /// Bytes from the start that still come from the snapshot where the
    /// overlay does not hold the block: the snapshot's size, lowered by truncation.
    lower_len: u64,
}

impl Upper {
    fn has(&self, block: u64) -> bool {
        self.present.get((block / 64) as usize).is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    fn set(&mut self, block: u64) {
        if let Some(w) = self.present.get_mut((block / 64) as usize) {
            *w |= 1 << (block % 64);
        }
    }

    /// Whether the byte at `at` comes from the snapshot.
    fn reads_lower(&self, at: u64) -> bool {
        at < self.lower_len && !self.has(at / BLOCK)
    }
}

struct Inode {
    attr: FileAttr,
    /// Directories: their entries.
    children: BTreeMap<OsString, u64>,
    /// Symlinks: the target.
    target: Vec<u8>,
    /// Files of the snapshot: their node, and its chunk map once read.
    lower: Option<usize>,
    map: Option<Arc<FileMap>>,
    upper: Option<Upper>,
    /// Open handles: an unlinked file's overlay goes when the last closes.
    open: u32,
}

pub(crate) struct CowFs {
    repo: Indexed,
    snapshot: String,
    nodes: Vec<dedupe_store::Node>,
    /// Inode `n` is `inodes[n - 1]`; numbers are never reused.
    inodes: Vec<Inode>,
    overlay: PathBuf,
    cache: ChunkCache,
    handles: HashMap<u64, u64>,
    next_fh: u64,
}

fn time_of(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl CowFs {
    /// Snapshot `id`'s tree, writable, its changes in `overlay` (an empty directory).
    pub(crate) fn new(repo: Indexed, id: &str, manifest: &Manifest, overlay: PathBuf) -> dedupe_store::Result<CowFs> {
        let nodes = with_parents(repo.read_tree(manifest)?.nodes);
        let mut fs = CowFs {
            repo,
            snapshot: id.to_string(),
            nodes: Vec::new(),
            inodes: Vec::new(),
            overlay,
            cache: ChunkCache::new(CACHE_BYTES),
            handles: HashMap::new(),
            next_fh: 1,
        };
        // The root first: inode 1.
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| nodes[i].path != ".");
        let mut ino_of: HashMap<&str, u64> = HashMap::new();
        for &i in &order {
            let n = &nodes[i];
            let kind = match n.kind {
                NodeKind::Dir => FileType::Directory,
                NodeKind::Symlink => FileType::Symlink,
                NodeKind::File => FileType::RegularFile,
                NodeKind::Hardlink => continue,
            };
            let target = n.target.clone().unwrap_or_default().into_bytes();
            let size = if kind == FileType::Symlink { target.len() as u64 } else { n.size };
            let ino = fs.inodes.len() as u64 + 1;
            let a = attr(ino, kind, (n.mode & 0o7777) as u16, size, time_of(n.mtime_ns), n.uid, n.gid);
            fs.push(a, (kind == FileType::RegularFile).then_some(i), target);
            ino_of.insert(n.path.as_str(), ino);
        }
        for &i in &order {
            let n = &nodes[i];
            if n.path == "." {
                continue;
            }
            let ino = match n.kind {
                NodeKind::Hardlink => match n.target.as_deref().and_then(|t| ino_of.get(t)) {
                    Some(&t) => {
                        fs.inodes[t as usize - 1].attr.nlink += 1;
                        t
                    }
                    None => continue,
                },
                _ => ino_of[n.path.as_str()],
            };
            let (parent, leaf) = n.path.rsplit_once('/').unwrap_or((".", &n.path));
            if let Some(&p) = ino_of.get(parent) {
                fs.inodes[p as usize - 1].children.insert(OsString::from(leaf), ino);
            }
        }
        fs.nodes = nodes;
        Ok(fs)
    }

    /// Appends `text` to the file `name` at the top of the snapshot (made,
    /// owned like the root, if missing), in the overlay like any write.
    pub(crate) fn append(&mut self, name: &str, text: &[u8]) -> Result<(), i32> {
        let ino = match self.dir(1)?.children.get(OsStr::new(name)) {
            Some(&ino) => ino,
            None => {
                let root = self.inodes[0].attr;
                let a = attr(
                    self.inodes.len() as u64 + 1,
                    FileType::RegularFile,
                    0o600,
                    0,
                    SystemTime::now(),
                    root.uid,
                    root.gid,
                );
                let ino = self.push(a, None, Vec::new());
                self.dir(1)?.children.insert(OsString::from(name), ino);
                ino
            }
        };
        let size = self.inode(ino)?.attr.size;
        self.write_at(ino, size, text)
    }

    fn push(&mut self, attr: FileAttr, lower: Option<usize>, target: Vec<u8>) -> u64 {
        self.inodes.push(Inode { attr, children: BTreeMap::new(), target, lower, map: None, upper: None, open: 0 });
        self.inodes.len() as u64
    }

    fn inode(&mut self, ino: u64) -> Result<&mut Inode, i32> {
        self.inodes.get_mut((ino as usize).wrapping_sub(1)).ok_or(libc::ENOENT)
    }

    fn dir(&mut self, ino: u64) -> Result<&mut Inode, i32> {
        let i = self.inode(ino)?;
        if i.attr.kind != FileType::Directory {
            return Err(libc::ENOTDIR);
        }
        Ok(i)
    }

    /// What a read of the snapshot's copy of `ino` failed on, logged; EIO.
    fn lower_failed(&self, ino: u64, e: impl std::fmt::Display) -> i32 {
        let path = self.inodes[ino as usize - 1].lower.map_or("?", |n| self.nodes[n].path.as_str());
        eprintln!("dedupe: mount: {path} in snapshot {}: {e}", self.snapshot);
        libc::EIO
    }

    /// Reads `buf.len()` bytes at `at` of the snapshot's copy of `ino`.
    fn read_lower(&mut self, ino: u64, at: u64, buf: &mut [u8]) -> Result<(), i32> {
        let inode = &self.inodes[ino as usize - 1];
        let Some(node) = inode.lower else {
            buf.fill(0);
            return Ok(());
        };
        let map = match &inode.map {
            Some(m) => m.clone(),
            None => match self.repo.file_map(&self.nodes[node]) {
                Ok(m) => {
                    let m = Arc::new(m);
                    self.inodes[ino as usize - 1].map = Some(m.clone());
                    m
                }
                Err(e) => return Err(self.lower_failed(ino, e)),
            },
        };
        match self.repo.read_at(&map, at, buf, &self.cache) {
            Ok(n) => {
                // Past the snapshot's end (a file grown since) reads as zeros.
                buf[n..].fill(0);
                Ok(())
            }
            Err(e) => Err(self.lower_failed(ino, e)),
        }
    }

    /// Makes the overlay file of `ino` if it has none yet.
    fn upper(&mut self, ino: u64) -> Result<(), i32> {
        let inode = self.inode(ino)?;
        if inode.upper.is_some() {
            return Ok(());
        }
        let (size, lower_len) = (inode.attr.size, if inode.lower.is_some() { inode.attr.size } else { 0 });
        let path = self.overlay.join(ino.to_string());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| f.set_len(size).map(|()| f))
            .map_err(|e| {
                eprintln!("dedupe: mount: cannot make {} in the overlay: {e}", path.display());
                io_errno(&e)
            })?;
        let words = lower_len.div_ceil(BLOCK).div_ceil(64) as usize;
        self.inode(ino)?.upper = Some(Upper { file, path, present: vec![0; words], lower_len });
        Ok(())
    }

    /// Copies block `b` of `ino` from the snapshot into the overlay, unless
    /// the overlay holds it already or it lies past what the snapshot gives.
    fn fill(&mut self, ino: u64, b: u64) -> Result<(), i32> {
        let up = self.inodes[ino as usize - 1].upper.as_ref().expect("made");
        let start = b * BLOCK;
        if start >= up.lower_len || up.has(b) {
            return Ok(());
        }
        let mut buf = vec![0u8; (up.lower_len - start).min(BLOCK) as usize];
        self.read_lower(ino, start, &mut buf)?;
        let up = self.inodes[ino as usize - 1].upper.as_mut().expect("made");
        up.file.write_all_at(&buf, start).map_err(|e| io_errno(&e))?;
        up.set(b);
        Ok(())
    }

    fn read_at(&mut self, ino: u64, at: u64, len: usize) -> Result<Vec<u8>, i32> {
        let size = self.inode(ino)?.attr.size;
        let end = size.min(at.saturating_add(len as u64));
        let mut out = vec![0u8; end.saturating_sub(at) as usize];
        if self.inodes[ino as usize - 1].upper.is_none() {
            self.read_lower(ino, at, &mut out)?;
            return Ok(out);
        }
        let mut pos = at;
        while pos < end {
            // A run of bytes from one side: up to a block boundary or the
            // snapshot's end, then on while the next block is the same side.
            let up = self.inodes[ino as usize - 1].upper.as_ref().expect("made");
            let lower = up.reads_lower(pos);
            let mut run = pos;
            loop {
                let mut seg = (run / BLOCK + 1) * BLOCK;
                if run < up.lower_len {
                    seg = seg.min(up.lower_len);
                }
                run = seg.min(end);
                if run >= end || up.reads_lower(run) != lower {
                    break;
                }
            }
            let piece = &mut out[(pos - at) as usize..(run - at) as usize];
            if lower {
                self.read_lower(ino, pos, piece)?;
            } else {
                let up = self.inodes[ino as usize - 1].upper.as_ref().expect("made");
                let mut done = 0;
                while done < piece.len() {
                    match up.file.read_at(&mut piece[done..], pos + done as u64) {
                        Ok(0) => break, // zeros already
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(io_errno(&e)),
                    }
                }
            }
            pos = run;
        }
        Ok(out)
    }

    fn write_at(&mut self, ino: u64, at: u64, data: &[u8]) -> Result<(), i32> {
        if data.is_empty() {
            return Ok(());
        }
        self.upper(ino)?;
        let end = at + data.len() as u64;
        let (first, last) = (at / BLOCK, (end - 1) / BLOCK);
        // Blocks the write covers only in part keep the rest of their bytes.
        if !at.is_multiple_of(BLOCK) {
            self.fill(ino, first)?;
        }
        if !end.is_multiple_of(BLOCK) {
            self.fill(ino, last)?;
        }
        let inode = &mut self.inodes[ino as usize - 1];
        let up = inode.upper.as_mut().expect("made");
        up.file.write_all_at(data, at).map_err(|e| io_errno(&e))?;
        for b in first..=last.min(up.lower_len.div_ceil(BLOCK)) {
            up.set(b);
        }
        inode.attr.size = inode.attr.size.max(end);
        inode.attr.blocks = inode.attr.size.div_ceil(512);
        let now = SystemTime::now();
        (inode.attr.mtime, inode.attr.ctime) = (now, now);
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), i32> {
        self.upper(ino)?;
        let lower_len = self.inodes[ino as usize - 1].upper.as_ref().expect("made").lower_len;
        if size < lower_len {
            // The bytes of the last block past the new end must read as
            // zeros if the file grows again: that block moves to the overlay.
            if !size.is_multiple_of(BLOCK) {
                self.fill(ino, size / BLOCK)?;
            }
            self.inodes[ino as usize - 1].upper.as_mut().expect("made").lower_len = size;
        }
        let inode = &mut self.inodes[ino as usize - 1];
        inode.upper.as_ref().expect("made").file.set_len(size).map_err(|e| io_errno(&e))?;
        inode.attr.size = size;
        inode.attr.blocks = size.div_ceil(512);
        let now = SystemTime::now();
        (inode.attr.mtime, inode.attr.ctime) = (now, now);
        Ok(())
    }

    /// Drops the overlay file of an inode no name and no handle reaches.
    fn forget_if_gone(&mut self, ino: u64) {
        let inode = &mut self.inodes[ino as usize - 1];
        if inode.attr.nlink == 0 && inode.open == 0 {
            if let Some(up) = inode.upper.take() {
                let _ = std::fs::remove_file(&up.path);
            }
            inode.map = None;
        }
    }

    /// A new inode named `name` in `parent`.
    fn make(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        perm: u16,
        target: Vec<u8>,
    ) -> Result<FileAttr, i32> {
        if self.dir(parent)?.children.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.inodes.len() as u64 + 1;
        let size = target.len() as u64;
        let a = attr(ino, kind, perm, size, SystemTime::now(), req.uid(), req.gid());
        self.push(a, None, target);
        let p = self.dir(parent)?;
        p.children.insert(name.to_os_string(), ino);
        let now = SystemTime::now();
        (p.attr.mtime, p.attr.ctime) = (now, now);
        if kind == FileType::RegularFile {
            self.upper(ino)?;
        }
        Ok(self.inodes[ino as usize - 1].attr)
    }

    /// Takes `name` out of `parent`; the inode stays while handles are open.
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), i32> {
        let ino = *self.dir(parent)?.children.get(name).ok_or(libc::ENOENT)?;
        let child = self.inode(ino)?;
        match (dir, child.attr.kind == FileType::Directory) {
            (true, false) => return Err(libc::ENOTDIR),
            (false, true) => return Err(libc::EISDIR),
            (true, true) if !child.children.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        child.attr.nlink = if dir { 0 } else { child.attr.nlink.saturating_sub(1) };
        child.attr.ctime = SystemTime::now();
        let p = self.dir(parent)?;
        p.children.remove(name);
        let now = SystemTime::now();
        (p.attr.mtime, p.attr.ctime) = (now, now);
        self.forget_if_gone(ino);
        Ok(())
    }

    fn rename_to(&mut self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32) -> Result<(), i32> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(libc::EINVAL);
        }
        let ino = *self.dir(parent)?.children.get(name).ok_or(libc::ENOENT)?;
        if let Some(&old) = self.dir(newparent)?.children.get(newname) {
            if old == ino {
                return Ok(());
            }
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(libc::EEXIST);
            }
            let moving_dir = self.inode(ino)?.attr.kind == FileType::Directory;
            self.remove(newparent, newname, moving_dir)?;
        }
        self.dir(parent)?.children.remove(name);
        self.dir(newparent)?.children.insert(newname.to_os_string(), ino);
        let now = SystemTime::now();
        for p in [parent, newparent] {
            let p = self.dir(p)?;
            (p.attr.mtime, p.attr.ctime) = (now, now);
        }
        self.inode(ino)?.attr.ctime = now;
        Ok(())
    }

    fn lookup_of(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, i32> {
        let ino = *self.dir(parent)?.children.get(name).ok_or(libc::ENOENT)?;
        Ok(self.inode(ino)?.attr)
    }

    fn open_handle(&mut self, ino: u64) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, ino);
        self.inodes[ino as usize - 1].open += 1;
        fh
    }

    #[allow(clippy::too_many_arguments)]
    fn set_attr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, i32> {
        if let Some(size) = size {
            if self.inode(ino)?.attr.kind != FileType::RegularFile {
                return Err(libc::EINVAL);
            }
            self.truncate(ino, size)?;
        }
        let a = &mut self.inode(ino)?.attr;
        let now = SystemTime::now();
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => now,
        };
        if let Some(m) = mode {
            a.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            a.uid = u;
        }
        if let Some(g) = gid {
            a.gid = g;
        }
        if let Some(t) = atime {
            a.atime = at(t);
        }
        if let Some(t) = mtime {
            a.mtime = at(t);
        }
        a.ctime = now;
        Ok(*a)
    }
}

/// Answers a request that makes a name: its attributes, or the errno.
fn answer_entry(reply: ReplyEntry, r: Result<FileAttr, i32>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, 0),
        Err(e) => reply.error(e),
    }
}

/// Answers a request with nothing to return but success or the errno.
fn answer_empty(reply: ReplyEmpty, r: Result<(), i32>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for CowFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut fuser::KernelConfig) -> Result<(), libc::c_int> {
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        // The kernel gathers a server's small page writes into large ones
        // (each request is a round trip through this one thread).
        let _ = config.add_capabilities(fuser::consts::FUSE_WRITEBACK_CACHE);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        answer_entry(reply, self.lookup_of(parent, name));
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.inode(ino) {
            Ok(i) => reply.attr(&TTL, &i.attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        match self.set_attr(ino, mode, uid, gid, size, atime, mtime) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.inode(ino) {
            Ok(i) if i.attr.kind == FileType::Symlink => reply.data(&i.target),
            Ok(_) => reply.error(libc::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Sockets and pipes are the kernel's business once they have a name; no devices.
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::RegularFile,
            libc::S_IFIFO => FileType::NamedPipe,
            libc::S_IFSOCK => FileType::Socket,
            _ => return reply.error(libc::EPERM),
        };
        answer_entry(reply, self.make(req, parent, name, kind, (mode & !umask & 0o7777) as u16, Vec::new()));
    }

    fn mkdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        answer_entry(
            reply,
            self.make(req, parent, name, FileType::Directory, (mode & !umask & 0o7777) as u16, Vec::new()),
        );
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer_empty(reply, self.remove(parent, name, false));
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        answer_empty(reply, self.remove(parent, name, true));
    }

    fn symlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, target: &std::path::Path, reply: ReplyEntry) {
        let target = target.as_os_str().as_bytes().to_vec();
        answer_entry(reply, self.make(req, parent, name, FileType::Symlink, 0o777, target));
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        answer_empty(reply, self.rename_to(parent, name, newparent, newname, flags));
    }

    fn link(&mut self, _req: &Request<'_>, ino: u64, newparent: u64, newname: &OsStr, reply: ReplyEntry) {
        let linked = (|| {
            if self.dir(newparent)?.children.contains_key(newname) {
                return Err(libc::EEXIST);
            }
            if self.inode(ino)?.attr.kind == FileType::Directory {
                return Err(libc::EPERM);
            }
            self.dir(newparent)?.children.insert(newname.to_os_string(), ino);
            let i = self.inode(ino)?;
            i.attr.nlink += 1;
            i.attr.ctime = SystemTime::now();
            Ok(i.attr)
        })();
        answer_entry(reply, linked);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.inode(ino) {
            Ok(i) if i.attr.kind == FileType::Directory => reply.error(libc::EISDIR),
            Ok(_) => {
                let fh = self.open_handle(ino);
                reply.opened(fh, 0)
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(req, parent, name, FileType::RegularFile, (mode & !umask & 0o7777) as u16, Vec::new()) {
            Ok(a) => {
                let fh = self.open_handle(a.ino);
                reply.created(&TTL, &a, 0, fh, 0)
            }
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.read_at(ino, offset.max(0) as u64, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.write_at(ino, offset.max(0) as u64, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.handles.remove(&fh).is_some() {
            if let Ok(i) = self.inode(ino) {
                i.open = i.open.saturating_sub(1);
                self.forget_if_gone(ino);
            }
        }
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, datasync: bool, reply: ReplyEmpty) {
        let synced = match self.inode(ino).map(|i| i.upper.as_ref().map(|u| &u.file)) {
            Ok(Some(f)) => if datasync { f.sync_data() } else { f.sync_all() }.map_err(|e| io_errno(&e)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        answer_empty(reply, synced);
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        // Names live in memory for the mount's life: nothing to make durable.
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let done = (|| {
            self.upper(ino)?;
            let inode = self.inode(ino)?;
            let up = inode.upper.as_ref().expect("made");
            // SAFETY: a valid descriptor we own; the kernel checks the range.
            let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&up.file), mode, offset, length) };
            if r != 0 {
                return Err(io_errno(&std::io::Error::last_os_error()));
            }
            let end = (offset + length) as u64;
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > inode.attr.size {
                inode.attr.size = end;
                inode.attr.blocks = end.div_ceil(512);
            }
            inode.attr.ctime = SystemTime::now();
            Ok(())
        })();
        answer_empty(reply, done);
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let entries: Vec<(u64, FileType, OsString)> = match self.dir(ino) {
            Ok(d) => d.children.iter().map(|(n, &c)| (c, FileType::RegularFile, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let mut all =
            vec![(ino, FileType::Directory, OsString::from(".")), (ino, FileType::Directory, OsString::from(".."))];
        all.extend(entries.into_iter().map(|(c, _, n)| (c, self.inodes[c as usize - 1].attr.kind, n)));
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // The overlay's filesystem: what writes may still use.
        match statvfs(&self.overlay) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(io_errno(&e)),
        }
    }
}

fn statvfs(p: &std::path::Path) -> std::io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}
