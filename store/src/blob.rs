//! A chunk's stored form: `nonce(24) || XChaCha20-Poly1305(flag || payload) || tag(16)`
//! with the chunk id as associated data. `flag` is 0 for data stored raw, 1
//! for zstd, 2 for a delta: the id of a base chunk, then a zstd frame made
//! with the base's plaintext as a raw-content dictionary (a changed
//! database page against its previous version: a few rows differ, so the
//! frame is a tenth of the page's own). A base is always stored whole
//! (flag 0 or 1), so a delta needs one more blob, never a chain.
//! Binding the id as associated data means a blob cannot be passed off as
//! another chunk's, even by someone who can write to the repository.
//!
//! The writer hands the base to a context of its own as a prefix
//! (`refPrefix`), with a window and hash table sized for base and chunk;
//! the reader hands it to `ZSTD_decompress_usingDict` for one call, which
//! reads a dictionary that starts with zstd's dictionary magic as a
//! structured dictionary: so such a base is never used (the chunk is stored
//! whole), and every delta means a raw-content prefix.

use crate::crypto::{Id, Keys, NONCE_LEN};
use rand::RngCore;
use std::cell::RefCell;

const RAW: u8 = 0;
const ZSTD: u8 = 1;
const DELTA: u8 = 2;
/// zstd's dictionary magic (0xEC30A437, little-endian).
const DICT_MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];
/// A delta is kept without comparing it with the chunk compressed alone when
/// it is at most this fraction of the plaintext (1/32: a block of pages in
/// which a few rows changed, a few hundred bytes, skips the second compression).
const SURELY_SMALL: usize = 32;

thread_local! {
    /// Each worker thread keeps its zstd contexts and output buffer.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DELTA_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A zstd context costs more to make than a 32 KiB page costs to decompress.
    static DECOMPRESSOR: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// Compresses (when it helps) and encrypts one chunk.
pub fn seal_chunk(keys: &Keys, id: &Id, plain: &[u8], level: i32) -> Vec<u8> {
    seal_chunk_against(keys, id, plain, None, level).0
}

/// Whether a chunk may serve as a delta's base (see the module doc).
pub fn usable_base(base: &[u8]) -> bool {
    base.len() >= 8 && !base.starts_with(&DICT_MAGIC)
}

/// Seals a chunk as a delta on `base` (its id and plaintext, a chunk stored
/// whole) when that is much smaller than the chunk compressed alone: at
/// most half of it, or at most 1/32 of the plaintext. Otherwise as
/// `seal_chunk`. Returns the blob and whether it is a delta.
pub fn seal_chunk_against(
    keys: &Keys,
    id: &Id,
    plain: &[u8],
    base: Option<(&Id, &[u8])>,
    level: i32,
) -> (Vec<u8>, bool) {
    SCRATCH.with(|scratch| {
        DELTA_SCRATCH.with(|delta| {
            let (mut scratch, mut delta) = (scratch.borrow_mut(), delta.borrow_mut());
            let delta_len = match base {
                Some((_, b)) if level != 0 && usable_base(b) && compress_delta(plain, b, level, &mut delta) => {
                    Some(delta.len())
                }
                _ => None,
            };
            if let (Some(d), Some((base_id, _))) = (delta_len, base) {
                if d * SURELY_SMALL <= plain.len() {
                    return (seal(keys, id, DELTA, &[base_id, &delta[..]]), true);
                }
            }
            let compressed = level != 0 && compress(plain, level, &mut scratch);
            if let (Some(d), Some((base_id, _))) = (delta_len, base) {
                let alone = if compressed { scratch.len() } else { plain.len() };
                if 2 * (d + base_id.len()) <= alone {
                    return (seal(keys, id, DELTA, &[base_id, &delta[..]]), true);
                }
            }
            let blob = if compressed { seal(keys, id, ZSTD, &[&scratch[..]]) } else { seal(keys, id, RAW, &[plain]) };
            (blob, false)
        })
    })
}

/// `nonce || encrypt(flag || parts...) || tag`.
fn seal(keys: &Keys, id: &Id, flag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(NONCE_LEN + 1 + len + 16);
    out.extend_from_slice(&nonce);
    out.push(flag);
    for p in parts {
        out.extend_from_slice(p);
    }
    let tag = keys.encrypt_in_place(&nonce, id, &mut out[NONCE_LEN..]);
    out.extend_from_slice(&tag);
    out
}

/// zstd into `out`; false unless the result is strictly smaller than the input.
fn compress(plain: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    with_compressor(level, |comp| {
        out.clear();
        // Room for about the input only: zstd gives up when it cannot fit,
        // which is the sign to store the chunk raw.
        out.reserve(plain.len());
        match comp.compress_to_buffer(plain, out) {
            Ok(n) => n < plain.len(),
            Err(_) => false,
        }
    })
}

/// zstd with `base` as a raw-content dictionary into `out`; false unless
/// the result is strictly smaller than the input. The window covers the
/// base and the chunk, and the hash table has a slot for about every other
/// position of them: with the level's own table (2^14 slots at level 1) a
/// 256 KiB base lost most of its positions before the chunk was compressed,
/// and a delta that should take 6 MB took 77 (measured on a day of pgbench,
/// format-spec §7.5).
fn compress_delta(plain: &[u8], base: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    use zstd::zstd_safe::{CCtx, CParameter};
    let window_log = (usize::BITS - (base.len() + plain.len()).max(1024).leading_zeros()).min(27);
    // A context per delta: a prefix borrows the base for one frame, and
    // loading the base as a dictionary instead (kept by a context that
    // lives on) builds a digested dictionary of every position each time,
    // which took 44% of a day-2 backup's CPU.
    let mut cctx = CCtx::create();
    out.clear();
    out.reserve(plain.len());
    let made = cctx
        .set_parameter(CParameter::CompressionLevel(level))
        .and_then(|_| cctx.set_parameter(CParameter::WindowLog(window_log)))
        .and_then(|_| cctx.set_parameter(CParameter::HashLog(window_log - 1)))
        .and_then(|_| cctx.ref_prefix(base))
        .and_then(|_| cctx.compress2(out, plain));
    matches!(made, Ok(n) if n < plain.len())
}

fn with_compressor<T>(level: i32, f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T) -> T {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).expect("zstd level is valid")));
        }
        let (_, comp) = c.as_mut().expect("set above");
        f(comp)
    })
}

/// Why a blob failed to open.
#[derive(Debug)]
pub enum OpenError {
    /// Authentication failed: a flipped byte, a wrong key or a wrong id.
    Tag,
    Framing(String),
}

/// An authenticated blob: the chunk's plaintext, or a delta and the id of
/// the base it needs.
#[derive(Clone)]
pub enum Opened {
    Plain(Vec<u8>),
    Delta { base: Id, frame: Vec<u8> },
}

/// Decrypts a blob and decompresses it unless it is a delta; `raw_len` is
/// the expected plaintext size.
pub fn open_blob(keys: &Keys, id: &Id, sealed: &[u8], raw_len: usize) -> Result<Opened, OpenError> {
    decode(&keys.open(id, sealed).ok_or(OpenError::Tag)?, raw_len)
}

/// `open_blob` decrypting in `sealed` itself (a reader's own buffer), which
/// spares copying the blob out first.
pub fn open_blob_in_place(keys: &Keys, id: &Id, sealed: &mut [u8], raw_len: usize) -> Result<Opened, OpenError> {
    decode(keys.open_in_place(id, sealed).ok_or(OpenError::Tag)?, raw_len)
}

/// A blob's payload (flag, then content) as a plaintext or a delta.
fn decode(payload: &[u8], raw_len: usize) -> Result<Opened, OpenError> {
    let data = match payload.first() {
        Some(&RAW) => payload[1..].to_vec(),
        Some(&ZSTD) => {
            let mut out = Vec::with_capacity(raw_len);
            with_decompressor(|d| d.decompress(&mut out, &payload[1..])).map_err(zstd_error)?;
            out
        }
        Some(&DELTA) => {
            let base: Id = payload
                .get(1..33)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| OpenError::Framing("a delta too short to name its base".into()))?;
            return Ok(Opened::Delta { base, frame: payload[33..].to_vec() });
        }
        Some(f) => return Err(OpenError::Framing(format!("unknown flag {f}"))),
        None => return Err(OpenError::Framing("empty payload".into())),
    };
    check_len(data, raw_len).map(Opened::Plain)
}

/// Decrypts and decompresses a blob stored whole (the test vectors' and
/// fuzz targets' reader); a delta is an error.
#[cfg(any(test, feature = "internals"))]
pub fn open_chunk(keys: &Keys, id: &Id, sealed: &[u8], raw_len: usize) -> Result<Vec<u8>, OpenError> {
    match open_blob(keys, id, sealed, raw_len)? {
        Opened::Plain(p) => Ok(p),
        Opened::Delta { .. } => Err(OpenError::Framing("a delta, read without its base".into())),
    }
}

/// A delta's plaintext from its frame and its base's plaintext.
pub fn apply_delta(frame: &[u8], base: &[u8], raw_len: usize) -> Result<Vec<u8>, OpenError> {
    if !usable_base(base) {
        return Err(OpenError::Framing("a delta on a base no writer may use".into()));
    }
    let mut out = Vec::with_capacity(raw_len);
    with_decompressor(|d| d.decompress_using_dict(&mut out, frame, base)).map_err(zstd_error)?;
    check_len(out, raw_len)
}

fn check_len(data: Vec<u8>, raw_len: usize) -> Result<Vec<u8>, OpenError> {
    if data.len() != raw_len {
        return Err(OpenError::Framing(format!("{} bytes where the index says {raw_len}", data.len())));
    }
    Ok(data)
}

/// The output is bounded by its capacity, the raw length the index gives.
fn with_decompressor<T>(f: impl FnOnce(&mut zstd::zstd_safe::DCtx<'static>) -> T) -> T {
    DECOMPRESSOR.with(|d| f(d.borrow_mut().get_or_insert_with(zstd::zstd_safe::DCtx::create)))
}

fn zstd_error(code: usize) -> OpenError {
    OpenError::Framing(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(seed: u8) -> Vec<u8> {
        (0..16384u32).map(|i| ((i * 7 + seed as u32) % 251) as u8 ^ (i / 64) as u8).collect()
    }

    #[test]
    fn a_changed_page_is_stored_as_a_small_delta_on_its_base_and_reads_back() {
        let keys = Keys::generate();
        let base = page(1);
        let mut changed = base.clone();
        changed[5000..5040].copy_from_slice(&[9u8; 40]);
        let (base_id, id) = (keys.chunk_id(&base), keys.chunk_id(&changed));
        let (alone, _) = seal_chunk_against(&keys, &id, &changed, None, 1);
        let (blob, is_delta) = seal_chunk_against(&keys, &id, &changed, Some((&base_id, &base)), 1);
        assert!(is_delta);
        assert!(blob.len() * 4 < alone.len(), "{} against {}", blob.len(), alone.len());
        let Ok(Opened::Delta { base: named, frame }) = open_blob(&keys, &id, &blob, changed.len()) else {
            panic!("a delta")
        };
        assert_eq!(named, base_id);
        assert_eq!(apply_delta(&frame, &base, changed.len()).unwrap(), changed);
        assert!(open_chunk(&keys, &id, &blob, changed.len()).is_err(), "a delta is not read without its base");
        // The wrong base is an error, not other bytes.
        let other = page(2);
        assert!(apply_delta(&frame, &other, changed.len()).map_or(true, |p| p != changed));
    }

    /// A 256 KiB block of alike pages (PostgreSQL's: the same tuple layout
    /// row after row) with one row changed near its start: the delta must
    /// find the base's early positions, which a hash table sized for the
    /// level alone (2^14 slots at level 1) had lost by the time the block
    /// was compressed.
    #[test]
    fn a_change_near_the_start_of_a_256_kib_block_is_a_small_delta() {
        let keys = Keys::generate();
        let base: Vec<u8> = (0..32u32)
            .flat_map(|p| {
                (0..8192u32).map(move |i| ((i % 121) as u8).wrapping_mul(7) ^ (p as u8) ^ ((i * 40503) >> 9) as u8)
            })
            .collect();
        let mut changed = base.clone();
        changed[3000..3040].copy_from_slice(&[9u8; 40]);
        let (base_id, id) = (keys.chunk_id(&base), keys.chunk_id(&changed));
        let (blob, is_delta) = seal_chunk_against(&keys, &id, &changed, Some((&base_id, &base)), 1);
        assert!(is_delta);
        assert!(blob.len() < 1024, "a 40-byte change took {} bytes", blob.len());
        let Ok(Opened::Delta { frame, .. }) = open_blob(&keys, &id, &blob, changed.len()) else { panic!("a delta") };
        assert_eq!(apply_delta(&frame, &base, changed.len()).unwrap(), changed);
    }

    #[test]
    fn an_unrelated_base_or_a_base_starting_with_the_dictionary_magic_is_not_used() {
        let keys = Keys::generate();
        let plain = page(3);
        let id = keys.chunk_id(&plain);
        let unrelated: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let (_, is_delta) = seal_chunk_against(&keys, &id, &plain, Some((&[1; 32], &unrelated)), 1);
        assert!(!is_delta);
        let mut magic = plain.clone();
        magic[..4].copy_from_slice(&DICT_MAGIC);
        let (blob, is_delta) = seal_chunk_against(&keys, &id, &plain, Some((&[1; 32], &magic)), 1);
        assert!(!is_delta);
        assert_eq!(open_chunk(&keys, &id, &blob, plain.len()).unwrap(), plain);
        // Level 0 stores raw, never a delta.
        let (_, is_delta) = seal_chunk_against(&keys, &id, &plain, Some((&[1; 32], &page(3))), 0);
        assert!(!is_delta);
    }
}
