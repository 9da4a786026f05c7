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
//! every chunk is checked. The CRC does not cover the header, so the offset
//! is checked as `mbstream -x` checks it: each file's chunks are contiguous.
//! A file's expected offset starts at 0 and grows by each chunk's payload
//! length, plus, for an 'S' chunk, the skips of its map; a 'P' or 'S' chunk
//! whose offset is not its file's expected offset is refused ("out-of-order
//! chunk" in mbstream). An 'S' chunk's map must place exactly its payload
//! (the lengths sum to the payload length), and no file may grow past
//! [`MAX_FILE_END`]. A path may not come back after its 'E' chunk (mbstream
//! creates each file once, `O_EXCL`). Anything refused is [`Error::Damaged`].
//! A stream that ends before every file has its 'E' chunk is truncated: the
//! producer died or the pipe closed early.

use crate::pages;
use dedupe_store::{Chunking, Error, Event, Node, NodeKind, Result, Source};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};

pub const MAGIC: &[u8; 8] = b"XBSTCK01";
/// Payload chunks written when re-emitting a stream (mbstream accepts any size).
const OUT_CHUNK: usize = 10 << 20;
/// A payload larger than this is not something mariabackup writes: refuse
/// rather than allocate whatever a damaged length says.
const MAX_PAYLOAD: u64 = 256 << 20;
/// Payload bytes reserved ahead of reading a chunk.
const RESERVE: u64 = 16 << 20;
/// A file grows only by the bytes the stream carries and the skips of sparse
/// maps: an end past 256 TiB is a damaged skip, not a database file.
pub const MAX_FILE_END: u64 = 1 << 48;
/// Sparse map entries in one chunk (xtrabackup writes one per page run).
const MAX_MAP_ENTRIES: usize = 1 << 20;

struct OpenFile {
    key: u64,
    /// Where the file's next chunk must start: payload bytes and sparse
    /// skips so far.
    end: u64,
}

pub struct XbstreamSource {
    input: Box<dyn Read + Send>,
    default: Chunking,
    allow_partial: bool,
    open: HashMap<String, OpenFile>,
    /// Paths whose 'E' chunk was read: they may not appear again.
    closed: HashSet<String>,
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
            closed: HashSet::new(),
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
                Err(e) => return Err(Error::reading(&e)),
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
            return Err(Error::Damaged("not an xbstream chunk where one should start (bad magic)".into()));
        }
        let mut ft = [0u8; 2];
        self.fill(&mut ft, false)?;
        let (flags, kind) = (ft[0], ft[1]);
        let path_len = self.u32()? as usize;
        if path_len == 0 || path_len > 4096 {
            return Err(Error::Damaged(format!("xbstream chunk with a path of {path_len} bytes")));
        }
        let mut path = vec![0u8; path_len];
        self.fill(&mut path, false)?;
        let path = String::from_utf8(path).map_err(|_| Error::Damaged("xbstream path is not UTF-8".into()))?;
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Damaged(format!("xbstream path {path:?} would leave the backup directory")));
        }
        match kind {
            b'E' => {
                if self.closed.contains(&path) {
                    return Err(Error::Damaged(format!(
                        "xbstream end chunk of {path}, which had already ended (mbstream creates a file once)"
                    )));
                }
                let (key, end) = match self.open.remove(&path) {
                    Some(f) => (f.key, f.end),
                    // An empty file is only an 'E' chunk.
                    None => {
                        let k = self.open_file(&path, &[]);
                        self.open.remove(&path);
                        (k, 0)
                    }
                };
                self.closed.insert(path);
                self.pending.push_back(Event::Close { key, size: end });
            }
            b'P' | b'S' => {
                let sparse = kind == b'S';
                let map_len = if sparse { self.u32()? as usize } else { 0 };
                let len = self.u64()?;
                let offset = self.u64()?;
                let crc = self.u32()?;
                // The header is not under the CRC: check it before reading on.
                if self.closed.contains(&path) {
                    return Err(Error::Damaged(format!(
                        "xbstream chunk of {path} at offset {offset} after the file's end chunk (mbstream creates a file once)"
                    )));
                }
                let expected = self.open.get(&path).map_or(0, |f| f.end);
                if offset != expected {
                    return Err(Error::Damaged(format!(
                        "xbstream chunk of {path} at offset {offset}, where {expected} was expected"
                    )));
                }
                if len > MAX_PAYLOAD {
                    return Err(Error::Damaged(format!(
                        "xbstream chunk of {path} at offset {offset} claims {len} bytes of payload (at most {MAX_PAYLOAD})"
                    )));
                }
                if sparse && (map_len == 0 || map_len > MAX_MAP_ENTRIES) {
                    return Err(Error::Damaged(format!(
                        "xbstream sparse chunk of {path} at offset {offset} has a map of {map_len} entries"
                    )));
                }
                let mut map = vec![0u8; map_len * 8];
                self.fill(&mut map, false)?;
                // Read into spare capacity: zeroing 10 MiB per chunk first was a
                // tenth of a dedup-only backup. Reserved up to what mariabackup
                // writes (10 MiB), not what a damaged length claims: a claim
                // past that grows only as its bytes really arrive.
                let mut payload = Vec::with_capacity(len.min(RESERVE) as usize);
                match (&mut self.input).take(len).read_to_end(&mut payload) {
                    Ok(n) if n as u64 == len => {}
                    Ok(_) => return Err(Error::Truncated("the xbstream ends in the middle of a chunk".into())),
                    Err(e) => return Err(Error::reading(&e)),
                }
                let mut h = crc32fast::Hasher::new();
                h.update(&map);
                h.update(&payload);
                if h.finalize() != crc {
                    return Err(Error::Damaged(format!(
                        "xbstream chunk of {path} at offset {offset} fails its CRC-32"
                    )));
                }
                // Sparse chunks: (skip, len) pairs place the payload around
                // holes, and must place all of it. No sum can overflow: the
                // offset is at most MAX_FILE_END, and a map at most 2^20
                // entries of u32s.
                let mut runs = Vec::new();
                let end = if sparse {
                    let (mut pos, mut at) = (offset, 0u64);
                    for e in map.chunks_exact(8) {
                        let skip = u32::from_le_bytes(e[..4].try_into().expect("4")) as u64;
                        let n = u32::from_le_bytes(e[4..].try_into().expect("4")) as u64;
                        pos += skip;
                        runs.push((pos, at, n));
                        pos += n;
                        at += n;
                    }
                    if at != len {
                        return Err(Error::Damaged(format!(
                            "xbstream sparse chunk of {path} at offset {offset} maps {at} bytes of a {len}-byte payload"
                        )));
                    }
                    pos
                } else {
                    offset + len
                };
                if end > MAX_FILE_END {
                    return Err(Error::Damaged(format!(
                        "xbstream chunk of {path} at offset {offset} would make the file {end} bytes long, past {MAX_FILE_END}"
                    )));
                }
                let key = match self.open.get(&path) {
                    Some(f) => f.key,
                    None => self.open_file(&path, &payload),
                };
                self.open.get_mut(&path).expect("opened above").end = end;
                let pieces = if sparse {
                    runs.into_iter()
                        .map(|(pos, at, n)| (pos, payload[at as usize..(at + n) as usize].to_vec()))
                        .collect()
                } else {
                    vec![(offset, payload)]
                };
                for (offset, data) in pieces {
                    self.captured.offer(&path, offset, &data);
                    if !data.is_empty() {
                        self.pending.push_back(Event::Piece { key, offset, data: data.into() });
                    }
                }
            }
            other if flags & 1 != 0 => {
                // Ignorable chunks of unknown types carry no length we could skip by.
                return Err(Error::Damaged(format!(
                    "xbstream chunk of unknown type {other:#x} for {path}: this dedupe cannot read it"
                )));
            }
            other => {
                return Err(Error::Damaged(format!("xbstream chunk of unknown type {other:#x} for {path}")));
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

    /// One payload chunk of `path` at `offset`: its header in one write and
    /// its data in another (the output may be unbuffered).
    pub fn payload(&mut self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        for (i, piece) in data.chunks(OUT_CHUNK).enumerate() {
            let mut head = Vec::with_capacity(34 + path.len());
            head.extend_from_slice(MAGIC);
            head.extend_from_slice(&[0, b'P']);
            head.extend_from_slice(&(path.len() as u32).to_le_bytes());
            head.extend_from_slice(path.as_bytes());
            head.extend_from_slice(&(piece.len() as u64).to_le_bytes());
            head.extend_from_slice(&(offset + (i * OUT_CHUNK) as u64).to_le_bytes());
            head.extend_from_slice(&crc32fast::hash(piece).to_le_bytes());
            self.out.write_all(&head)?;
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
                Event::Derive { .. } => unreachable!("an xbstream derives no file"),
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
                "open 0 a/x.ibd Fixed { size: 131072, level: None }",
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

    /// One chunk with every header field as given: `map` makes it an 'S' chunk.
    fn chunk(path: &str, map: Option<&[(u32, u32)]>, offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(MAGIC);
        s.extend_from_slice(&[0, if map.is_some() { b'S' } else { b'P' }]);
        s.extend_from_slice(&(path.len() as u32).to_le_bytes());
        s.extend_from_slice(path.as_bytes());
        let mut m = Vec::new();
        if let Some(map) = map {
            s.extend_from_slice(&(map.len() as u32).to_le_bytes());
            for (skip, len) in map {
                m.extend_from_slice(&skip.to_le_bytes());
                m.extend_from_slice(&len.to_le_bytes());
            }
        }
        s.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        s.extend_from_slice(&offset.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&m);
        h.update(payload);
        s.extend_from_slice(&h.finalize().to_le_bytes());
        s.extend_from_slice(&m);
        s.extend_from_slice(payload);
        s
    }

    fn end(path: &str) -> Vec<u8> {
        let mut w = XbstreamWriter::new(Vec::new());
        w.end(path).unwrap();
        w.into_inner()
    }

    fn damaged(stream: Vec<u8>) -> String {
        match events(stream, false) {
            Err(Error::Damaged(why)) => why,
            other => panic!("not refused as damaged: {other:?}"),
        }
    }

    #[test]
    fn chunks_in_order_are_accepted_even_empty_ones() {
        let s = [
            chunk("aria_log.00000001", None, 0, &[7; 16384]),
            chunk("aria_log.00000001", None, 16384, b""),
            chunk("aria_log.00000001", None, 16384, &[8; 100]),
            end("aria_log.00000001"),
        ]
        .concat();
        let ev = events(s, false).unwrap();
        assert_eq!(ev[1..], ["piece 0 0 16384", "piece 0 16384 100", "close 0 16484"]);
    }

    #[test]
    fn a_chunk_not_at_its_files_end_is_refused_naming_both_offsets() {
        for (offset, why) in [
            (16385, "one past"),
            (16383, "one before"),
            (0, "a rewrite"),
            (1 << 40, "far past"),
            (u64::MAX, "at the very end"),
        ] {
            let s = [chunk("ibdata1", None, 0, &[7; 16384]), chunk("ibdata1", None, offset, &[8; 10]), end("ibdata1")]
                .concat();
            let err = damaged(s);
            assert_eq!(err, format!("xbstream chunk of ibdata1 at offset {offset}, where 16384 was expected"), "{why}");
        }
        // A file's first chunk is expected at 0.
        let err = damaged([chunk("b/t.ibd", None, 16384, &[1; 10]), end("b/t.ibd")].concat());
        assert_eq!(err, "xbstream chunk of b/t.ibd at offset 16384, where 0 was expected");
    }

    #[test]
    fn each_file_keeps_its_own_expected_offset_when_interleaved() {
        let s = [
            chunk("a", None, 0, &[1; 10]),
            chunk("b", None, 0, &[2; 20]),
            chunk("a", None, 10, &[1; 5]),
            chunk("b", None, 20, &[2; 5]),
            end("a"),
            end("b"),
        ]
        .concat();
        assert_eq!(events(s, false).unwrap().len(), 8);
        // b's offset taken for a's is out of order for a.
        let s = [chunk("a", None, 0, &[1; 10]), chunk("b", None, 0, &[2; 20]), chunk("a", None, 20, &[1; 5])].concat();
        assert_eq!(damaged(s), "xbstream chunk of a at offset 20, where 10 was expected");
    }

    #[test]
    fn a_path_cannot_come_back_after_its_end_chunk() {
        let s = [chunk("f", None, 0, b"one"), end("f"), chunk("f", None, 3, b"two"), end("f")].concat();
        assert!(damaged(s).contains("after the file's end chunk"));
        let s = [chunk("f", None, 0, b"one"), end("f"), chunk("f", None, 0, b"two"), end("f")].concat();
        assert!(damaged(s).contains("after the file's end chunk"));
        let s = [end("f"), end("f")].concat();
        assert!(damaged(s).contains("already ended"));
    }

    #[test]
    fn a_sparse_map_must_place_exactly_its_payload() {
        for map in [&[(0u32, 4u32), (100, 1)][..], &[(0, 4), (100, 3)], &[(0, u32::MAX), (0, u32::MAX)]] {
            let err = damaged([chunk("f", Some(map), 0, b"AAAABB"), end("f")].concat());
            assert!(err.starts_with("xbstream sparse chunk of f at offset 0 maps "), "{err}");
            assert!(err.ends_with("bytes of a 6-byte payload"), "{err}");
        }
        let err = damaged([chunk("f", Some(&[]), 0, b""), end("f")].concat());
        assert!(err.contains("a map of 0 entries"), "{err}");
    }

    #[test]
    fn sparse_skips_cannot_grow_a_file_past_what_a_stream_describes() {
        // 65,537 skips of 4 GiB: a little past 2^48 bytes of holes.
        let map = vec![(u32::MAX, 0u32); 65_537];
        let err = damaged([chunk("f", Some(&map), 0, b""), end("f")].concat());
        assert!(err.contains("past 281474976710656"), "{err}");
        // Just under is a (very) sparse file, accepted.
        let map = vec![(u32::MAX, 0u32); 65_530];
        let ev = events([chunk("f", Some(&map), 0, b""), end("f")].concat(), false).unwrap();
        assert_eq!(ev[1], format!("close 0 {}", 65_530 * u32::MAX as u64));
    }

    #[test]
    fn a_sparse_hole_moves_the_expected_offset_of_the_next_chunk() {
        let s = [
            chunk("f", Some(&[(0, 4), (100, 2)]), 0, b"AAAABB"),
            chunk("f", None, 106, b"CC"),
            // A trailing hole: a run of no bytes after a skip.
            chunk("f", Some(&[(8, 1), (50, 0)]), 108, b"D"),
            end("f"),
        ]
        .concat();
        let ev = events(s, false).unwrap();
        assert_eq!(ev[1..], ["piece 0 0 4", "piece 0 104 2", "piece 0 106 2", "piece 0 116 1", "close 0 167"]);
        // The next chunk after a hole is expected past the hole, not after the bytes.
        let s = [chunk("f", Some(&[(0, 4), (100, 2)]), 0, b"AAAABB"), chunk("f", None, 6, b"CC")].concat();
        assert_eq!(damaged(s), "xbstream chunk of f at offset 6, where 106 was expected");
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
