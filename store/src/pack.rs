//! Packs (`data/<xx>/<pack id>`): many sealed chunks in one object, with an
//! encrypted trailer listing them, so the index can be rebuilt from packs.
//!
//! ```text
//! pack    = blob_0 || blob_1 || ... || blob_n-1 || trailer || trailer_len (u32 LE)
//! trailer = seal(aad = "dedupe pack trailer v1", entry_0 || ... || entry_n-1)
//! entry   = chunk id (32) || offset (u32 LE) || length (u32 LE) || raw length (u32 LE)
//! ```
//! The pack id is the unkeyed BLAKE3 of the whole object, so anyone can check
//! a pack against its name without the key.

use crate::crypto::{Id, Keys};
use crate::error::{Error, Result};

pub const TRAILER_AAD: &[u8] = b"dedupe pack trailer v1";
pub const ENTRY_LEN: usize = 44;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
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
        PackEntry { id: b[..32].try_into().expect("32 bytes"), offset: u(32), length: u(36), raw_len: u(40) }
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

    pub fn add(&mut self, id: Id, sealed: &[u8], raw_len: usize) {
        self.entries.push(PackEntry {
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_len: raw_len as u32,
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
        let mut plain = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            e.encode(&mut plain);
        }
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
    let plain = keys.open(TRAILER_AAD, sealed).ok_or_else(|| Error::corrupt(name, "trailer fails authentication"))?;
    if plain.len() % ENTRY_LEN != 0 {
        return Err(Error::corrupt(name, "trailer length is not a whole number of entries"));
    }
    let entries: Vec<PackEntry> = plain.chunks_exact(ENTRY_LEN).map(PackEntry::decode).collect();
    for e in &entries {
        if e.offset as u64 + e.length as u64 > body_end {
            return Err(Error::corrupt(name, "an entry points outside the pack body"));
        }
    }
    Ok(entries)
}
