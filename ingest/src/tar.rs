//! tar (ustar, pax and GNU, as pg_basebackup and GNU tar write them),
//! demuxed into files with their metadata, and written back out.
//!
//! The `tar` crate does the header parsing (long names, pax records); this
//! module maps entries to snapshot nodes and streams file content in pieces,
//! so memory does not grow with the size of a member.

use crate::facts::SnapshotFacts;
use crate::pages;
use crate::pgincr;
use dedupe_store::{Chunking, Derived, Error, Event, Node, NodeKind, Result, Source};
use std::io::{self, Read, Write};

/// Content is handed to the store in pieces of this size (a multiple of
/// every page size, so page-aligned chunking is unaffected).
const PIECE: usize = 8 << 20;

/// Whole-piece buffers come back here once the store has stored the last
/// chunk cut from them, so the next piece is read into memory already
/// faulted in, without zeroing 8 MiB first: a fresh buffer a piece cost a
/// PostgreSQL base backup's ingest a memset and a page fault per 4 KiB of
/// its input. At most `POOLED` wait here; the store holds the others.
#[derive(Clone, Default)]
struct Pool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);
const POOLED: usize = 8;

impl Pool {
    /// A buffer of `len` bytes to read into: a pooled one for a whole piece.
    fn take(&self, len: usize) -> Vec<u8> {
        if len == PIECE {
            if let Some(buf) = self.0.lock().expect("not poisoned").pop() {
                return buf;
            }
        }
        vec![0u8; len]
    }

    /// The piece as the store takes it; a whole one returns to the pool.
    fn share(&self, buf: Vec<u8>) -> bytes::Bytes {
        if buf.len() != PIECE {
            return buf.into();
        }
        bytes::Bytes::from_owner(Pooled { buf, pool: self.clone() })
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pooled = self.pool.0.lock().unwrap_or_else(|e| e.into_inner());
        if pooled.len() < POOLED {
            pooled.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Runs on its own thread: the `tar` crate's entries borrow the archive, so
/// the walk lives in one stack frame and sends events over a channel.
pub struct TarSource {
    rx: crossbeam_channel::Receiver<Result<Event>>,
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    captured: std::sync::Arc<std::sync::Mutex<crate::meta::Captured>>,
}

impl TarSource {
    pub fn new(input: Box<dyn Read + Send>, default: Chunking) -> Self {
        TarSource::with_bases(input, default, Vec::new())
    }

    /// The same, where a PostgreSQL incremental base backup in the stream
    /// is built on one of `bases` (the snapshots of its name, oldest first,
    /// with their facts) into the full it stands for (`pgincr`).
    pub fn with_bases(input: Box<dyn Read + Send>, default: Chunking, bases: Vec<(String, SnapshotFacts)>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let captured = std::sync::Arc::new(std::sync::Mutex::new(crate::meta::Captured::default()));
        let (w, c) = (warnings.clone(), captured.clone());
        std::thread::spawn(move || {
            if let Err(e) = walk(input, default, &bases, &tx, &w, &c) {
                let _ = tx.send(Err(e));
            }
        });
        TarSource { rx, warnings, captured }
    }
}

/// An incremental being built on its base (`pgincr`).
struct Incremental {
    base: String,
    base_system: Option<String>,
    /// The rebuilt label's bytes, and each rebuilt file's size by path.
    label: Vec<u8>,
    sizes: std::collections::HashMap<String, u64>,
}

/// The whole content of a (small) member.
fn read_whole(entry: &mut dyn Read, size: u64, path: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    fill(entry, &mut buf, path)?;
    Ok(buf)
}

/// `buf` filled from member `path`; its end comes too early as truncation.
fn fill(entry: &mut dyn Read, buf: &mut [u8], path: &str) -> Result<()> {
    entry.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated(format!("the tar stream ends inside {path}")),
        _ => tar_err(e),
    })
}

fn node_path(raw: &std::path::Path) -> Result<Option<String>> {
    let s = raw.to_str().ok_or_else(|| Error::Input(format!("tar member name {raw:?} is not UTF-8")))?;
    let s = s.trim_start_matches("./").trim_end_matches('/');
    if s.is_empty() || s == "." {
        return Ok(None);
    }
    if s.starts_with('/') || s.split('/').any(|c| c == "..") {
        return Err(Error::Damaged(format!("tar member {s:?} would leave the backup directory")));
    }
    Ok(Some(s.to_string()))
}

fn walk(
    input: Box<dyn Read + Send>,
    default: Chunking,
    bases: &[(String, SnapshotFacts)],
    tx: &crossbeam_channel::Sender<Result<Event>>,
    warnings: &std::sync::Mutex<Vec<String>>,
    captured: &std::sync::Mutex<crate::meta::Captured>,
) -> Result<()> {
    let send = |e: Event| tx.send(Ok(e)).map_err(|_| Error::Invalid("backup stopped".into()));
    let eof = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut archive = tar::Archive::new(EofWatch { inner: input, eof: eof.clone() });
    let entries = archive.entries().map_err(|e| Error::Input(format!("not a tar stream: {e}")))?;
    let mut key = 0u64;
    let pool = Pool::default();
    // What each earlier member was, by a hash of its path (a name per member
    // would double the memory of a walk over a million files): a hard link
    // must name an earlier regular file, as `tar -x` needs it to.
    let mut seen: std::collections::HashMap<u64, Seen> = Default::default();
    let mut incremental: Option<Incremental> = None;
    for entry in entries {
        let mut entry = entry.map_err(tar_err)?;
        let header = entry.header().clone();
        let Some(path) = node_path(&entry.path().map_err(tar_err)?)? else { continue };
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Symlink => NodeKind::Symlink,
            tar::EntryType::Link => NodeKind::Hardlink,
            other => {
                warnings
                    .lock()
                    .expect("not poisoned")
                    .push(format!("skipped {path}: tar entry type {other:?} is not backed up"));
                seen.insert(path_key(&path), Seen::Skipped);
                continue;
            }
        };
        let mut node = Node::new(path.clone(), kind);
        node.mode = header.mode().map_err(tar_err)? & 0o7777;
        node.uid = header.uid().map_err(tar_err)? as u32;
        node.gid = header.gid().map_err(tar_err)? as u32;
        // Saturates: a (damaged or far-future) base-256 mtime must not wrap.
        node.mtime_ns =
            i64::try_from(header.mtime().map_err(tar_err)?).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
        if matches!(kind, NodeKind::Symlink | NodeKind::Hardlink) {
            let target = entry
                .link_name()
                .map_err(tar_err)?
                .ok_or_else(|| Error::Input(format!("link {path} has no target")))?;
            let t = target.to_str().ok_or_else(|| Error::Input(format!("link target of {path} is not UTF-8")))?;
            node.target = Some(if kind == NodeKind::Hardlink {
                let target = node_path(target.as_ref())?.unwrap_or_default();
                check_hardlink(&path, &target, seen.get(&path_key(&target)).copied())?;
                target
            } else {
                t.to_string()
            });
        }
        seen.insert(path_key(&path), Seen::Node(kind));
        if kind != NodeKind::File {
            send(Event::Entry(dedupe_store::Entry { node, body: dedupe_store::Body::None, chunking: default }))?;
            continue;
        }
        let size = entry.size();
        // A PostgreSQL incremental: its label, its manifest and its
        // incremental files become the full's (`pgincr`).
        let special = match (&incremental, path.as_str()) {
            (None, "backup_label") if size <= 1 << 20 => true,
            (Some(_), "backup_manifest" | "global/pg_control") => true,
            (Some(_), p) => pgincr::bare_path(p).is_some(),
            _ => false,
        };
        if special {
            let k = key;
            key += 1;
            node.size = size;
            let send_whole = |node: Node, bytes: Vec<u8>| -> Result<()> {
                let chunking = pages::chunking_for(&node.path, &bytes, default);
                captured.lock().expect("not poisoned").offer(&node.path, 0, &bytes);
                let n = bytes.len() as u64;
                send(Event::Open { key: k, node, chunking })?;
                if n > 0 {
                    send(Event::Piece { key: k, offset: 0, data: bytes.into() })?;
                }
                send(Event::Close { key: k, size: n })
            };
            if let Some(bare) = pgincr::bare_path(&path).filter(|_| incremental.is_some()) {
                let inc = incremental.as_mut().expect("filtered");
                let header = pgincr::Header::read(&mut entry, size, &path)?;
                let mut node = node;
                node.path = bare.clone();
                let chunking = pages::chunking_for(&bare, &[], default);
                let from = Derived {
                    snapshot: inc.base.clone(),
                    path: bare.clone(),
                    keep: header.truncation as u64 * pgincr::BLOCK,
                };
                send(Event::Derive { key: k, node, chunking, from })?;
                for (first, n) in header.runs() {
                    let (mut at, end) = (first as u64 * pgincr::BLOCK, (first + n) as u64 * pgincr::BLOCK);
                    while at < end {
                        let len = ((end - at) as usize).min(PIECE);
                        let mut buf = pool.take(len);
                        fill(&mut entry, &mut buf, &path)?;
                        send(Event::Piece { key: k, offset: at, data: pool.share(buf) })?;
                        at += len as u64;
                    }
                }
                inc.sizes.insert(bare, header.size());
                send(Event::Close { key: k, size: header.size() })?;
                continue;
            }
            let bytes = read_whole(&mut entry, size, &path)?;
            match path.as_str() {
                "backup_label" => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let Some(from) = pgincr::incremental_from(&text) else {
                        send_whole(node, bytes)?;
                        continue;
                    };
                    let lsn = text.lines().find_map(|l| l.strip_prefix("INCREMENTAL FROM LSN:")).unwrap_or("?").trim();
                    let (id, facts) = pgincr::base_of(from, bases).ok_or_else(|| {
                        Error::Input(format!(
                            "it is an incremental backup of the one that started at {lsn}, which is not in the repository under this --name: \
                             take a full backup (pg_basebackup without --incremental), or let dedupe backup --pg-incremental hand over a stored backup's manifest"
                        ))
                    })?;
                    let label = pgincr::full_label(&text).into_bytes();
                    let base_system = facts.postgresql.as_ref().and_then(|pg| pg.system_identifier.clone());
                    captured.lock().expect("not poisoned").built_on(lsn, id);
                    incremental = Some(Incremental {
                        base: id.clone(),
                        base_system,
                        label: label.clone(),
                        sizes: Default::default(),
                    });
                    send_whole(node, label)?;
                }
                "backup_manifest" => {
                    let inc = incremental.as_ref().expect("special only when incremental");
                    let manifest = pgincr::full_manifest(&bytes, &inc.sizes, &inc.label)?;
                    send_whole(node, manifest)?;
                }
                _ => {
                    // global/pg_control: the cluster must be the base's.
                    let inc = incremental.as_ref().expect("special only when incremental");
                    let ours = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")).to_string());
                    if let (Some(ours), Some(base)) = (&ours, &inc.base_system) {
                        if ours != base {
                            return Err(Error::Input(format!(
                                "this incremental backup is of the cluster with system identifier {ours}, but the backup it names ({}) is of {base}",
                                &inc.base[..inc.base.len().min(8)]
                            )));
                        }
                    }
                    send_whole(node, bytes)?;
                }
            }
            continue;
        }
        let (k, mut offset) = (key, 0u64);
        key += 1;
        let mut opened = false;
        let mut node = Some(node);
        loop {
            let mut buf = pool.take(PIECE.min((size - offset) as usize));
            let mut got = 0;
            while got < buf.len() {
                match entry.read(&mut buf[got..]) {
                    Ok(0) => return Err(Error::Truncated(format!("the tar stream ends inside {path}"))),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(tar_err(e)),
                }
            }
            if !opened {
                let chunking = pages::chunking_for(&path, &buf, default);
                send(Event::Open { key: k, node: node.take().expect("once"), chunking })?;
                opened = true;
            }
            captured.lock().expect("not poisoned").offer(&path, offset, &buf);
            let n = buf.len() as u64;
            if n > 0 {
                send(Event::Piece { key: k, offset, data: pool.share(buf) })?;
            }
            offset += n;
            if offset >= size {
                break;
            }
        }
        send(Event::Close { key: k, size })?;
    }
    // The tar crate takes the end of the input at a member boundary for the
    // end of the archive; a real archive ends with zero blocks before that.
    if eof.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Truncated("the tar stream ends without its end-of-archive blocks".into()));
    }
    // Read what follows the end-of-archive blocks to the end: a producer's
    // exit status is known only then, and a failed one must commit nothing.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| Error::reading(&e))?;
    Ok(())
}

/// An earlier member, as a hard link's target.
#[derive(Clone, Copy)]
enum Seen {
    Node(NodeKind),
    /// A member type that is not backed up (a device, a FIFO).
    Skipped,
}

fn path_key(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// A hard link is restored by linking to its target, which must then be a
/// regular file already written: an earlier file member, or an earlier hard
/// link to one.
fn check_hardlink(path: &str, target: &str, seen: Option<Seen>) -> Result<()> {
    let what = match seen {
        _ if target == path => "itself",
        Some(Seen::Node(NodeKind::File | NodeKind::Hardlink)) => return Ok(()),
        Some(Seen::Node(NodeKind::Dir)) => "a directory",
        Some(Seen::Node(NodeKind::Symlink)) => "a symbolic link",
        Some(Seen::Skipped) => "a member of a type that is not backed up",
        None => "not an earlier member of the stream (a link to nothing, or to a later member)",
    };
    Err(Error::Damaged(format!("tar member {path:?} is a hard link to {target:?}, which is {what}")))
}

/// Notes when the input ran dry.
struct EofWatch {
    inner: Box<dyn Read + Send>,
    eof: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Read for EofWatch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}

fn tar_err(e: io::Error) -> Error {
    // The tar crate says what is wrong with a header only in its messages.
    let message = e.to_string();
    if e.kind() == io::ErrorKind::InvalidData {
        // Bytes that are not what they claim: a decompressor's verdict on the
        // stream under the tar (`decompress`), or the tar crate's own.
        return Error::Damaged(message);
    }
    if e.kind() == io::ErrorKind::UnexpectedEof || message.contains("failed to read entire block") {
        Error::Truncated(format!("the tar stream ends early ({e})"))
    } else if message.contains("checksum mismatch") || message.contains("when getting cksum") {
        Error::Damaged(format!("a tar header is damaged: {e}"))
    } else {
        Error::Input(format!("reading the tar stream: {e}"))
    }
}

impl Source for TarSource {
    fn next_event(&mut self) -> Result<Option<Event>> {
        match self.rx.recv() {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.lock().expect("not poisoned").clone()
    }

    fn metadata(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.captured.lock().expect("not poisoned").metadata()
    }
}

/// Writes nodes as a tar stream (GNU headers for long names), holes as zeros.
pub struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        TarWriter { builder }
    }

    fn header(node: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(node.mode);
        h.set_uid(node.uid as u64);
        h.set_gid(node.gid as u64);
        h.set_mtime(node.mtime_ns.max(0) as u64 / 1_000_000_000);
        h.set_size(size);
        h
    }

    /// Writes a non-file node.
    pub fn other(&mut self, node: &Node) -> io::Result<()> {
        let (kind, target) = match node.kind {
            NodeKind::Dir => (tar::EntryType::Directory, None),
            NodeKind::Symlink => (tar::EntryType::Symlink, node.target.as_deref()),
            NodeKind::Hardlink => (tar::EntryType::Link, node.target.as_deref()),
            NodeKind::File => unreachable!("files go through file()"),
        };
        let mut h = Self::header(node, kind, 0);
        let path = if node.kind == NodeKind::Dir { format!("{}/", node.path) } else { node.path.clone() };
        match target {
            Some(t) => self.builder.append_link(&mut h, &path, t),
            None => self.builder.append_data(&mut h, &path, io::empty()),
        }
    }

    /// Writes a file node's header (and a long name's extension entry) and
    /// returns the output, to which the caller writes the content itself,
    /// `node.size` bytes, then calls `end_file`. Restore writes each block
    /// as it is decoded, with no reader, thread or copy in between.
    pub fn begin_file(&mut self, node: &Node) -> io::Result<&mut W> {
        let mut h = Self::header(node, tar::EntryType::Regular, node.size);
        // No data here: the tar crate writes the header and pads nothing.
        self.builder.append_data(&mut h, &node.path, io::empty())?;
        Ok(self.builder.get_mut())
    }

    /// Pads a file's content, `written` bytes, to the next 512-byte block.
    pub fn end_file(&mut self, node: &Node, written: u64) -> io::Result<()> {
        if written != node.size {
            return Err(io::Error::other(format!("{}: {written} bytes where its size is {}", node.path, node.size)));
        }
        let pad = (512 - written % 512) % 512;
        self.builder.get_mut().write_all(&[0u8; 512][..pad as usize])
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks `tar` to its end: the paths it yields, or the error it stops with.
    fn walk_all(tar: Vec<u8>) -> Result<Vec<String>> {
        let mut src = TarSource::new(Box::new(io::Cursor::new(tar)), Chunking::DEFAULT_CDC);
        let mut paths = Vec::new();
        while let Some(event) = src.next_event()? {
            match event {
                Event::Entry(e) => paths.push(e.node.path),
                Event::Open { node, .. } => paths.push(node.path),
                _ => {}
            }
        }
        Ok(paths)
    }

    enum Member<'a> {
        File(&'a str),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn tar_of(members: &[Member]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            let (path, kind, link) = match *m {
                Member::File(p) => (p, tar::EntryType::Regular, None),
                Member::Dir(p) => (p, tar::EntryType::Directory, None),
                Member::Symlink(p, t) => (p, tar::EntryType::Symlink, Some(t)),
                Member::Hardlink(p, t) => (p, tar::EntryType::Link, Some(t)),
                Member::Fifo(p) => (p, tar::EntryType::Fifo, None),
            };
            h.set_entry_type(kind);
            let data: &[u8] = if kind == tar::EntryType::Regular { b"rows" } else { b"" };
            h.set_size(data.len() as u64);
            match link {
                Some(t) => b.append_link(&mut h, path, t).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_hard_link_to_an_earlier_file_is_kept() {
        use Member::*;
        let tar =
            tar_of(&[File("a"), Hardlink("b", "a"), Hardlink("c", "./b"), Dir("d"), File("d/e"), Hardlink("f", "d/e")]);
        assert_eq!(walk_all(tar).unwrap(), ["a", "b", "c", "d", "d/e", "f"]);
    }

    #[test]
    fn a_hard_link_to_anything_but_an_earlier_file_is_damage() {
        use Member::*;
        for (members, what) in [
            (&[File("a"), Hardlink("b", "missing")][..], "not an earlier member"),
            (&[Hardlink("b", "a"), File("a")][..], "not an earlier member"),
            (&[Dir("d"), Hardlink("b", "d")][..], "a directory"),
            (&[File("a"), Symlink("s", "a"), Hardlink("b", "s")][..], "a symbolic link"),
            (&[Fifo("p"), Hardlink("b", "p")][..], "not backed up"),
            (&[File("b"), Hardlink("b", "b")][..], "itself"),
        ] {
            match walk_all(tar_of(members)) {
                Err(Error::Damaged(m)) => assert!(m.contains("\"b\"") && m.contains(what), "{m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_damaged_header_is_damage_and_a_cut_one_truncation() {
        let tar = tar_of(&[Member::File("a"), Member::File("b")]);
        // The second header starts at 1024 (header and one block of data).
        let mut damaged = tar.clone();
        damaged[1024] ^= 0x01;
        assert!(matches!(walk_all(damaged), Err(Error::Damaged(m)) if m.contains("checksum")));
        assert!(matches!(walk_all(tar[..1024 + 300].to_vec()), Err(Error::Truncated(_))));
    }
}
