//! Signing keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretBox;

use super::StoreResult;

/// A stored signing key.
#[derive(Debug)]
pub struct KeyRecord {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER for Ed25519 and ECDSA, PKCS#1 DER for RSA, the raw secret for HMAC.
    pub private_key: SecretBox<Vec<u8>>,
    /// The raw public key for Ed25519, SubjectPublicKeyInfo DER for ECDSA and RSA; `None`
    /// for HMAC.
    pub public_key: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

impl KeyRecord {
    /// The same key with its private part in another form (sealed or opened).
    pub fn with_private_key(&self, private_key: Vec<u8>) -> Self {
        Self {
            kid: self.kid.clone(),
            algorithm: self.algorithm.clone(),
            private_key: SecretBox::new(Box::new(private_key)),
            public_key: self.public_key.clone(),
            created_at: self.created_at,
        }
    }
}

/// Signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Keys of these algorithms that are not retired, oldest first.
    async fn live_keys(&self, algorithms: &[&str]) -> StoreResult<Vec<KeyRecord>>;
    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()>;
    /// Stops a key from verifying anything.
    async fn retire_key(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()>;
}
