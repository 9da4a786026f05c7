//! Keys and authenticated encryption.
//!
//! The master key is 32 random bytes. Two keys are derived from it with
//! BLAKE3's `derive_key`: one keys the chunk-id hash (so ids reveal nothing
//! about content to anyone without the key), one is the XChaCha20-Poly1305
//! key for every encrypted object. Every sealed message gets a fresh random
//! 192-bit nonce made here, inside `seal`, so no caller can reuse one.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const ID_CONTEXT: &str = "dedupe 2026-11-21 chunk id";
const ENC_CONTEXT: &str = "dedupe 2026-11-21 object encryption";

/// A chunk id: keyed BLAKE3 of the chunk's plaintext.
pub type Id = [u8; 32];

/// The keys derived from a master key. Holding one is what "unlocked" means.
#[derive(Clone)]
pub struct Keys {
    master: [u8; KEY_LEN],
    id_key: [u8; KEY_LEN],
    cipher: XChaCha20Poly1305,
}

impl Keys {
    pub fn from_master(master: [u8; KEY_LEN]) -> Self {
        let id_key = blake3::derive_key(ID_CONTEXT, &master);
        let enc_key = blake3::derive_key(ENC_CONTEXT, &master);
        Keys { master, id_key, cipher: XChaCha20Poly1305::new(&enc_key.into()) }
    }

    pub fn generate() -> Self {
        let mut master = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut master);
        Self::from_master(master)
    }

    pub(crate) fn cipher(&self) -> &XChaCha20Poly1305 {
        &self.cipher
    }

    /// The master key itself: for key export and the format test vectors.
    pub fn master(&self) -> &[u8; KEY_LEN] {
        &self.master
    }

    /// The id of a chunk: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        *blake3::keyed_hash(&self.id_key, plaintext).as_bytes()
    }

    /// nonce || ciphertext || tag, with a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, aad, plaintext)
    }

    /// Opens what `seal` made; `None` when any byte (or the aad) differs.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.cipher, aad, sealed)
    }
}

pub(crate) fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

pub(crate) fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
}

/// Objects other than packs are named `<prefix>/<hex BLAKE3 of their bytes>`:
/// checks `bytes` against the name `object`, so damage is caught before
/// anything else looks at them.
pub(crate) fn check_content_name(object: &str, bytes: &[u8]) -> crate::error::Result<()> {
    if blake3::hash(bytes).to_hex().as_str() != crate::backend::content_hash_of(object) {
        return Err(crate::error::Error::corrupt(object, "its content does not match its name"));
    }
    Ok(())
}

/// Lower-case hex of an id.
pub fn hex_id(id: &Id) -> String {
    hex::encode(id)
}

/// Parses 64 hex digits into an id.
pub fn parse_id(s: &str) -> Option<Id> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}
