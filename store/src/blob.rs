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
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Compresses (when it helps) and encrypts one chunk.
pub fn seal_chunk(keys: &Keys, id: &Id, plain: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(NONCE_LEN + 1 + plain.len() + 16);
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    out.push(ZSTD);
    let compressed = level != 0
        && COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((level, zstd::bulk::Compressor::new(level).expect("zstd level is valid")));
            }
            let (_, comp) = c.as_mut().expect("set above");
            // Only a strictly smaller result is kept: capacity is the input size.
            out.reserve(plain.len());
            let start = out.len();
            let spare = plain.len().saturating_sub(1);
            out.resize(start + spare, 0);
            match comp.compress_to_buffer(plain, &mut out[start..]) {
                Ok(n) => {
                    out.truncate(start + n);
                    true
                }
                Err(_) => {
                    out.truncate(start);
                    false
                }
            }
        });
    if !compressed {
        out[NONCE_LEN] = RAW;
        out.extend_from_slice(plain);
    }
    let tag = keys
        .cipher()
        .encrypt_in_place_detached((&nonce).into(), id, &mut out[NONCE_LEN..])
        .expect("in-memory encryption cannot fail");
    out.extend_from_slice(&tag);
    out
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
            buf.remove(0);
            buf
        }
        Some(&ZSTD) => {
            zstd::bulk::decompress(&buf[1..], raw_len).map_err(|e| OpenError::Framing(format!("zstd: {e}")))?
        }
        Some(f) => return Err(OpenError::Framing(format!("unknown flag {f}"))),
        None => return Err(OpenError::Framing("empty payload".into())),
    };
    if data.len() != raw_len {
        return Err(OpenError::Framing(format!("{} bytes where the index says {raw_len}", data.len())));
    }
    Ok(data)
}
