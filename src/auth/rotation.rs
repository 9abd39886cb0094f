//! Where signing keys come from, and their rotation: a key is generated and published
//! ahead of its turn, signs for a rotation period, and is retired once no token it signed
//! can still be live. Every replica applies the same schedule to what the database holds,
//! so all of them agree on the signer without talking to each other.
//!
//! Changing the algorithm is a rotation too: the first key of the new algorithm is
//! published ahead of its turn like any other, the old algorithm's key signs until then,
//! and it verifies until the tokens it signed have expired. Every key verifies only
//! tokens of its own algorithm. Replicas agree on the signer only when they are given the
//! same algorithm.

use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::{
    encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
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
        let names = SigningAlgorithm::ALL.map(SigningAlgorithm::as_str);
        let mut live = keys
            .live_keys(&names)
            .await
            .context("loading signing keys")?;
        let schedule = Schedule {
            algorithm: name,
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
            // RSA key generation takes tens of milliseconds: off the async workers.
            let algorithm = settings.algorithm;
            let key = tokio::task::spawn_blocking(move || generate_key(algorithm, now))
                .await
                .context("generating a signing key")??;
            keys.insert_key(&sealer.sealed(&key)?)
                .await
                .context("storing a new signing key")?;
            tracing::info!(kid = %key.kid, algorithm = name, sealed = sealer.is_sealing(), "published a new signing key");
            live = keys
                .live_keys(&names)
                .await
                .context("loading signing keys")?;
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

/// The rotation schedule at one moment, applied to the live keys (oldest first, of
/// every algorithm).
struct Schedule {
    /// The configured algorithm: new keys are of it.
    algorithm: &'static str,
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

    fn is_active(&self, key: &KeyRecord) -> bool {
        self.activation(key) <= self.now
    }

    fn is_ours(&self, key: &KeyRecord) -> bool {
        key.algorithm == self.algorithm
    }

    /// The index of the key that signs: the configured algorithm's key activated last;
    /// until one is active (the algorithm was just changed), the key activated last of
    /// any algorithm; before any is active, the first key (a fresh database's first key
    /// signs at once).
    fn signer(&self, keys: &[KeyRecord]) -> Option<usize> {
        if keys.is_empty() {
            return None;
        }
        let ours = keys
            .iter()
            .rposition(|k| self.is_ours(k) && self.is_active(k));
        let any = || keys.iter().rposition(|k| self.is_active(k));
        Some(ours.or_else(any).unwrap_or(0))
    }

    /// Whether a new key is due: none of the configured algorithm is waiting for its
    /// turn, and the last of them to activate ends its rotation period within the lead
    /// (or there is none).
    fn due(&self, keys: &[KeyRecord]) -> bool {
        let ours = || keys.iter().filter(|k| self.is_ours(k));
        let pending = ours().any(|k| !self.is_active(k));
        let ending = ours()
            .rfind(|k| self.is_active(k))
            .is_none_or(|signer| self.activation(signer) + self.rotation - self.lead <= self.now);
        !pending && ending
    }

    /// The keys superseded more than the overlap ago: a key stops signing once a newer key
    /// of the configured algorithm is active (the first such is its successor), and its
    /// last tokens expire within the overlap after that. (Not "the next key made": with
    /// two algorithms that may be one that never took over, such as after an algorithm
    /// change reverted before its key's turn.)
    fn retired(&self, keys: &[KeyRecord]) -> Vec<String> {
        keys.iter()
            .enumerate()
            .filter(|(i, _)| {
                keys[i + 1..]
                    .iter()
                    .find(|newer| self.is_ours(newer) && self.is_active(newer))
                    .is_some_and(|successor| self.activation(successor) + self.overlap <= self.now)
            })
            .map(|(_, key)| key.kid.clone())
            .collect()
    }
}

/// A fresh key for `algorithm`, with a random kid, in the forms the signer takes.
pub(super) fn generate_key(
    algorithm: SigningAlgorithm,
    now: DateTime<Utc>,
) -> anyhow::Result<KeyRecord> {
    let failed = || format!("generating an {} key", algorithm.as_str());
    let (private_key, public_key) = match algorithm {
        SigningAlgorithm::EdDsa => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .ok()
                .with_context(failed)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).with_context(failed)?;
            let public = pair.public_key().as_ref().to_vec();
            (pkcs8.as_ref().to_vec(), Some(public))
        }
        SigningAlgorithm::Es256 => {
            let signing = &ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &SystemRandom::new())
                .ok()
                .with_context(failed)?;
            let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).with_context(failed)?;
            let public: PublicKeyX509Der<'_> = pair.public_key().as_der().with_context(failed)?;
            (pkcs8.as_ref().to_vec(), Some(public.as_ref().to_vec()))
        }
        SigningAlgorithm::Rs256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).with_context(failed)?;
            let pkcs8: Pkcs8V1Der<'_> = pair.as_der().with_context(failed)?;
            // The signer takes the PKCS#1 key the PKCS#8 document wraps.
            let pkcs1 = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", failed()))?
                .private_key
                .to_vec();
            let public: PublicKeyX509Der<'_> = pair.public_key().as_der().with_context(failed)?;
            (pkcs1, Some(public.as_ref().to_vec()))
        }
        // 256 bits, as RFC 7518 3.2 asks of HS256 keys.
        SigningAlgorithm::Hs256 => (random_bytes::<32>()?.to_vec(), None),
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
        async fn live_keys(
            &self,
            algorithms: &[&str],
        ) -> crate::store::StoreResult<Vec<KeyRecord>> {
            let keys = self.0.lock().unwrap();
            let mut live: Vec<KeyRecord> = keys
                .iter()
                .filter(|(key, retired)| algorithms.contains(&key.algorithm.as_str()) && !retired)
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
            ring.public_keys()
                .iter()
                .map(|k| k.kid().to_owned())
                .collect()
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

    impl MemoryKeys {
        /// The keyring a replica configured with `settings` loads from these keys at `now`.
        async fn load(&self, settings: &TokenSettings, now: DateTime<Utc>) -> Keyring {
            let sealer = KeySealer::new(None).unwrap();
            Keyring::load(self, settings, &sealer, now).await.unwrap()
        }
    }

    /// The settings of an EdDSA and of an ES256 replica, and their rotation schedule.
    fn eddsa_and_es256() -> (TokenSettings, TokenSettings, RotationSchedule) {
        let eddsa = crate::auth::tokens::tests::settings(SigningAlgorithm::EdDsa);
        let es256 = crate::auth::tokens::tests::settings(SigningAlgorithm::Es256);
        let KeySource::Rotating(schedule) = eddsa.keys.clone() else {
            unreachable!("rotating keys")
        };
        (eddsa, es256, schedule)
    }

    #[tokio::test]
    async fn changing_the_algorithm_is_a_rotation_that_keeps_old_tokens_valid() {
        let (eddsa, es256, schedule) = eddsa_and_es256();
        let keys = MemoryKeys::default();
        let load = async |settings: &TokenSettings, now| keys.load(settings, now).await;
        let alg_of = |ring: &Keyring, now| {
            let token = ring
                .issue(Uuid::now_v7(), Uuid::now_v7(), "a@example.com", "user", now)
                .unwrap();
            let header = jsonwebtoken::decode_header(token.expose_secret()).unwrap();
            (header.alg, token.expose_secret().to_owned())
        };
        let t0 = Utc::now();
        let before = load(&eddsa, t0).await;
        let (alg, old_token) = alg_of(&before, t0);
        assert_eq!(alg, jsonwebtoken::Algorithm::EdDSA);

        // Restarted with ES256: the new key is published, the EdDSA key signs until its
        // turn, so that every replica verifies ES256 tokens before any is issued.
        let switched = t0 + chrono::Duration::minutes(1);
        let published = load(&es256, switched).await;
        assert_eq!(published.public_keys().len(), 2);
        assert_eq!(
            alg_of(&published, switched).0,
            jsonwebtoken::Algorithm::EdDSA
        );
        let active = switched + chrono_duration(schedule.reload_interval * 2);
        let after = load(&es256, active).await;
        let (alg, new_token) = alg_of(&after, active);
        assert_eq!(alg, jsonwebtoken::Algorithm::ES256);
        // Tokens of both algorithms verify, the old until it expires.
        assert!(matches!(
            after.verify(&old_token, active),
            crate::auth::Verdict::Valid(_)
        ));
        assert!(matches!(
            after.verify(&new_token, active),
            crate::auth::Verdict::Valid(_)
        ));
        // Once no EdDSA token can be live, its key is retired.
        let overlap = chrono_duration(eddsa.access_ttl + eddsa.leeway + schedule.reload_interval);
        let later = load(&es256, active + overlap + chrono::Duration::minutes(5)).await;
        let algs: Vec<_> = later
            .public_keys()
            .iter()
            .map(|k| k.jwk().common.key_algorithm)
            .collect();
        assert_eq!(algs, [Some(jsonwebtoken::jwk::KeyAlgorithm::ES256)]);
    }

    #[tokio::test]
    async fn an_algorithm_change_reverted_before_its_turn_retires_nothing_in_use() {
        let (eddsa, es256, schedule) = eddsa_and_es256();
        let keys = MemoryKeys::default();
        let load = async |settings: &TokenSettings, now| keys.load(settings, now).await;
        let t0 = Utc::now();
        let first = load(&eddsa, t0).await;
        let first_kid = first.signing_kid.clone();
        // ES256 is published, and the change reverted before the ES256 key's turn.
        load(&es256, t0 + chrono::Duration::minutes(1)).await;
        let reverted = load(&eddsa, t0 + chrono::Duration::minutes(2)).await;
        assert_eq!(reverted.signing_kid, first_kid);
        // A rotation period on, the next EdDSA key takes over; the first one, which signed
        // until then, must verify for the whole overlap after that.
        let lead = chrono_duration(schedule.reload_interval * 2);
        let next_active = t0 + chrono_duration(schedule.rotation) + lead;
        load(&eddsa, t0 + chrono_duration(schedule.rotation)).await;
        let switched = load(&eddsa, next_active).await;
        assert_ne!(switched.signing_kid, first_kid);
        let live = |ring: &Keyring| -> Vec<String> {
            ring.public_keys()
                .iter()
                .map(|k| k.kid().to_owned())
                .collect()
        };
        assert!(
            live(&switched).contains(&first_kid),
            "retired while signing"
        );
        let tokens_expired = next_active
            + chrono_duration(eddsa.access_ttl + eddsa.leeway + schedule.reload_interval);
        let before = load(&eddsa, tokens_expired - chrono::Duration::seconds(1)).await;
        assert!(
            live(&before).contains(&first_kid),
            "retired while its tokens lived"
        );
        let after = load(&eddsa, tokens_expired + chrono::Duration::minutes(5)).await;
        assert_eq!(
            live(&after),
            std::slice::from_ref(&switched.signing_kid),
            "old keys never retired"
        );
    }
}
