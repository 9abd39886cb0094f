//! Access tokens (RFC 9068 JWTs) and the keyring that signs and verifies them.
//!
//! Verification is strict (RFC 8725): the algorithm is pinned to the one we issue, the
//! header must say `typ: at+jwt` (so no other kind of JWT passes as an access token), the
//! `kid` must name one of our keys (looked up in memory only: no path, no SQL), and
//! iss, aud, sub, sid, jti, iat and exp must all be present and right. jsonwebtoken checks
//! only `exp` with 60 s of leeway by default; here every check is set explicitly and the
//! leeway comes from config.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use uuid::Uuid;

use super::{KeySealer, chrono_duration, random_bytes, verified_cache::VerifiedCache};
use crate::{
    config::{JwtAlgorithm, TokenConfig},
    store::{KeyRecord, KeyStore},
};

/// The JOSE `typ` of access tokens (RFC 9068 2.1).
const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// RFC 7518 3.2: HS256 keys of at least 256 bits.
const MIN_HMAC_SECRET_BYTES: usize = 32;
/// Anything longer is not one of ours; refuse before parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub email: String,
    pub role: String,
}

/// A public key as a JWK (RFC 7517); holds no private parameter by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    pub kid: String,
    pub kty: &'static str,
    pub alg: &'static str,
    pub crv: &'static str,
    /// The public key, base64url without padding.
    pub x: String,
}

/// What a token verification concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by us, every claim right, not expired. Revocation is checked by the caller.
    Valid(Arc<VerifiedToken>),
    /// Signed by us and otherwise right, but past `exp`.
    Expired,
    /// Anything else.
    Invalid,
}

/// A verified access token's claims, with the ids parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The kid of the key that signed it.
    pub key_id: String,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub email: String,
    pub role: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// The signing key and every key that may still verify a live token.
pub struct Keyring {
    algorithm: Algorithm,
    signing_kid: String,
    signing_key: EncodingKey,
    verifying_keys: HashMap<String, DecodingKey>,
    public_keys: Vec<PublicJwk>,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway: i64,
    /// Tokens already verified; carried over from keyring to keyring on reload.
    verified: Arc<VerifiedCache>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("algorithm", &self.algorithm)
            .field("signing_kid", &self.signing_kid)
            .field(
                "verifying_kids",
                &self.verifying_keys.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
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
        config: &TokenConfig,
        sealer: &KeySealer,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        if let Some(secret) = &config.jwt_secret {
            return Self::from_secret(secret, config);
        }
        let name = config.algorithm.as_str();
        let lead = chrono_duration(config.key_reload_interval * 2);
        let rotation = chrono_duration(config.key_rotation);
        // A superseded key verifies until the tokens it signed last have expired. Replicas
        // switch to a new signer at their first reload after it activates (within a reload
        // interval, and the clock skew replicas may have), and may sign with the old key
        // until then.
        let overlap = chrono_duration(
            config.access_ttl
                + config.clock_leeway
                + config.key_reload_interval
                + super::CLOCK_SKEW_ALLOWANCE,
        );
        let activation = |key: &KeyRecord| key.created_at + lead;

        let mut live = keys.live_keys(name).await.context("loading signing keys")?;
        let signer = live.iter().rposition(|k| activation(k) <= now).unwrap_or(0);
        let pending = live.iter().any(|k| activation(k) > now);
        let due = live
            .get(signer)
            .is_none_or(|k| activation(k) + rotation - lead <= now);
        if !pending && due {
            let key = generate_key(config.algorithm, now)?;
            keys.insert_key(&sealed(&key, sealer)?)
                .await
                .context("storing a new signing key")?;
            tracing::info!(kid = %key.kid, algorithm = name, sealed = sealer.is_sealing(), "published a new signing key");
            live = keys.live_keys(name).await.context("loading signing keys")?;
        }
        let signer = live.iter().rposition(|k| activation(k) <= now).unwrap_or(0);
        let mut retired = Vec::new();
        for (older, newer) in live.iter().zip(live.iter().skip(1)).take(signer) {
            if activation(newer) + overlap <= now {
                keys.retire_key(&older.kid, now)
                    .await
                    .context("retiring a signing key")?;
                tracing::info!(kid = %older.kid, "retired a signing key");
                retired.push(older.kid.clone());
            }
        }
        live.retain(|k| !retired.contains(&k.kid));
        let signer_kid = live
            .iter()
            .rfind(|k| activation(k) <= now)
            .or(live.first())
            .map(|k| k.kid.clone())
            .context("no signing key")?;
        let opened = live
            .iter()
            .map(|record| opened(record, sealer))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::from_records(&opened, &signer_kid, config)
    }

    /// HS256 with an operator-supplied secret, shared by every replica through config.
    fn from_secret(secret: &SecretString, config: &TokenConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.algorithm == JwtAlgorithm::Hs256,
            "AUTHD_JWT_SECRET: only used with AUTHD_JWT_ALGORITHM=HS256"
        );
        let secret = secret.expose_secret().as_bytes();
        // RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
        anyhow::ensure!(
            secret.len() >= MIN_HMAC_SECRET_BYTES,
            "AUTHD_JWT_SECRET: expected at least {MIN_HMAC_SECRET_BYTES} bytes, got {}",
            secret.len()
        );
        // The kid names the secret without revealing it: a truncated hash of a 256-bit
        // secret gives nothing away.
        let digest = sha2::Sha256::digest(secret);
        let record = KeyRecord {
            kid: format!("hs256-{}", URL_SAFE_NO_PAD.encode(&digest[..9])),
            algorithm: JwtAlgorithm::Hs256.as_str().to_owned(),
            private_key: SecretBox::new(Box::new(secret.to_vec())),
            public_key: None,
            created_at: Utc::now(),
        };
        let kid = record.kid.clone();
        Self::from_records(&[record], &kid, config)
    }

    fn from_records(
        records: &[KeyRecord],
        signer_kid: &str,
        config: &TokenConfig,
    ) -> anyhow::Result<Self> {
        let algorithm = match config.algorithm {
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
            JwtAlgorithm::Hs256 => Algorithm::HS256,
        };
        let signer = records
            .iter()
            .find(|r| r.kid == signer_kid)
            .context("no signing key")?;
        let signing_key = match config.algorithm {
            JwtAlgorithm::EdDsa => EncodingKey::from_ed_der(signer.private_key.expose_secret()),
            JwtAlgorithm::Hs256 => EncodingKey::from_secret(signer.private_key.expose_secret()),
        };
        let mut verifying_keys = HashMap::new();
        let mut public_keys = Vec::new();
        for record in records {
            if let Some(public) = &record.public_key {
                public_keys.push(PublicJwk {
                    kid: record.kid.clone(),
                    kty: "OKP",
                    alg: "EdDSA",
                    crv: "Ed25519",
                    x: URL_SAFE_NO_PAD.encode(public),
                });
            }
            let key = match config.algorithm {
                JwtAlgorithm::EdDsa => DecodingKey::from_ed_der(
                    record
                        .public_key
                        .as_deref()
                        .with_context(|| format!("signing key {} has no public key", record.kid))?,
                ),
                JwtAlgorithm::Hs256 => DecodingKey::from_secret(record.private_key.expose_secret()),
            };
            verifying_keys.insert(record.kid.clone(), key);
        }

        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        // Expiry is checked after everything else, so that only a token that is ours in
        // every other respect is reported as EXPIRED rather than INVALID.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;

        Ok(Self {
            algorithm,
            signing_kid: signer.kid.clone(),
            signing_key,
            verifying_keys,
            public_keys,
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: config.access_ttl,
            leeway: i64::try_from(config.clock_leeway.as_secs()).unwrap_or(i64::MAX),
            verified: Arc::new(VerifiedCache::new(config.validate_cache_entries)),
        })
    }

    /// The public keys that verify live tokens, for GetJwks. Empty for HMAC.
    pub fn public_keys(&self) -> &[PublicJwk] {
        &self.public_keys
    }

    /// The access-token lifetime in seconds.
    pub fn access_ttl_secs(&self) -> i64 {
        i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX)
    }

    /// Signs an access token for a session.
    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        email: &str,
        role: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<SecretString> {
        let iat = now.timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            jti: Uuid::now_v7().to_string(),
            iat,
            exp: iat.saturating_add(self.access_ttl_secs()),
            email: email.to_owned(),
            role: role.to_owned(),
        };
        let mut header = Header::new(self.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.signing_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .context("signing an access token")?;
        Ok(SecretString::from(token))
    }

    /// Takes over the tokens `previous` verified, so that a key reload does not make every
    /// live token pay for a signature check again. Entries of keys that are gone are
    /// refused at their next hit.
    pub fn keep_verified_of(&mut self, previous: &Keyring) {
        self.verified = Arc::clone(&previous.verified);
    }

    /// Verifies an access token entirely in memory: a token verified before is only
    /// checked for what can change since (its key still ours, expiry).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Verdict {
        let now = now.timestamp();
        if let Some(hit) = self.verified.get(token)
            && self.verifying_keys.contains_key(&hit.key_id)
        {
            return self.unexpired(hit, now);
        }
        let Some(verified) = self.verify_signature_and_claims(token, now) else {
            return Verdict::Invalid;
        };
        self.verified.insert(token, &verified);
        self.unexpired(verified, now)
    }

    fn unexpired(&self, token: Arc<VerifiedToken>, now: i64) -> Verdict {
        if now >= token.expires_at.saturating_add(self.leeway) {
            Verdict::Expired
        } else {
            Verdict::Valid(token)
        }
    }

    /// The full check of everything but expiry.
    fn verify_signature_and_claims(&self, token: &str, now: i64) -> Option<Arc<VerifiedToken>> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != self.algorithm || header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return None;
        }
        let kid = header.kid?;
        let key = self.verifying_keys.get(&kid)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .ok()?
            .claims;
        let user_id = Uuid::parse_str(&claims.sub).ok()?;
        let session_id = Uuid::parse_str(&claims.sid).ok()?;
        if claims.iat > now.saturating_add(self.leeway) || claims.exp <= claims.iat {
            return None;
        }
        let verified = VerifiedToken {
            key_id: kid,
            user_id,
            session_id,
            email: claims.email,
            role: claims.role,
            issued_at: claims.iat,
            expires_at: claims.exp,
        };
        Some(Arc::new(verified))
    }
}

/// The record as stored: its private key sealed (when a master key is configured).
pub(super) fn sealed(record: &KeyRecord, sealer: &KeySealer) -> anyhow::Result<KeyRecord> {
    let stored = sealer.seal(&record.kid, record.private_key.expose_secret())?;
    Ok(record.with_private_key(stored))
}

/// The record as used: its private key opened.
pub(super) fn opened(record: &KeyRecord, sealer: &KeySealer) -> anyhow::Result<KeyRecord> {
    let key = sealer.open(&record.kid, record.private_key.expose_secret())?;
    Ok(record.with_private_key(key.expose_secret().clone()))
}

/// A fresh key for `algorithm`, with a random kid.
fn generate_key(algorithm: JwtAlgorithm, now: DateTime<Utc>) -> anyhow::Result<KeyRecord> {
    let secret: [u8; 32] = random_bytes()?;
    let (private_key, public_key) = match algorithm {
        JwtAlgorithm::EdDsa => {
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
        JwtAlgorithm::Hs256 => (secret.to_vec(), None),
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

    fn config(algorithm: JwtAlgorithm) -> TokenConfig {
        TokenConfig {
            issuer: "authd-test".into(),
            audience: "authd-test-aud".into(),
            algorithm,
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
            refresh_reuse_grace: Duration::from_secs(10),
            session_max_age: Duration::from_secs(86_400),
            jwt_secret: None,
            key_rotation: Duration::from_secs(30 * 86_400),
            key_reload_interval: Duration::from_secs(60),
            master_key: None,
            master_key_file: None,
            clock_leeway: Duration::from_secs(5),
            validate_cache_entries: 100,
        }
    }

    fn keyring(algorithm: JwtAlgorithm) -> Keyring {
        let key = generate_key(algorithm, Utc::now()).unwrap();
        let kid = key.kid.clone();
        Keyring::from_records(&[key], &kid, &config(algorithm)).unwrap()
    }

    fn issue(ring: &Keyring, now: DateTime<Utc>) -> String {
        ring.issue(Uuid::now_v7(), Uuid::now_v7(), "a@example.com", "user", now)
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        for algorithm in [JwtAlgorithm::EdDsa, JwtAlgorithm::Hs256] {
            let ring = keyring(algorithm);
            let now = Utc::now();
            let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
            let token = ring
                .issue(user, session, "a@example.com", "admin", now)
                .unwrap();
            let Verdict::Valid(v) = ring.verify(token.expose_secret(), now) else {
                panic!("token did not verify with {algorithm:?}");
            };
            assert_eq!((v.user_id, v.session_id), (user, session));
            assert_eq!(
                (v.email.as_str(), v.role.as_str()),
                ("a@example.com", "admin")
            );
            assert_eq!(v.expires_at - v.issued_at, 900);
        }
    }

    #[test]
    fn header_carries_typ_and_kid() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let header = jsonwebtoken::decode_header(issue(&ring, Utc::now())).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(ring.signing_kid.as_str()));
        assert_eq!(header.alg, Algorithm::EdDSA);
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let issued = Utc::now();
        let token = issue(&ring, issued);
        let just_inside = issued + chrono::Duration::seconds(900 + 4);
        let past = issued + chrono::Duration::seconds(900 + 5);
        assert!(matches!(
            ring.verify(&token, just_inside),
            Verdict::Valid(_)
        ));
        assert_eq!(ring.verify(&token, past), Verdict::Expired);
    }

    #[test]
    fn a_verified_token_is_remembered_and_served_from_memory() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let now = Utc::now();
        let token = issue(&ring, now);
        let Verdict::Valid(first) = ring.verify(&token, now) else {
            panic!("token did not verify");
        };
        let Verdict::Valid(again) = ring.verify(&token, now) else {
            panic!("remembered token did not verify");
        };
        // The same claims object: the second call did not parse or verify again.
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn a_remembered_token_whose_key_is_gone_is_invalid() {
        let old = keyring(JwtAlgorithm::EdDsa);
        let now = Utc::now();
        let token = issue(&old, now);
        assert!(matches!(old.verify(&token, now), Verdict::Valid(_)));
        // A reload whose key set no longer holds the token's key keeps the memory but
        // must not honour it.
        let mut reloaded = keyring(JwtAlgorithm::EdDsa);
        reloaded.keep_verified_of(&old);
        assert_eq!(reloaded.verify(&token, now), Verdict::Invalid);
    }

    #[test]
    fn only_verified_tokens_are_remembered() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let other = keyring(JwtAlgorithm::EdDsa);
        let now = Utc::now();
        assert_eq!(ring.verify(&issue(&other, now), now), Verdict::Invalid);
        assert_eq!(ring.verify("not.a.token", now), Verdict::Invalid);
        assert_eq!(ring.verified.len(), 0);
        assert!(matches!(
            ring.verify(&issue(&ring, now), now),
            Verdict::Valid(_)
        ));
        assert_eq!(ring.verified.len(), 1);
    }

    #[test]
    fn token_issued_in_the_future_is_invalid() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let token = issue(&ring, Utc::now() + chrono::Duration::seconds(60));
        assert_eq!(ring.verify(&token, Utc::now()), Verdict::Invalid);
    }

    #[test]
    fn another_keyrings_token_is_invalid() {
        let ours = keyring(JwtAlgorithm::EdDsa);
        let theirs = keyring(JwtAlgorithm::EdDsa);
        assert_eq!(
            ours.verify(&issue(&theirs, Utc::now()), Utc::now()),
            Verdict::Invalid
        );
    }

    #[test]
    fn wrong_issuer_or_audience_is_invalid() {
        let key = generate_key(JwtAlgorithm::EdDsa, Utc::now()).unwrap();
        let issuer = Keyring::from_records(
            std::slice::from_ref(&key),
            &key.kid,
            &config(JwtAlgorithm::EdDsa),
        )
        .unwrap();
        let mut other = config(JwtAlgorithm::EdDsa);
        other.audience = "someone-else".into();
        let kid = key.kid.clone();
        let verifier = Keyring::from_records(&[key], &kid, &other).unwrap();
        assert_eq!(
            verifier.verify(&issue(&issuer, Utc::now()), Utc::now()),
            Verdict::Invalid
        );
    }

    #[test]
    fn alg_none_and_wrong_typ_are_invalid() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let token = issue(&ring, Utc::now());
        let (_, rest) = token.split_once('.').unwrap();
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
        assert_eq!(
            ring.verify(&format!("{none}.{rest}"), Utc::now()),
            Verdict::Invalid
        );

        let plain_jwt = URL_SAFE_NO_PAD.encode(
            format!(
                r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
                ring.signing_kid
            )
            .as_bytes(),
        );
        assert_eq!(
            ring.verify(&format!("{plain_jwt}.{rest}"), Utc::now()),
            Verdict::Invalid
        );
    }

    #[test]
    fn a_short_hs256_secret_is_refused_without_echoing_it() {
        let mut config = config(JwtAlgorithm::Hs256);
        let err =
            Keyring::from_secret(&SecretString::from("tooshort-secret"), &config).unwrap_err();
        assert!(err.to_string().contains("AUTHD_JWT_SECRET"), "{err}");
        assert!(!err.to_string().contains("tooshort-secret"));
        config.algorithm = JwtAlgorithm::EdDsa;
        assert!(Keyring::from_secret(&SecretString::from("x".repeat(32)), &config).is_err());
    }

    #[test]
    fn jwks_lists_public_keys_only() {
        let ring = keyring(JwtAlgorithm::EdDsa);
        let [jwk] = ring.public_keys() else {
            panic!("one key expected")
        };
        assert_eq!((jwk.kty, jwk.crv, jwk.alg), ("OKP", "Ed25519", "EdDSA"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&jwk.x).unwrap().len(), 32);
        assert!(keyring(JwtAlgorithm::Hs256).public_keys().is_empty());
    }

    #[test]
    fn garbage_is_invalid() {
        let ring = keyring(JwtAlgorithm::Hs256);
        for token in ["", "a", "a.b.c", "....", &"x".repeat(10_000)] {
            assert_eq!(ring.verify(token, Utc::now()), Verdict::Invalid);
        }
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
        let config = config(JwtAlgorithm::EdDsa);
        let (keys, sealer) = (MemoryKeys::default(), KeySealer::new(None).unwrap());
        let load = async |now| Keyring::load(&keys, &config, &sealer, now).await.unwrap();
        let kids = |ring: &Keyring| -> Vec<String> {
            ring.public_keys().iter().map(|k| k.kid.clone()).collect()
        };
        let t0 = Utc::now();
        let first = load(t0).await;
        let old_kid = first.signing_kid.clone();
        // The next key is published a lead (two reload intervals) ahead of its turn.
        let lead = chrono_duration(config.key_reload_interval * 2);
        let published = t0 + chrono_duration(config.key_rotation);
        let second = load(published).await;
        assert_eq!(kids(&second).len(), 2, "the next key was not published");
        let active = published + lead;
        // A replica that reloaded just before then signs with the old key for up to a
        // reload interval more; its last such token lives an access TTL (and leeway).
        let lagging = load(active - chrono::Duration::seconds(1)).await;
        assert_eq!(lagging.signing_kid, old_kid);
        let last_old_token_expires = active
            + chrono_duration(config.key_reload_interval)
            + chrono_duration(config.access_ttl + config.clock_leeway);

        let before = load(last_old_token_expires - chrono::Duration::seconds(1)).await;
        assert!(
            kids(&before).contains(&old_kid),
            "retired while its tokens lived"
        );
        let long_after = load(last_old_token_expires + chrono::Duration::minutes(5)).await;
        assert!(!kids(&long_after).contains(&old_kid), "never retired");
    }
}
