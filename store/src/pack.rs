//! Packs (`data/<xx>/<pack id>`): many sealed chunks in one object, with an
//! encrypted trailer listing them, so the index can be rebuilt from packs.
//!
//! ```text
//! pack    = blob_0 || blob_1 || ... || blob_n-1 || trailer || trailer_len (u32 LE)
//! trailer = seal(aad = "dedupe pack trailer v2", entries)
//! entries = n (u32 LE) || n x entry || d (u32 LE) || d x (entry number (u32 LE) || base id (32))
//! entry   = chunk id (32) || offset (u32 LE) || length (u32 LE) || raw length (u32 LE)
//! ```
//! The `d` pairs name the base of each delta blob (`blob.rs`), so a prune
//! keeps bases and `repair index` restores that knowledge, without
//! decrypting blobs. Packs written before deltas existed have a `v1`
//! trailer: the entries alone.
//! The pack id is the unkeyed BLAKE3 of the whole object, so anyone can check
//! a pack against its name without the key.

use crate::crypto::{Id, Keys};
use crate::error::{Error, Result};

pub const TRAILER_AAD: &[u8] = b"dedupe pack trailer v2";
/// Trailers of packs written before deltas: the entries alone.
pub const TRAILER_AAD_V1: &[u8] = b"dedupe pack trailer v1";
pub const ENTRY_LEN: usize = 44;
/// A delta's base: entry number and base id.
pub const BASE_LEN: usize = 36;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// The chunk whose plaintext this delta blob needs.
    pub base: Option<Id>,
}

/// `n || entries || d || bases` (the trailer's and an index record's body).
pub fn encode_entries(entries: &[PackEntry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(out);
    }
    let bases = entries.iter().filter(|e| e.base.is_some()).count();
    out.extend_from_slice(&(bases as u32).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        if let Some(base) = &e.base {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(base);
        }
    }
}

/// Parses `encode_entries`'s output from the front of `p`; returns the
/// entries and what follows, or why it is not well formed.
pub fn decode_entries(p: &[u8]) -> std::result::Result<(Vec<PackEntry>, &[u8]), &'static str> {
    let u = |p: &[u8]| u32::from_le_bytes(p[..4].try_into().expect("4 bytes")) as usize;
    if p.len() < 4 {
        return Err("truncated entry count");
    }
    let n = u(p);
    let p = &p[4..];
    if p.len() / ENTRY_LEN < n || p.len() - n * ENTRY_LEN < 4 {
        return Err("truncated entry list");
    }
    let mut entries: Vec<PackEntry> = p[..n * ENTRY_LEN].chunks_exact(ENTRY_LEN).map(PackEntry::decode).collect();
    let p = &p[n * ENTRY_LEN..];
    let d = u(p);
    let p = &p[4..];
    if p.len() / BASE_LEN < d {
        return Err("truncated list of delta bases");
    }
    for b in p[..d * BASE_LEN].chunks_exact(BASE_LEN) {
        let e = entries.get_mut(u(b)).ok_or("a delta base names an entry that does not exist")?;
        if e.base.is_some() {
            return Err("an entry has two delta bases");
        }
        e.base = Some(b[4..].try_into().expect("32 bytes"));
    }
    Ok((entries, &p[d * BASE_LEN..]))
}

impl PackEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Self {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        PackEntry {
            id: b[..32].try_into().expect("32 bytes"),
            offset: u(32),
            length: u(36),
            raw_len: u(40),
            base: None,
        }
    }
}

/// The object name of a pack.
pub fn pack_name(pack_id: &Id) -> String {
    crate::backend::ObjectKind::Pack.name(&hex::encode(pack_id))
}

/// Packs are finished once they reach this size (tens of MiB: few objects,
/// yet a lost upload costs little), or less when many uploads are in
/// flight at once (`upload::pack_size`).
pub const TARGET_PACK_SIZE: usize = 32 * 1024 * 1024;

/// A pack being filled.
#[derive(Default)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    target: usize,
}

/// A finished pack: its bytes, id and entries.
pub struct FinishedPack {
    pub id: Id,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// A pack of about `target` bytes built in `buf` (emptied first): reusing
    /// the buffer of an uploaded pack spares the kernel zeroing fresh pages
    /// for every pack.
    pub fn with_buffer(mut buf: Vec<u8>, target: usize) -> Self {
        buf.clear();
        buf.reserve(target + (4 << 20));
        PackWriter { buf, entries: Vec::new(), target }
    }

    /// Appends a blob; `base` is the base of a delta blob.
    pub fn add(&mut self, id: Id, sealed: &[u8], raw_len: usize, base: Option<Id>) {
        self.entries.push(PackEntry {
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_len: raw_len as u32,
            base,
        });
        self.buf.extend_from_slice(sealed);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target
    }

    pub fn finish(self, keys: &Keys) -> FinishedPack {
        let mut plain = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 8);
        encode_entries(&self.entries, &mut plain);
        let trailer = keys.seal(TRAILER_AAD, &plain);
        let mut bytes = self.buf;
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        let id = *blake3::hash(&bytes).as_bytes();
        FinishedPack { id, bytes, entries: self.entries }
    }
}

/// Reads the entries of a whole pack, checking it against its id first.
pub fn read_entries(keys: &Keys, pack_id: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let name = pack_name(pack_id);
    if blake3::hash(bytes).as_bytes() != pack_id {
        return Err(Error::corrupt(&name, "its content does not match its name (a byte changed on storage)"));
    }
    parse_trailer(keys, &name, bytes)
}

/// The entries a pack's trailer lists, checked against the pack's length;
/// `name` is for messages (the id check is `read_entries`'s).
pub fn parse_trailer(keys: &Keys, name: &str, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let n = bytes.len();
    if n < 4 {
        return Err(Error::corrupt(name, "too short to be a pack"));
    }
    let tlen = u32::from_le_bytes(bytes[n - 4..].try_into().expect("4 bytes")) as usize;
    if tlen + 4 > n {
        return Err(Error::corrupt(name, "trailer length points outside the pack"));
    }
    open_trailer(keys, name, &bytes[n - 4 - tlen..n - 4], (n - 4 - tlen) as u64)
}

/// The entries of a pack's sealed trailer, checked against the length of
/// the body before it (`body_end`).
pub fn open_trailer(keys: &Keys, name: &str, sealed: &[u8], body_end: u64) -> Result<Vec<PackEntry>> {
    let entries = if let Some(plain) = keys.open(TRAILER_AAD, sealed) {
        match decode_entries(&plain) {
            Ok((entries, [])) => entries,
            Ok(_) => return Err(Error::corrupt(name, "trailer has bytes after its entries")),
            Err(why) => return Err(Error::corrupt(name, format!("trailer: {why}"))),
        }
    } else {
        let plain =
            keys.open(TRAILER_AAD_V1, sealed).ok_or_else(|| Error::corrupt(name, "trailer fails authentication"))?;
        if plain.len() % ENTRY_LEN != 0 {
            return Err(Error::corrupt(name, "trailer length is not a whole number of entries"));
        }
        plain.chunks_exact(ENTRY_LEN).map(PackEntry::decode).collect()
    };
    for e in &entries {
        if e.offset as u64 + e.length as u64 > body_end {
            return Err(Error::corrupt(name, "an entry points outside the pack body"));
        }
    }
    Ok(entries)
}
