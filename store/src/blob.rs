//! A chunk's stored form: `nonce(24) || XChaCha20-Poly1305(flag || data) || tag(16)`
//! with the chunk id as associated data. `flag` is 0 for data stored raw and 1
//! for zstd; the writer stores raw whenever zstd does not make it smaller.
//! Binding the id as associated data means a blob cannot be passed off as
//! another chunk's, even by someone who can write to the repository.

use crate::crypto::{Id, Keys, NONCE_LEN};
use chacha20poly1305::aead::AeadInPlace;
use rand::RngCore;
use std::cell::RefCell;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

thread_local! {
    /// Each worker thread keeps its zstd context and output buffer.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A zstd context costs more to make than a 32 KiB page costs to decompress.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses (when it helps) and encrypts one chunk.
pub fn seal_chunk(keys: &Keys, id: &Id, plain: &[u8], level: i32) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let compressed = level != 0 && compress(plain, level, &mut scratch);
        let (flag, body) = if compressed { (ZSTD, &scratch[..]) } else { (RAW, plain) };
        let mut out = Vec::with_capacity(NONCE_LEN + 1 + body.len() + 16);
        out.extend_from_slice(&nonce);
        out.push(flag);
        out.extend_from_slice(body);
        let tag = keys
            .cipher()
            .encrypt_in_place_detached((&nonce).into(), id, &mut out[NONCE_LEN..])
            .expect("in-memory encryption cannot fail");
        out.extend_from_slice(&tag);
        out
    })
}

/// zstd into `out`; false unless the result is strictly smaller than the input.
fn compress(plain: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).expect("zstd level is valid")));
        }
        let (_, comp) = c.as_mut().expect("set above");
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

/// Why a blob failed to open.
#[derive(Debug)]
pub enum OpenError {
    /// Authentication failed: a flipped byte, a wrong key or a wrong id.
    Tag,
    Framing(String),
}

/// Decrypts and decompresses a blob; `raw_len` is the expected plaintext size.
pub fn open_chunk(keys: &Keys, id: &Id, sealed: &[u8], raw_len: usize) -> Result<Vec<u8>, OpenError> {
    let mut buf = keys.open(id, sealed).ok_or(OpenError::Tag)?;
    let data = match buf.first() {
        Some(&RAW) => {
            buf.drain(..1);
            buf
        }
        Some(&ZSTD) => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            let d = match d.as_mut() {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new().expect("zstd context")),
            };
            d.decompress(&buf[1..], raw_len).map_err(|e| OpenError::Framing(format!("zstd: {e}")))
        })?,
        Some(f) => return Err(OpenError::Framing(format!("unknown flag {f}"))),
        None => return Err(OpenError::Framing("empty payload".into())),
    };
    if data.len() != raw_len {
        return Err(OpenError::Framing(format!("{} bytes where the index says {raw_len}", data.len())));
    }
    Ok(data)
}
