//! Opaque refresh tokens: 256 bits, url-safe base64. Only a SHA-256 of each token is
//! stored; a fast hash is right here because the token has full entropy (nothing to
//! brute-force), unlike a password.
//!
//! # Rotation, and the retry grace window with only hashes stored
//!
//! A session's first refresh token comes from the OS CSPRNG. Each rotation's successor is
//! `HMAC-SHA256(refresh key, presented token)`: a keyed PRF of a 256-bit secret, as
//! unpredictable as a random token to anyone without the key. The refresh key is random,
//! generated once and kept in the database beside the signing keys, so every replica
//! derives the same successor.
//!
//! Deriving rather than drawing the successor is what lets a retry get the SAME token back
//! although the database holds hashes only: when the token rotated most recently is
//! presented again within the grace window, the server recomputes its successor from it,
//! checks that the session's current hash is that successor's hash (so the chain has not
//! moved on) and hands it out again. Concurrent calls with one token thus all receive the
//! one successor (the compare-and-swap in the database lets exactly one write it), and the
//! chain never forks. Outside the window, or for any older token, the spent list marks it
//! as reuse and the session is revoked. Holding an old token is no help in deriving the
//! current one: that needs the refresh key, which never leaves the server.

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use sha2::Sha256;

use super::{KeySealer, random_bytes, sha256_hex};
use crate::store::{KeyRecord, KeyStore};

const TOKEN_BYTES: usize = 32;
/// 32 bytes in unpadded base64.
const TOKEN_LEN: usize = 43;
/// How the refresh key is filed among the keys in the database.
const REFRESH_KEY_ALGORITHM: &str = "refresh-hmac";

/// A refresh token to hand out, and the hash the database keeps of it.
#[derive(Debug)]
pub(super) struct NewRefreshToken {
    pub(super) token: SecretString,
    pub(super) hash: String,
}

impl NewRefreshToken {
    fn from_token(token: String) -> Self {
        let hash = hash_token(&token);
        Self {
            token: SecretString::from(token),
            hash,
        }
    }
}

/// A new session's first refresh token.
pub(super) fn new_refresh_token() -> anyhow::Result<NewRefreshToken> {
    Ok(NewRefreshToken::from_token(
        URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_BYTES>()?),
    ))
}

/// The stored form of a presented token, or `None` if it cannot be one of ours.
pub(super) fn refresh_token_hash(token: &str) -> Option<String> {
    let decoded = URL_SAFE_NO_PAD.decode(token).ok()?;
    (token.len() == TOKEN_LEN && decoded.len() == TOKEN_BYTES).then(|| hash_token(token))
}

fn hash_token(token: &str) -> String {
    sha256_hex(token)
}

/// The key successors are derived with.
pub struct RefreshKey(SecretBox<Vec<u8>>);

impl std::fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshKey([REDACTED])")
    }
}

impl RefreshKey {
    /// Loads the refresh key, generating and storing it on first start; replicas that
    /// start together all settle on the oldest.
    pub async fn load_or_create(
        keys: &dyn KeyStore,
        sealer: &KeySealer,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let mut live = keys
            .live_keys(&[REFRESH_KEY_ALGORITHM])
            .await
            .context("loading the refresh key")?;
        if live.is_empty() {
            let mut kid = String::from("refresh-");
            kid.push_str(&URL_SAFE_NO_PAD.encode(random_bytes::<12>()?));
            let record = KeyRecord {
                kid,
                algorithm: REFRESH_KEY_ALGORITHM.to_owned(),
                private_key: SecretBox::new(Box::new(random_bytes::<32>()?.to_vec())),
                public_key: None,
                created_at: now,
            };
            keys.insert_key(&sealer.sealed(&record)?)
                .await
                .context("storing a new refresh key")?;
            live = keys
                .live_keys(&[REFRESH_KEY_ALGORITHM])
                .await
                .context("loading the refresh key")?;
        }
        let first = live.first().context("no refresh key")?;
        Ok(Self(sealer.opened(first)?.private_key))
    }

    #[cfg(test)]
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// A key for another purpose, derived from this one (HMAC with the purpose's name):
    /// shared by every replica, as this one is.
    pub(super) fn derive(&self, purpose: &str) -> anyhow::Result<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .map_err(|e| anyhow::anyhow!("refresh key: {e}"))?;
        mac.update(purpose.as_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    /// The successor of a presented token.
    pub(super) fn successor(&self, token: &str) -> anyhow::Result<NewRefreshToken> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .map_err(|e| anyhow::anyhow!("refresh key: {e}"))?;
        mac.update(token.as_bytes());
        Ok(NewRefreshToken::from_token(
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn tokens_are_url_safe_unique_and_hash_to_what_is_stored() {
        let NewRefreshToken {
            token: a,
            hash: hash_a,
        } = new_refresh_token().unwrap();
        let b = new_refresh_token().unwrap().token;
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), TOKEN_LEN);
        assert!(
            a.expose_secret()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(refresh_token_hash(a.expose_secret()), Some(hash_a.clone()));
        assert_eq!(hash_a.len(), 64);
    }

    #[test]
    fn malformed_tokens_have_no_hash() {
        for token in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(44),
        ] {
            assert_eq!(refresh_token_hash(token), None, "{token:?}");
        }
    }

    #[test]
    fn successors_are_stable_per_key_and_look_like_any_token() {
        let key = RefreshKey::from_bytes(vec![7; 32]);
        let other = RefreshKey::from_bytes(vec![8; 32]);
        let token = new_refresh_token().unwrap().token;
        let NewRefreshToken {
            token: a,
            hash: hash_a,
        } = key.successor(token.expose_secret()).unwrap();
        let b = key.successor(token.expose_secret()).unwrap().token;
        let c = other.successor(token.expose_secret()).unwrap().token;
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
        assert_eq!(refresh_token_hash(a.expose_secret()), Some(hash_a));
    }
}
