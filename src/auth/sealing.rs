//! Private keys at rest: sealed with XChaCha20-Poly1305 under a master key that lives
//! outside the database (the operator's master key setting), so a copy of the
//! database alone does not let anyone mint tokens. The key id is bound in as associated
//! data, so a sealed key cannot be moved to another row.
//!
//! Sealed values start with [`SEALED_PREFIX`]; anything else is a key stored before a
//! master key was configured, and is read as it is.

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit as _, XChaCha20Poly1305, XNonce,
    aead::{Aead as _, Payload},
};
use hex::FromHex as _;
use secrecy::{ExposeSecret as _, SecretBox};

use super::random_bytes;
use crate::store::KeyRecord;

const SEALED_PREFIX: &[u8; 16] = b"authd-sealed-v1\0";
const NONCE_LEN: usize = 24;

/// A stored key that cannot be opened with the master key configured.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("signing key {0} is sealed and no master key is set")]
    NoMasterKey(String),
    #[error("cannot open signing key {0} (wrong master key?)")]
    WrongMasterKey(String),
}

/// Seals and opens private keys; without a master key, stores them as they are.
pub struct KeySealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySealer")
            .field("sealing", &self.cipher.is_some())
            .finish()
    }
}

impl KeySealer {
    /// From a base64 (or 64-character hex) encoding of 32 random bytes; `None` stores keys
    /// unsealed.
    pub fn new(master_key: Option<&secrecy::SecretString>) -> anyhow::Result<Self> {
        let Some(encoded) = master_key else {
            return Ok(Self { cipher: None });
        };
        let encoded = encoded.expose_secret().trim();
        // 64 hex digits are never 32 bytes of base64 (that takes 44 characters).
        let bytes = if encoded.len() == 64 {
            Vec::from_hex(encoded).ok()
        } else {
            STANDARD.decode(encoded).ok()
        };
        let key = bytes
            .filter(|b| b.len() == 32)
            .context("expected 32 bytes, base64 or hex encoded (e.g. `openssl rand -base64 32`)")?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("expected 32 bytes"))?;
        Ok(Self {
            cipher: Some(cipher),
        })
    }

    pub fn is_sealing(&self) -> bool {
        self.cipher.is_some()
    }

    /// The stored form of a private key.
    pub(crate) fn seal(&self, kid: &str, key: &[u8]) -> anyhow::Result<Vec<u8>> {
        let Some(cipher) = &self.cipher else {
            return Ok(key.to_vec());
        };
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: key,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing key {kid} failed"))?;
        Ok([SEALED_PREFIX.as_slice(), &nonce, &sealed].concat())
    }

    /// The record as stored: its private key sealed.
    pub(crate) fn sealed(&self, record: &KeyRecord) -> anyhow::Result<KeyRecord> {
        let stored = self.seal(&record.kid, record.private_key.expose_secret())?;
        Ok(record.with_private_key(stored))
    }

    /// The record as used: its private key opened.
    pub(crate) fn opened(&self, record: &KeyRecord) -> anyhow::Result<KeyRecord> {
        let key = self.open(&record.kid, record.private_key.expose_secret())?;
        Ok(record.with_private_key(key.expose_secret().clone()))
    }

    /// A private key from its stored form.
    pub(crate) fn open(&self, kid: &str, stored: &[u8]) -> anyhow::Result<SecretBox<Vec<u8>>> {
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX.as_slice()) else {
            return Ok(SecretBox::new(Box::new(stored.to_vec())));
        };
        let cipher = self
            .cipher
            .as_ref()
            .ok_or_else(|| SealError::NoMasterKey(kid.to_owned()))?;
        let (nonce, ciphertext) = sealed
            .split_at_checked(NONCE_LEN)
            .with_context(|| format!("signing key {kid}: sealed value is truncated"))?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into()?;
        let key = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongMasterKey(kid.to_owned()))?;
        Ok(SecretBox::new(Box::new(key)))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn sealer(key: &str) -> KeySealer {
        KeySealer::new(Some(&SecretString::from(key))).unwrap()
    }

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn sealed_keys_open_only_with_the_same_master_key_and_kid() {
        let a = sealer(KEY_A);
        let b = sealer(&"ab".repeat(32));
        let stored = a.seal("kid-1", b"private key bytes").unwrap();
        assert!(!stored.windows(17).any(|w| w == b"private key bytes"));
        assert_eq!(
            a.open("kid-1", &stored).unwrap().expose_secret(),
            b"private key bytes"
        );
        assert!(b.open("kid-1", &stored).is_err());
        assert!(a.open("kid-2", &stored).is_err());
        assert!(
            KeySealer::new(None)
                .unwrap()
                .open("kid-1", &stored)
                .is_err()
        );
    }

    #[test]
    fn hex_and_base64_spell_the_same_master_key() {
        let hex = hex::encode((0u8..32).collect::<Vec<u8>>());
        let stored = sealer(KEY_A).seal("kid", b"private").unwrap();
        let opened = sealer(&hex.to_uppercase()).open("kid", &stored).unwrap();
        assert_eq!(opened.expose_secret(), b"private");
    }

    #[test]
    fn unsealed_keys_still_open() {
        let stored = KeySealer::new(None).unwrap().seal("kid", b"raw").unwrap();
        assert_eq!(stored, b"raw");
        assert_eq!(
            sealer(KEY_A).open("kid", &stored).unwrap().expose_secret(),
            b"raw"
        );
    }

    #[test]
    fn a_bad_master_key_is_refused_without_echoing_it() {
        let err = KeySealer::new(Some(&SecretString::from("c2hvcnQ="))).unwrap_err();
        assert!(err.to_string().contains("expected 32 bytes"));
        assert!(!err.to_string().contains("c2hvcnQ="));
    }
}
