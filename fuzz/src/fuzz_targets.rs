//! The fuzz targets: one function per parser or decoder, each taking
//! arbitrary bytes. They are shared by the stable driver (`crate::driver`)
//! and by the libFuzzer entry points in `fuzz_targets/*.rs` (`cargo fuzz`).
//!
//! A target fails by panicking. Besides the parsers' own panics, a target
//! asserts the few promises a parser makes about what it returns (a binlog's
//! end position lies inside the file, a pack entry inside the pack body).
//! Time and memory are the driver's to watch.
//!
//! The store's objects are sealed: a changed byte fails the content-name
//! check or the AEAD tag before any decoder sees it. So each store target
//! also seals the input itself, with the key of the frozen test repository
//! (`format-spec/vectors`), and hands the sealed object to the decoder:
//! that fuzzes what the decoders do with plaintext a key holder (or a bug)
//! wrote, which is where structure is parsed.

use dedupe_ingest::binlog;
use dedupe_ingest::sniff;
use dedupe_ingest::tar::TarSource;
use dedupe_ingest::xbstream::XbstreamSource;
use dedupe_store::internals::{
    apply_delta, load_index_segment, open_blob, open_chunk, open_index_object, open_manifest, read_entries, Keys,
    Opened, INDEX_AAD, LOG_MANIFEST_AAD, MANIFEST_AAD, TRAILER_AAD,
};
use dedupe_store::{Chunking, Event, Source, Tree};
use std::io::{Cursor, Read};
use std::sync::OnceLock;

/// A target: its name (also its corpus directory) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// What the input is, for `dedupe-fuzz list`.
    pub about: &'static str,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "xbstream",
        run: xbstream,
        about: "an xbstream on stdin (XbstreamSource, strict and --allow-partial)",
    },
    Target { name: "tar", run: tar, about: "a tar stream on stdin (TarSource)" },
    Target { name: "binlog", run: binlog, about: "a MySQL/MariaDB binlog file (binlog::parse)" },
    Target { name: "sniff", run: sniff, about: "the head of a stream (sniff::sniff, sniff::peek)" },
    Target {
        name: "manifest",
        run: manifest,
        about: "a snapshot manifest's plaintext JSON; also read as a tree and as list records",
    },
    Target { name: "pack", run: pack, about: "u32 LE body length, pack body, trailer plaintext" },
    Target { name: "chunk", run: chunk, about: "u32 LE raw length, flag byte, chunk data (open_chunk)" },
    Target { name: "index", run: index, about: "an index object's plaintext (open_index_object)" },
    Target { name: "index_cache", run: index_cache, about: "a segment of the local index cache (index/seg-*.bin)" },
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Events taken from one source at most: more means a loop that never ends.
const MAX_EVENTS: usize = 1 << 20;

fn drain(src: &mut dyn Source) -> bool {
    for _ in 0..MAX_EVENTS {
        match src.next_event() {
            Ok(Some(e)) => {
                if let Event::Piece { data, .. } = &e {
                    assert!(!data.is_empty(), "an empty piece");
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
    panic!("a source gave {MAX_EVENTS} events for a small input");
}

/// `XbstreamSource` driven until the end or an error: strict on the input,
/// and without and with `--allow-partial` on the input with its chunks'
/// CRC-32s made right, so that mutated payloads and sparse maps get parsed.
pub fn xbstream(data: &[u8]) {
    let fixed = xbstream_fix_crc(data);
    for (input, allow_partial) in [(data, false), (&fixed[..], false), (&fixed[..], true)] {
        let mut src = XbstreamSource::new(Box::new(Cursor::new(input.to_vec())), Chunking::DEFAULT_CDC, allow_partial);
        drain(&mut src);
        let _ = src.warnings();
        let _ = src.metadata();
    }
}

fn u32_le(d: &[u8], at: usize) -> usize {
    u32::from_le_bytes(d[at..at + 4].try_into().expect("4")) as usize
}

/// The input with each xbstream chunk's CRC-32 recomputed, as far as its chunks parse.
pub fn xbstream_fix_crc(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let mut at = 0usize;
    while at + 14 <= d.len() {
        let (kind, mut p) = (d[at + 9], at + 14 + u32_le(&d, at + 10));
        let map_len = match kind {
            b'P' => 0,
            b'S' if p + 4 <= d.len() => {
                p += 4;
                u32_le(&d, p - 4)
            }
            _ => {
                at = p;
                continue;
            }
        };
        if p + 20 > d.len() {
            break;
        }
        let len = u64::from_le_bytes(d[p..p + 8].try_into().expect("8"));
        let crc_at = p + 16;
        p += 20;
        let Some(end) =
            (map_len as u64).checked_mul(8).and_then(|m| m.checked_add(len)).and_then(|n| n.checked_add(p as u64))
        else {
            break;
        };
        if end > d.len() as u64 {
            break;
        }
        let crc = crc32fast::hash(&d[p..end as usize]);
        d[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        at = end as usize;
    }
    d
}

/// `TarSource` driven until its walking thread is done, on the input and on
/// the input with its header checksums made right. After an error the thread
/// sends nothing more, so reading on to the end joins it (a panic there is
/// caught by the driver's panic hook, not by this thread).
pub fn tar(data: &[u8]) {
    for input in [data.to_vec(), tar_fix_checksums(data)] {
        let mut src = TarSource::new(Box::new(Cursor::new(input)), Chunking::DEFAULT_CDC);
        if !drain(&mut src) {
            drain(&mut src);
        }
        let _ = src.warnings();
        let _ = src.metadata();
    }
}

/// The input with the checksum of every block that looks like a ustar or GNU header recomputed.
pub fn tar_fix_checksums(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for block in d.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
    d
}

/// The input with the CRC32 at the end of every event recomputed (the format
/// description's without its in-use flag, as servers do), as far as events parse.
pub fn binlog_fix_crc(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    let mut at = 4usize;
    while at + 19 <= d.len() {
        let size = u32_le(&d, at + 9);
        if size < 23 || at + size > d.len() {
            break;
        }
        let mut header = [0u8; 19];
        header.copy_from_slice(&d[at..at + 19]);
        if header[4] == 15 {
            header[17] &= !1;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&header);
        h.update(&d[at + 19..at + size - 4]);
        d[at + size - 4..at + size].copy_from_slice(&h.finalize().to_le_bytes());
        at += size;
    }
    d
}

/// `binlog::parse` on the input, and on the input with its events' CRC32s made right.
pub fn binlog(data: &[u8]) {
    binlog_once(data);
    binlog_once(&binlog_fix_crc(data));
}

fn binlog_once(data: &[u8]) {
    if let Ok(f) = binlog::parse(data) {
        let len = data.len() as u64;
        assert!(f.end_position <= len, "end_position {} past the end of a {len}-byte file", f.end_position);
        assert!(
            f.first_position <= f.end_position,
            "first_position {} > end_position {}",
            f.first_position,
            f.end_position
        );
        assert_eq!(
            f.truncated_tail,
            f.end_position != len,
            "truncated_tail with end_position {} of {len}",
            f.end_position
        );
        assert!(!f.closed || !f.truncated_tail || f.events > 0, "closed without events");
    }
}

pub fn sniff(data: &[u8]) {
    // A refusal (empty, a damaged magic, a cut header) is an answer too.
    if let Ok(format) = sniff::sniff(data) {
        assert_eq!(sniff::Format::parse(format.name()), Some(format));
    }
    // peek gives back every byte, in order.
    let (head, mut rest) = sniff::peek(Box::new(Cursor::new(data.to_vec()))).expect("reading memory");
    assert_eq!(head.len(), data.len().min(sniff::HEAD));
    let mut all = Vec::new();
    rest.read_to_end(&mut all).expect("reading memory");
    assert_eq!(all, data, "peek lost or changed bytes");
}

/// The master key of the frozen test repository in `format-spec/vectors`.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let v = include_str!("../../format-spec/vectors/vectors.json");
        let at = v.find("\"master_key\"").expect("vectors.json has master_key");
        let hex_start = at + v[at..].find(": \"").expect("a string value") + 3;
        let master = &v[hex_start..hex_start + 64];
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&master[2 * i..2 * i + 2], 16).expect("hex master key");
        }
        Keys::from_master(key)
    })
}

fn hex_name(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", blake3::hash(bytes).to_hex())
}

/// Snapshot and log manifests, trees and list chunks: the JSON and records a snapshot is made of.
pub fn manifest(data: &[u8]) {
    let k = keys();
    // As stored: fails authentication unless it is a real object.
    let _ = open_manifest(k, &hex_name("snapshots/", data), data);
    for (prefix, aad) in [("snapshots/", MANIFEST_AAD), ("logs/", LOG_MANIFEST_AAD)] {
        let sealed = k.seal(aad, data);
        let _ = open_manifest(k, &hex_name(prefix, &sealed), &sealed);
    }
    // Trees are read with serde_json, as `Indexed::read_tree` does.
    let _ = serde_json::from_slice::<Tree>(data);
    if let Some(records) = dedupe_store::internals::decode_records(data) {
        assert_eq!(records.len() * dedupe_store::internals::LIST_RECORD, data.len());
    }
}

fn u32_at(data: &[u8]) -> (u32, &[u8]) {
    if data.len() < 4 {
        return (0, &[]);
    }
    (u32::from_le_bytes(data[..4].try_into().expect("4")), &data[4..])
}

/// The largest chunk the chunker makes (FastCDC and fixed sizes are at most
/// 16 MiB): index entries, which are authenticated, never claim more.
const MAX_RAW_LEN: u32 = 16 << 20;

/// A pack built from `body len (u32 LE) || body || trailer plaintext`; its
/// entries are then checked to lie in the body and their chunks opened.
pub fn pack(data: &[u8]) {
    let k = keys();
    let _ = read_entries(k, blake3::hash(data).as_bytes(), data);
    let (body_len, rest) = u32_at(data);
    let split = (body_len as usize).min(rest.len());
    let (body, trailer) = rest.split_at(split);
    let sealed = k.seal(TRAILER_AAD, trailer);
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    let id = *blake3::hash(&bytes).as_bytes();
    let Ok(entries) = read_entries(k, &id, &bytes) else { return };
    for e in entries.iter().take(64) {
        let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
        let blob = body.get(start..end).unwrap_or_else(|| panic!("entry {start}..{end} outside a {split}-byte body"));
        let _ = open_chunk(k, &e.id, blob, e.raw_len.min(MAX_RAW_LEN) as usize);
    }
}

/// A chunk blob sealed around `flag || data`, opened expecting `raw len` bytes.
pub fn chunk(data: &[u8]) {
    let k = keys();
    let (raw_len, plain) = u32_at(data);
    let id = k.chunk_id(plain);
    let sealed = k.seal(&id, plain);
    match open_blob(k, &id, &sealed, raw_len.min(MAX_RAW_LEN) as usize) {
        Ok(Opened::Plain(out)) => assert_eq!(out.len(), raw_len.min(MAX_RAW_LEN) as usize),
        // A delta (flag 2) applied to a base of the input's own bytes.
        Ok(Opened::Delta { frame, .. }) => {
            if let Ok(out) = apply_delta(&frame, plain, raw_len.min(MAX_RAW_LEN) as usize) {
                assert_eq!(out.len(), raw_len.min(MAX_RAW_LEN) as usize);
            }
        }
        Err(_) => {}
    }
    // As stored: fails authentication.
    let _ = open_chunk(k, &id, data, raw_len.min(MAX_RAW_LEN) as usize);
}

pub fn index(data: &[u8]) {
    let k = keys();
    let _ = open_index_object(k, &hex_name("index/", data), data);
    let sealed = k.seal(INDEX_AAD, data);
    if let Ok(packs) = open_index_object(k, &hex_name("index/", &sealed), &sealed) {
        let entries: usize = packs.iter().map(|(_, e)| e.len()).sum();
        let deltas = packs.iter().flat_map(|(_, e)| e).filter(|e| e.base.is_some()).count();
        assert_eq!(packs.len() * 40 + entries * 44 + deltas * 36, data.len(), "entries and bytes disagree");
    }
}

/// A segment of the local index cache, from a file (it is memory-mapped): loaded, looked up, listed.
pub fn index_cache(data: &[u8]) {
    thread_local! {
        // In memory where there is a tmpfs: a file is written for every input.
        static DIR: tempfile::TempDir = tempfile::Builder::new()
            .prefix("dedupe-fuzz-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory");
    }
    DIR.with(|dir| {
        let path = dir.path().join("seg-0000000000000000.bin");
        std::fs::write(&path, data).expect("writing the segment file");
        let Ok(Some(ix)) = load_index_segment(&path) else { return };
        let mut ids = vec![[0u8; 32], [0xff; 32]];
        if data.len() >= 32 {
            ids.push(data[data.len() - 32..].try_into().expect("32"));
        }
        for (n, (id, _)) in ix.iter_ids().take(1 << 16).enumerate() {
            if n < 4 {
                ids.push(id);
            }
        }
        for id in &ids {
            let _ = ix.lookup(id);
        }
    });
}
