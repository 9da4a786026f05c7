//! tar (ustar, pax and GNU, as pg_basebackup and GNU tar write them),
//! demuxed into files with their metadata, and written back out.
//!
//! The `tar` crate does the header parsing (long names, pax records); this
//! module maps entries to snapshot nodes and streams file content in pieces,
//! so memory does not grow with the size of a member.

use crate::pages;
use dedupe_store::{Chunking, Error, Event, Node, NodeKind, Result, Source};
use std::io::{self, Read, Write};

/// Content is handed to the store in pieces of this size (a multiple of
/// every page size, so page-aligned chunking is unaffected).
const PIECE: usize = 8 << 20;

/// Runs on its own thread: the `tar` crate's entries borrow the archive, so
/// the walk lives in one stack frame and sends events over a channel.
pub struct TarSource {
    rx: crossbeam_channel::Receiver<Result<Event>>,
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    captured: std::sync::Arc<std::sync::Mutex<crate::meta::Captured>>,
}

impl TarSource {
    pub fn new(input: Box<dyn Read + Send>, default: Chunking) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let captured = std::sync::Arc::new(std::sync::Mutex::new(crate::meta::Captured::default()));
        let (w, c) = (warnings.clone(), captured.clone());
        std::thread::spawn(move || {
            if let Err(e) = walk(input, default, &tx, &w, &c) {
                let _ = tx.send(Err(e));
            }
        });
        TarSource { rx, warnings, captured }
    }
}

fn node_path(raw: &std::path::Path) -> Result<Option<String>> {
    let s = raw.to_str().ok_or_else(|| Error::Input(format!("tar member name {raw:?} is not UTF-8")))?;
    let s = s.trim_start_matches("./").trim_end_matches('/');
    if s.is_empty() || s == "." {
        return Ok(None);
    }
    if s.starts_with('/') || s.split('/').any(|c| c == "..") {
        return Err(Error::Input(format!("tar member {s:?} would leave the backup directory")));
    }
    Ok(Some(s.to_string()))
}

fn walk(
    input: Box<dyn Read + Send>,
    default: Chunking,
    tx: &crossbeam_channel::Sender<Result<Event>>,
    warnings: &std::sync::Mutex<Vec<String>>,
    captured: &std::sync::Mutex<crate::meta::Captured>,
) -> Result<()> {
    let send = |e: Event| tx.send(Ok(e)).map_err(|_| Error::Invalid("backup stopped".into()));
    let eof = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut archive = tar::Archive::new(EofWatch { inner: input, eof: eof.clone() });
    let entries = archive.entries().map_err(|e| Error::Input(format!("not a tar stream: {e}")))?;
    let mut key = 0u64;
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
                continue;
            }
        };
        let mut node = Node::new(path.clone(), kind);
        node.mode = header.mode().map_err(tar_err)? & 0o7777;
        node.uid = header.uid().map_err(tar_err)? as u32;
        node.gid = header.gid().map_err(tar_err)? as u32;
        node.mtime_ns = header.mtime().map_err(tar_err)? as i64 * 1_000_000_000;
        if matches!(kind, NodeKind::Symlink | NodeKind::Hardlink) {
            let target = entry
                .link_name()
                .map_err(tar_err)?
                .ok_or_else(|| Error::Input(format!("link {path} has no target")))?;
            let t = target.to_str().ok_or_else(|| Error::Input(format!("link target of {path} is not UTF-8")))?;
            node.target = Some(if kind == NodeKind::Hardlink {
                node_path(target.as_ref())?.unwrap_or_default()
            } else {
                t.to_string()
            });
        }
        if kind != NodeKind::File {
            send(Event::Entry(dedupe_store::Entry { node, body: dedupe_store::Body::None, chunking: default }))?;
            continue;
        }
        let size = entry.size();
        let (k, mut offset) = (key, 0u64);
        key += 1;
        let mut opened = false;
        let mut node = Some(node);
        loop {
            let mut buf = vec![0u8; PIECE.min((size - offset) as usize)];
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
                send(Event::Piece { key: k, offset, data: buf })?;
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
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| Error::Input(e.to_string()))?;
    Ok(())
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
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Truncated(format!("the tar stream ends early ({e})"))
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

    /// Writes a file node whose content `content` yields, `node.size` bytes.
    pub fn file(&mut self, node: &Node, content: &mut dyn Read) -> io::Result<()> {
        let mut h = Self::header(node, tar::EntryType::Regular, node.size);
        self.builder.append_data(&mut h, &node.path, content)
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}
