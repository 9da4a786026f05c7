//! xbstream, the archive format of `mariabackup --stream=xbstream` and
//! xtrabackup: demuxed into files as it arrives, and written back out.
//!
//! A stream is a sequence of chunks, each naming its file, so the chunks of
//! several files may interleave (`--parallel=N`):
//! ```text
//! "XBSTCK01" flags(1) type(1) path_len(u32 LE) path
//!   type 'P': payload_len(u64 LE) offset(u64 LE) crc32(u32 LE) payload
//!   type 'S': map_len(u32 LE) payload_len(u64) offset(u64) crc32(u32) map(map_len x (skip u32, len u32)) payload
//!   type 'E': (nothing: the file is complete)
//! ```
//! The CRC-32 (ISO 3309, as zlib) covers the sparse map and the payload;
//! every chunk is checked. A stream that ends before every file has its 'E'
//! chunk is truncated: the producer died or the pipe closed early.

use crate::pages;
use dedupe_store::{Chunking, Error, Event, Node, NodeKind, Result, Source};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};

pub const MAGIC: &[u8; 8] = b"XBSTCK01";
/// Payload chunks written when re-emitting a stream (mbstream accepts any size).
const OUT_CHUNK: usize = 10 << 20;
/// A payload larger than this is not something mariabackup writes: refuse
/// rather than allocate whatever a damaged length says.
const MAX_PAYLOAD: u64 = 256 << 20;

struct OpenFile {
    key: u64,
    end: u64,
}

pub struct XbstreamSource {
    input: Box<dyn Read + Send>,
    default: Chunking,
    allow_partial: bool,
    open: HashMap<String, OpenFile>,
    /// Files in order of first appearance, for stable messages.
    pending: VecDeque<Event>,
    next_key: u64,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    warnings: Vec<String>,
    captured: crate::meta::Captured,
    /// The stream carried InnoDB files / the backup tool's closing info file.
    innodb: bool,
    info: bool,
}

impl XbstreamSource {
    pub fn new(input: Box<dyn Read + Send>, default: Chunking, allow_partial: bool) -> Self {
        XbstreamSource {
            input,
            default,
            allow_partial,
            open: HashMap::new(),
            pending: VecDeque::new(),
            next_key: 0,
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            mtime_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            warnings: Vec::new(),
            captured: Default::default(),
            innodb: false,
            info: false,
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end before the first byte.
    fn fill(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) if got == 0 && at_boundary => return Ok(false),
                Ok(0) => return Err(Error::Truncated("the xbstream ends in the middle of a chunk".into())),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Input(e.to_string())),
            }
        }
        Ok(true)
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.fill(&mut b, false)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.fill(&mut b, false)?;
        Ok(u64::from_le_bytes(b))
    }

    fn open_file(&mut self, path: &str, head: &[u8]) -> u64 {
        self.innodb |= pages::is_innodb_paged(path);
        self.info |= matches!(path, "xtrabackup_info" | "mariadb_backup_info");
        let key = self.next_key;
        self.next_key += 1;
        let mut node = Node::new(path, NodeKind::File);
        node.mode = 0o640;
        node.uid = self.uid;
        node.gid = self.gid;
        node.mtime_ns = self.mtime_ns;
        let chunking = pages::chunking_for(path, head, self.default);
        self.pending.push_back(Event::Open { key, node, chunking });
        self.open.insert(path.to_string(), OpenFile { key, end: 0 });
        key
    }

    /// Reads one chunk and queues its events; `false` at the end of the stream.
    fn read_chunk(&mut self) -> Result<bool> {
        let mut magic = [0u8; 8];
        if !self.fill(&mut magic, true)? {
            return Ok(false);
        }
        if &magic != MAGIC {
            return Err(Error::Input("not an xbstream chunk where one should start (bad magic)".into()));
        }
        let mut ft = [0u8; 2];
        self.fill(&mut ft, false)?;
        let (flags, kind) = (ft[0], ft[1]);
        let path_len = self.u32()? as usize;
        if path_len == 0 || path_len > 4096 {
            return Err(Error::Input(format!("xbstream chunk with a path of {path_len} bytes")));
        }
        let mut path = vec![0u8; path_len];
        self.fill(&mut path, false)?;
        let path = String::from_utf8(path).map_err(|_| Error::Input("xbstream path is not UTF-8".into()))?;
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Input(format!("xbstream path {path:?} would leave the backup directory")));
        }
        match kind {
            b'E' => {
                let (key, end) = match self.open.remove(&path) {
                    Some(f) => (f.key, f.end),
                    // An empty file is only an 'E' chunk.
                    None => {
                        let k = self.open_file(&path, &[]);
                        self.open.remove(&path);
                        (k, 0)
                    }
                };
                self.pending.push_back(Event::Close { key, size: end });
            }
            b'P' | b'S' => {
                let map_len = if kind == b'S' { self.u32()? as usize } else { 0 };
                let len = self.u64()?;
                let offset = self.u64()?;
                let crc = self.u32()?;
                if len > MAX_PAYLOAD || map_len > (1 << 20) {
                    return Err(Error::Input(format!(
                        "xbstream chunk of {path} claims {len} bytes: the stream is damaged"
                    )));
                }
                let mut map = vec![0u8; map_len * 8];
                self.fill(&mut map, false)?;
                // Read into spare capacity: zeroing 10 MiB per chunk first was a tenth of a dedup-only backup.
                let mut payload = Vec::with_capacity(len as usize);
                match (&mut self.input).take(len).read_to_end(&mut payload) {
                    Ok(n) if n as u64 == len => {}
                    Ok(_) => return Err(Error::Truncated("the xbstream ends in the middle of a chunk".into())),
                    Err(e) => return Err(Error::Input(e.to_string())),
                }
                let mut h = crc32fast::Hasher::new();
                h.update(&map);
                h.update(&payload);
                if h.finalize() != crc {
                    return Err(Error::Input(format!(
                        "xbstream chunk of {path} at offset {offset} fails its CRC-32: the stream is damaged"
                    )));
                }
                let key = match self.open.get(&path) {
                    Some(f) => f.key,
                    None => self.open_file(&path, &payload),
                };
                // Sparse chunks: (skip, len) pairs place the payload around holes.
                let mut pieces = Vec::new();
                if kind == b'S' {
                    let (mut pos, mut at) = (offset, 0usize);
                    for e in map.chunks_exact(8) {
                        let skip = u32::from_le_bytes(e[..4].try_into().expect("4")) as u64;
                        let n = u32::from_le_bytes(e[4..].try_into().expect("4")) as usize;
                        pos += skip;
                        let data = payload.get(at..at + n).ok_or_else(|| {
                            Error::Input(format!("xbstream sparse map of {path} runs past its payload"))
                        })?;
                        pieces.push((pos, data.to_vec()));
                        pos += n as u64;
                        at += n;
                    }
                } else {
                    pieces.push((offset, payload));
                }
                let f = self.open.get_mut(&path).expect("opened above");
                for (offset, data) in pieces {
                    if offset < f.end {
                        return Err(Error::Input(format!(
                            "xbstream chunk of {path} at offset {offset} overlaps earlier data (ends at {})",
                            f.end
                        )));
                    }
                    f.end = offset + data.len() as u64;
                    self.captured.offer(&path, offset, &data);
                    if !data.is_empty() {
                        self.pending.push_back(Event::Piece { key, offset, data });
                    }
                }
            }
            other if flags & 1 != 0 => {
                // Ignorable chunks of unknown types carry no length we could skip by.
                return Err(Error::Input(format!(
                    "xbstream chunk of unknown type {other:#x} for {path}: this dedupe cannot read it"
                )));
            }
            other => {
                return Err(Error::Input(format!("xbstream chunk of unknown type {other:#x} for {path}")));
            }
        }
        Ok(true)
    }
}

impl Source for XbstreamSource {
    fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let more = match self.read_chunk() {
                Err(Error::Truncated(why)) if self.allow_partial => {
                    // Nothing of a half-read chunk was queued: drop it, keep the rest.
                    self.warnings.push(format!("{why}; its last chunk was dropped"));
                    false
                }
                other => other?,
            };
            if !more {
                // mariabackup/xtrabackup write their info file last; a stream of
                // InnoDB files without it was cut between two files.
                if self.open.is_empty() && self.innodb && !self.info && !self.allow_partial {
                    return Err(Error::Truncated(
                        "the xbstream has InnoDB files but ends before mariabackup's xtrabackup_info: was the producer killed?"
                            .into(),
                    ));
                }
                if self.open.is_empty() {
                    return Ok(None);
                }
                let mut names: Vec<&String> = self.open.keys().collect();
                names.sort();
                let list = names.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
                if !self.allow_partial {
                    return Err(Error::Truncated(format!(
                        "the xbstream ended before {} files were complete ({list}{more}): was the producer killed?",
                        names.len()
                    )));
                }
                self.warnings.push(format!("kept {} incomplete files (--allow-partial): {list}{more}", names.len()));
                let open: Vec<(String, OpenFile)> = self.open.drain().collect();
                for (_, f) in open {
                    self.pending.push_back(Event::Close { key: f.key, size: f.end });
                }
            }
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn metadata(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.captured.metadata()
    }
}

/// Writes files as an xbstream that `mbstream -x` accepts. Holes are written
/// as zeros: mbstream requires each file's chunks to be contiguous.
pub struct XbstreamWriter<W: Write> {
    out: W,
}

impl<W: Write> XbstreamWriter<W> {
    pub fn new(out: W) -> Self {
        XbstreamWriter { out }
    }

    fn header(&mut self, path: &str, kind: u8) -> io::Result<()> {
        self.out.write_all(MAGIC)?;
        self.out.write_all(&[0, kind])?;
        self.out.write_all(&(path.len() as u32).to_le_bytes())?;
        self.out.write_all(path.as_bytes())
    }

    /// One payload chunk of `path` at `offset`.
    pub fn payload(&mut self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        for (i, piece) in data.chunks(OUT_CHUNK).enumerate() {
            self.header(path, b'P')?;
            self.out.write_all(&(piece.len() as u64).to_le_bytes())?;
            self.out.write_all(&(offset + (i * OUT_CHUNK) as u64).to_le_bytes())?;
            self.out.write_all(&crc32fast::hash(piece).to_le_bytes())?;
            self.out.write_all(piece)?;
        }
        Ok(())
    }

    pub fn end(&mut self, path: &str) -> io::Result<()> {
        self.header(path, b'E')
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: Vec<u8>, allow_partial: bool) -> Result<Vec<String>> {
        let mut src = XbstreamSource::new(Box::new(io::Cursor::new(stream)), Chunking::DEFAULT_CDC, allow_partial);
        let mut out = Vec::new();
        while let Some(e) = src.next_event()? {
            out.push(match e {
                Event::Open { key, node, chunking } => format!("open {key} {} {chunking:?}", node.path),
                Event::Piece { key, offset, data } => format!("piece {key} {offset} {}", data.len()),
                Event::Close { key, size } => format!("close {key} {size}"),
                Event::Entry(_) => "entry".into(),
            });
        }
        Ok(out)
    }

    fn interleaved() -> Vec<u8> {
        let mut w = XbstreamWriter::new(Vec::new());
        w.payload("a/x.ibd", 0, &[0u8; 32768]).unwrap();
        w.payload("b", 0, b"hello").unwrap();
        w.payload("a/x.ibd", 32768, &[1u8; 16384]).unwrap();
        w.end("b").unwrap();
        w.end("empty").unwrap();
        w.end("a/x.ibd").unwrap();
        // mariabackup's last file.
        w.payload("xtrabackup_info", 0, b"tool_name = mariabackup\n").unwrap();
        w.end("xtrabackup_info").unwrap();
        w.into_inner()
    }

    #[test]
    fn interleaved_files_demux_with_their_chunking() {
        let ev = events(interleaved(), false).unwrap();
        assert_eq!(
            ev,
            [
                "open 0 a/x.ibd Fixed { size: 32768 }",
                "piece 0 0 32768",
                "open 1 b FastCdc { min: 262144, avg: 1048576, max: 4194304 }",
                "piece 1 0 5",
                "piece 0 32768 16384",
                "close 1 5",
                "open 2 empty FastCdc { min: 262144, avg: 1048576, max: 4194304 }",
                "close 2 0",
                "close 0 49152",
                "open 3 xtrabackup_info FastCdc { min: 262144, avg: 1048576, max: 4194304 }",
                "piece 3 0 24",
                "close 3 24",
            ]
        );
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_crc() {
        let mut s = interleaved();
        let at = s.len() / 3;
        s[at] ^= 0x40;
        let err = events(s, false).unwrap_err().to_string();
        assert!(err.contains("CRC-32") || err.contains("magic"), "{err}");
    }

    #[test]
    fn truncation_is_detected_at_every_length() {
        let s = interleaved();
        for cut in 1..s.len() {
            let r = events(s[..cut].to_vec(), false);
            assert!(matches!(r, Err(Error::Truncated(_))), "cut at {cut}: {r:?}");
        }
        // A cut between two files (every file complete) is caught by the missing info file.
        let info_len = (8 + 2 + 4 + 15 + 20 + 24) + (8 + 2 + 4 + 15);
        let r = events(s[..s.len() - info_len].to_vec(), false);
        assert!(matches!(r, Err(Error::Truncated(_))), "{r:?}");
        // With --allow-partial a cut keeps what arrived.
        let cut = s.len() - info_len - (8 + 2 + 4 + "a/x.ibd".len());
        let ev = events(s[..cut].to_vec(), true).unwrap();
        assert_eq!(ev.last().unwrap(), "close 0 49152");
    }

    #[test]
    fn sparse_chunks_place_data_around_holes() {
        let mut s = Vec::new();
        let payload = b"AAAABB";
        let mut map = Vec::new();
        for (skip, len) in [(0u32, 4u32), (100, 2)] {
            map.extend_from_slice(&skip.to_le_bytes());
            map.extend_from_slice(&len.to_le_bytes());
        }
        s.extend_from_slice(MAGIC);
        s.extend_from_slice(&[0, b'S']);
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(b"f");
        s.extend_from_slice(&2u32.to_le_bytes());
        s.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        s.extend_from_slice(&0u64.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&map);
        h.update(payload);
        s.extend_from_slice(&h.finalize().to_le_bytes());
        s.extend_from_slice(&map);
        s.extend_from_slice(payload);
        s.extend_from_slice(MAGIC);
        s.extend_from_slice(&[0, b'E']);
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(b"f");
        let ev = events(s, false).unwrap();
        assert_eq!(ev[1..], ["piece 0 0 4", "piece 0 104 2", "close 0 106"]);
    }
}
