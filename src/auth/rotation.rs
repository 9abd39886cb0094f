//! Where signing keys come from, and their rotation: a key is generated and published
//! ahead of its turn, signs for a rotation period, and is retired once no token it signed
//! can still be live. Every replica applies the same schedule to what the database holds,
//! so all of them agree on the signer without talking to each other.

use std::time::Duration;

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use sha2::Digest as _;
use uuid::Uuid;

use super::{
    BelowFloor, CLOCK_SKEW_ALLOWANCE, KeySealer, Keyring, SigningAlgorithm, TokenSettings,
    chrono_duration, random_bytes,
};
use crate::store::{KeyRecord, KeyStore};

/// RFC 7518 3.2: HS256 keys of at least 256 bits.
const MIN_HMAC_SECRET_BYTES: u64 = 32;

/// Where signing keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Generated, stored (sealed) in the database and rotated on a schedule.
    Rotating(RotationSchedule),
    /// One HS256 secret every replica is given.
    SharedSecret(HmacSecret),
}

/// How often keys rotate, and how often replicas look.
#[derive(Debug, Clone, Copy)]
pub struct RotationSchedule {
    /// How long a key signs before the next takes over.
    pub rotation: Duration,
    /// How often every replica reloads the keys (and applies the schedule).
    pub reload_interval: Duration,
}

/// An HS256 secret of at least 256 bits.
#[derive(Clone)]
pub struct HmacSecret(SecretString);

impl std::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSecret([REDACTED])")
    }
}

impl HmacSecret {
    /// Refuses a secret shorter than the hash output (RFC 7518 3.2); the error holds
    /// only lengths.
    pub fn new(secret: SecretString) -> Result<Self, BelowFloor> {
        let len = u64::try_from(secret.expose_secret().len()).unwrap_or(u64::MAX);
        BelowFloor::check(len, MIN_HMAC_SECRET_BYTES)?;
        Ok(Self(secret))
    }
}

impl Keyring {
    /// Loads the keys of the configured algorithm and applies the rotation schedule:
    /// generates the first key on first start, publishes the next key `lead` before it is
    /// due to sign, and retires keys whose last token has expired. Every replica runs this
    /// at start-up and then every reload interval; all of them pick the same signer (the
    /// key activated last), so they agree without talking to each other.
    pub async fn load(
        keys: &dyn KeyStore,
        settings: &TokenSettings,
        sealer: &KeySealer,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let schedule = match &settings.keys {
            KeySource::SharedSecret(secret) => return Self::from_secret(secret, settings, now),
            KeySource::Rotating(schedule) => schedule,
        };
        let name = settings.algorithm.as_str();
        let mut live = keys.live_keys(name).await.context("loading signing keys")?;
        let schedule = Schedule {
            now,
            lead: chrono_duration(schedule.reload_interval * 2),
            rotation: chrono_duration(schedule.rotation),
            overlap: chrono_duration(
                settings.access_ttl
                    + settings.leeway
                    + schedule.reload_interval
                    + CLOCK_SKEW_ALLOWANCE,
            ),
        };
        if schedule.due(&live) {
            let key = generate_key(settings.algorithm, now)?;
            keys.insert_key(&sealer.sealed(&key)?)
                .await
                .context("storing a new signing key")?;
            tracing::info!(kid = %key.kid, algorithm = name, sealed = sealer.is_sealing(), "published a new signing key");
            live = keys.live_keys(name).await.context("loading signing keys")?;
        }
        let retired = schedule.retired(&live);
        for kid in &retired {
            keys.retire_key(kid, now)
                .await
                .context("retiring a signing key")?;
            tracing::info!(kid = %kid, "retired a signing key");
        }
        live.retain(|k| !retired.contains(&k.kid));
        let signer = schedule.signer(&live).context("no signing key")?;
        let signer_kid = live[signer].kid.clone();
        let opened = live
            .iter()
            .map(|record| sealer.opened(record))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::from_records(&opened, &signer_kid, settings)
    }

    /// HS256 with an operator-supplied secret, shared by every replica.
    fn from_secret(
        secret: &HmacSecret,
        settings: &TokenSettings,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.algorithm == SigningAlgorithm::Hs256,
            "a shared secret signs only HS256"
        );
        let secret = secret.0.expose_secret().as_bytes();
        // The kid names the secret without revealing it: a truncated hash of a 256-bit
        // secret gives nothing away.
        let digest = sha2::Sha256::digest(secret);
        let record = KeyRecord {
            kid: format!("hs256-{}", URL_SAFE_NO_PAD.encode(&digest[..9])),
            algorithm: SigningAlgorithm::Hs256.as_str().to_owned(),
            private_key: SecretBox::new(Box::new(secret.to_vec())),
            public_key: None,
            created_at: now,
        };
        let kid = record.kid.clone();
        Self::from_records(&[record], &kid, settings)
    }
}

/// The rotation schedule at one moment, applied to the live keys (oldest first).
struct Schedule {
    now: DateTime<Utc>,
    /// A new key is published this long before it signs: two reloads, so that every
    /// replica verifies with it before any signs with it.
    lead: chrono::Duration,
    rotation: chrono::Duration,
    /// How long a superseded key still verifies: replicas switch to a new signer at their
    /// first reload after it activates (within a reload interval, and the clock skew
    /// replicas may have) and sign with the old key until then; its last token then lives
    /// an access TTL and the leeway.
    overlap: chrono::Duration,
}

impl Schedule {
    fn activation(&self, key: &KeyRecord) -> DateTime<Utc> {
        key.created_at + self.lead
    }

    /// The index of the key that signs: the one activated last, or the first key before
    /// any is active (a fresh database's first key signs at once).
    fn signer(&self, keys: &[KeyRecord]) -> Option<usize> {
        if keys.is_empty() {
            return None;
        }
        let active = keys.iter().rposition(|k| self.activation(k) <= self.now);
        Some(active.unwrap_or(0))
    }

    /// Whether a new key is due: none is waiting for its turn, and the signer's
    /// rotation period ends within the lead.
    fn due(&self, keys: &[KeyRecord]) -> bool {
        let pending = keys.iter().any(|k| self.activation(k) > self.now);
        let ending = self
            .signer(keys)
            .map(|i| &keys[i])
            .is_none_or(|signer| self.activation(signer) + self.rotation - self.lead <= self.now);
        !pending && ending
    }

    /// The keys before the signer whose successor activated more than the overlap ago.
    fn retired(&self, keys: &[KeyRecord]) -> Vec<String> {
        let signer = self.signer(keys).unwrap_or(0);
        keys.iter()
            .zip(keys.iter().skip(1))
            .take(signer)
            .filter(|(_, newer)| self.activation(newer) + self.overlap <= self.now)
            .map(|(older, _)| older.kid.clone())
            .collect()
    }
}

/// A fresh key for `algorithm`, with a random kid.
pub(super) fn generate_key(
    algorithm: SigningAlgorithm,
    now: DateTime<Utc>,
) -> anyhow::Result<KeyRecord> {
    let secret: [u8; 32] = random_bytes()?;
    let (private_key, public_key) = match algorithm {
        SigningAlgorithm::EdDsa => {
            let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
            let der = signing
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("encoding an Ed25519 key: {e}"))?;
            (
                der.as_bytes().to_vec(),
                Some(signing.verifying_key().to_bytes().to_vec()),
            )
        }
        // 256 bits, as RFC 7518 3.2 asks of HS256 keys.
        SigningAlgorithm::Hs256 => (secret.to_vec(), None),
    };
    Ok(KeyRecord {
        kid: URL_SAFE_NO_PAD.encode(Uuid::now_v7().as_bytes()),
        algorithm: algorithm.as_str().to_owned(),
        private_key: SecretBox::new(Box::new(private_key)),
        public_key,
        created_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_hs256_secret_is_refused_without_echoing_it() {
        let err = HmacSecret::new(SecretString::from("tooshort-secret")).unwrap_err();
        assert_eq!((err.floor, err.got), (32, 15));
        assert!(!err.to_string().contains("tooshort-secret"));
        assert!(HmacSecret::new(SecretString::from("x".repeat(32))).is_ok());
        let mut settings = crate::auth::tokens::tests::settings(SigningAlgorithm::EdDsa);
        let secret = HmacSecret::new(SecretString::from("x".repeat(32))).unwrap();
        settings.keys = KeySource::SharedSecret(secret.clone());
        assert!(Keyring::from_secret(&secret, &settings, Utc::now()).is_err());
    }

    /// Keys in memory, for the rotation schedule.
    #[derive(Debug, Default)]
    struct MemoryKeys(std::sync::Mutex<Vec<(KeyRecord, bool)>>);

    #[async_trait::async_trait]
    impl KeyStore for MemoryKeys {
        async fn live_keys(&self, algorithm: &str) -> crate::store::StoreResult<Vec<KeyRecord>> {
            let keys = self.0.lock().unwrap();
            let mut live: Vec<KeyRecord> = keys
                .iter()
                .filter(|(key, retired)| key.algorithm == algorithm && !retired)
                .map(|(key, _)| key.with_private_key(key.private_key.expose_secret().clone()))
                .collect();
            live.sort_by_key(|key| key.created_at);
            Ok(live)
        }

        async fn insert_key(&self, key: &KeyRecord) -> crate::store::StoreResult<()> {
            let copy = key.with_private_key(key.private_key.expose_secret().clone());
            self.0.lock().unwrap().push((copy, false));
            Ok(())
        }

        async fn retire_key(&self, kid: &str, _: DateTime<Utc>) -> crate::store::StoreResult<()> {
            for (key, retired) in self.0.lock().unwrap().iter_mut() {
                *retired |= key.kid == kid;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_superseded_key_outlives_the_tokens_a_replica_that_has_not_reloaded_signs() {
        let settings = crate::auth::tokens::tests::settings(SigningAlgorithm::EdDsa);
        let KeySource::Rotating(schedule) = settings.keys.clone() else {
            unreachable!("rotating keys")
        };
        let (keys, sealer) = (MemoryKeys::default(), KeySealer::new(None).unwrap());
        let load = async |now| Keyring::load(&keys, &settings, &sealer, now).await.unwrap();
        let kids = |ring: &Keyring| -> Vec<String> {
            ring.public_keys().iter().map(|k| k.kid.clone()).collect()
        };
        let t0 = Utc::now();
        let first = load(t0).await;
        let old_kid = first.signing_kid.clone();
        // The next key is published a lead (two reload intervals) ahead of its turn.
        let lead = chrono_duration(schedule.reload_interval * 2);
        let published = t0 + chrono_duration(schedule.rotation);
        let second = load(published).await;
        assert_eq!(kids(&second).len(), 2, "the next key was not published");
        let active = published + lead;
        // A replica that reloaded just before then signs with the old key for up to a
        // reload interval more; its last such token lives an access TTL (and leeway).
        let lagging = load(active - chrono::Duration::seconds(1)).await;
        assert_eq!(lagging.signing_kid, old_kid);
        let last_old_token_expires = active
            + chrono_duration(schedule.reload_interval)
            + chrono_duration(settings.access_ttl + settings.leeway);

        let before = load(last_old_token_expires - chrono::Duration::seconds(1)).await;
        assert!(
            kids(&before).contains(&old_kid),
            "retired while its tokens lived"
        );
        let long_after = load(last_old_token_expires + chrono::Duration::minutes(5)).await;
        assert!(!kids(&long_after).contains(&old_kid), "never retired");
    }
}
