//! Key objects (`keys/<id>`): the master key wrapped by one passphrase.
//!
//! A key object is JSON: Argon2id parameters and salt, and the master key
//! sealed with XChaCha20-Poly1305 under the Argon2id output. Several key
//! objects may wrap the same master key; any one of them opens the
//! repository. A wrong passphrase fails the AEAD tag, which is how it is
//! told apart from a damaged key object (that fails JSON or length checks).

use crate::crypto::{self, Keys, KEY_LEN};
use crate::error::{Error, Result};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const AAD: &[u8] = b"dedupe key v1";

/// Argon2id cost. The default takes a fraction of a second and 64 MiB once
/// per command; `KdfParams::from_env` says how far it may be lowered. It is
/// RFC 9106's second recommended option (t = 3, p = 4, 64 MiB); its four
/// lanes are filled on as many cores as there are (the `parallel` feature),
/// so every command waits for the key about a third less than with one lane
/// on two cores, at the same memory cost to a guesser.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 4 }
    }
}

impl KdfParams {
    /// The least cost a new key gets outside the test suite: OWASP's minimum
    /// for Argon2id (19 MiB, 2 passes). A small machine may go down to it;
    /// below, a stolen key object would fall to an offline guesser too fast.
    pub const FLOOR: KdfParams = KdfParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };

    /// The cost for a new key: the default, or `DEDUPE_KDF_MEMORY_KIB` KiB of
    /// memory, never below [`KdfParams::FLOOR`]. Only a build with the
    /// `test-kdf` feature (the test suite's, which creates hundreds of
    /// repositories) may go below it, with one pass; a variable alone cannot,
    /// because anyone who can set one in a server's environment could.
    pub fn from_env() -> std::result::Result<Self, String> {
        Self::for_memory(std::env::var("DEDUPE_KDF_MEMORY_KIB").ok().as_deref(), cfg!(feature = "test-kdf"))
    }

    fn for_memory(kib: Option<&str>, below_floor: bool) -> std::result::Result<Self, String> {
        let Some(v) = kib else {
            return Ok(KdfParams::default());
        };
        let m: u32 = v.trim().parse().map_err(|_| format!("DEDUPE_KDF_MEMORY_KIB={v:?} is not a number of KiB"))?;
        if below_floor {
            return Ok(KdfParams { memory_kib: m, iterations: 1, parallelism: 1 });
        }
        if m < Self::FLOOR.memory_kib {
            return Err(format!(
                "DEDUPE_KDF_MEMORY_KIB={m} is below the floor of {} KiB: unset it, or give at least that",
                Self::FLOOR.memory_kib
            ));
        }
        let full = m >= KdfParams::default().memory_kib;
        let d = if full { KdfParams::default() } else { Self::FLOOR };
        Ok(KdfParams { memory_kib: m, iterations: d.iterations, parallelism: d.parallelism })
    }
}

#[derive(Serialize, Deserialize)]
pub struct KeyFile {
    pub kdf: String,
    #[serde(flatten)]
    pub params: KdfParams,
    pub salt: String,
    /// nonce || ciphertext || tag of the 32-byte master key.
    pub sealed_master: String,
    pub created: String,
    pub hostname: String,
    pub username: String,
    /// The id of the repository (its `config`) this key was made for.
    /// Absent in key objects written before it existed. Two racing `init`s
    /// both write a key before one of them wins `config`; the loser's key
    /// (or one a crash left behind) names another id and is never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

fn derive(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; KEY_LEN]> {
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(KEY_LEN))
        .map_err(|e| Error::Invalid(format!("bad Argon2id parameters: {e}")))?;
    let mut out = [0u8; KEY_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| Error::Invalid(format!("Argon2id failed: {e}")))?;
    Ok(out)
}

impl KeyFile {
    pub fn wrap(keys: &Keys, password: &[u8], params: KdfParams, created: String, repository: &str) -> Result<Self> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let kek = derive(password, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&kek.into());
        let sealed = crypto::seal_with(&cipher, AAD, keys.master());
        Ok(KeyFile {
            kdf: "argon2id".into(),
            params,
            salt: B64.encode(salt),
            sealed_master: B64.encode(sealed),
            created,
            hostname: hostname(),
            username: std::env::var("USER").unwrap_or_default(),
            repository: Some(repository.to_string()),
        })
    }

    /// `Ok(None)` for a wrong password; `Err` for a damaged key object.
    pub fn unwrap_keys(&self, object: &str, password: &[u8]) -> Result<Option<Keys>> {
        if self.kdf != "argon2id" {
            return Err(Error::corrupt(object, format!("unknown kdf {:?}", self.kdf)));
        }
        let bad = |what: &str| Error::corrupt(object, format!("{what} is not valid base64"));
        let salt = B64.decode(&self.salt).map_err(|_| bad("salt"))?;
        let sealed = B64.decode(&self.sealed_master).map_err(|_| bad("sealed_master"))?;
        if sealed.len() != KEY_LEN + crypto::OVERHEAD {
            return Err(Error::corrupt(object, "sealed master key has the wrong length"));
        }
        let kek = derive(password, &salt, self.params)?;
        let cipher = XChaCha20Poly1305::new(&kek.into());
        Ok(crypto::open_with(&cipher, AAD, &sealed).map(|m| {
            let master: [u8; KEY_LEN] = m.try_into().expect("length checked above");
            Keys::from_master(master)
        }))
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::KdfParams;

    #[test]
    fn no_variable_goes_below_the_floor_outside_the_test_build() {
        assert_eq!(KdfParams::for_memory(None, false), Ok(KdfParams::default()));
        let m = KdfParams::FLOOR.memory_kib;
        assert_eq!(KdfParams::for_memory(Some(&m.to_string()), false), Ok(KdfParams::FLOOR));
        assert_eq!(
            KdfParams::for_memory(Some("1024"), false),
            Err("DEDUPE_KDF_MEMORY_KIB=1024 is below the floor of 19456 KiB: unset it, or give at least that".into())
        );
        assert!(KdfParams::for_memory(Some(&(m - 1).to_string()), false).is_err());
        assert!(KdfParams::for_memory(Some("lots"), false).is_err());
        let more = KdfParams::for_memory(Some("262144"), false).unwrap();
        assert_eq!((more.memory_kib, more.iterations), (262144, 3));
        // The suite's build alone may go below it.
        let cheap = KdfParams::for_memory(Some("1024"), true).unwrap();
        assert_eq!((cheap.memory_kib, cheap.iterations), (1024, 1));
    }
}
