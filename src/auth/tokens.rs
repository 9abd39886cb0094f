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
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{KeySource, verified_cache::VerifiedCache};
use crate::store::KeyRecord;

/// The JOSE `typ` of access tokens (RFC 9068 2.1).
const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Anything longer is not one of ours; refuse before parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// The JWS algorithm access tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EdDsa,
    Hs256,
}

impl SigningAlgorithm {
    /// The JOSE name, as stored with each key and written in the `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Hs256 => Algorithm::HS256,
        }
    }

    /// What an opened key record signs and verifies with.
    fn keys(self, record: &KeyRecord) -> anyhow::Result<(EncodingKey, DecodingKey)> {
        let private = record.private_key.expose_secret();
        Ok(match self {
            Self::EdDsa => {
                let public = record
                    .public_key
                    .as_deref()
                    .with_context(|| format!("signing key {} has no public key", record.kid))?;
                (
                    EncodingKey::from_ed_der(private),
                    DecodingKey::from_ed_der(public),
                )
            }
            Self::Hs256 => (
                EncodingKey::from_secret(private),
                DecodingKey::from_secret(private),
            ),
        })
    }
}

/// How access tokens are made and checked.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The `iss` claim, required on validation.
    pub issuer: String,
    /// The `aud` claim, required on validation.
    pub audience: String,
    pub algorithm: SigningAlgorithm,
    pub access_ttl: Duration,
    /// How far past `exp` (or before `iat`) a token is still taken, for clock differences.
    pub leeway: Duration,
    /// How many verified tokens are remembered.
    pub verified_cache_entries: usize,
    /// Where the signing keys come from.
    pub keys: KeySource,
}

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
    pub(super) signing_kid: String,
    signing_key: EncodingKey,
    /// When the signing key was made (rotation is judged by it).
    signing_created_at: DateTime<Utc>,
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
    /// The keyring of `records` (opened), signing with `signer_kid`.
    pub(super) fn from_records(
        records: &[KeyRecord],
        signer_kid: &str,
        settings: &TokenSettings,
    ) -> anyhow::Result<Self> {
        let algorithm = settings.algorithm;
        let mut signing_key = None;
        let mut signing_created_at = None;
        let mut verifying_keys = HashMap::new();
        let mut public_keys = Vec::new();
        for record in records {
            let (encoding, decoding) = algorithm.keys(record)?;
            if record.kid == signer_kid {
                signing_key = Some(encoding);
                signing_created_at = Some(record.created_at);
            }
            if let Some(public) = &record.public_key {
                public_keys.push(PublicJwk {
                    kid: record.kid.clone(),
                    kty: "OKP",
                    alg: "EdDSA",
                    crv: "Ed25519",
                    x: URL_SAFE_NO_PAD.encode(public),
                });
            }
            verifying_keys.insert(record.kid.clone(), decoding);
        }
        let (signing_key, signing_created_at) = signing_key
            .zip(signing_created_at)
            .context("no signing key")?;

        let mut validation = Validation::new(algorithm.jwt());
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        // Expiry is checked after everything else, so that only a token that is ours in
        // every other respect is reported as EXPIRED rather than INVALID.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;

        Ok(Self {
            algorithm: algorithm.jwt(),
            signing_kid: signer_kid.to_owned(),
            signing_key,
            signing_created_at,
            verifying_keys,
            public_keys,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl: settings.access_ttl,
            leeway: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
            verified: Arc::new(VerifiedCache::new(settings.verified_cache_entries)),
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

    /// When the key that signs now was made.
    pub(super) fn signing_created_at(&self) -> DateTime<Utc> {
        self.signing_created_at
    }

    /// Verified-token lookups that hit and that missed, since start.
    pub(super) fn verified_hits_and_misses(&self) -> (u64, u64) {
        self.verified.hits_and_misses()
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

#[cfg(test)]
pub(in crate::auth) mod tests {
    use super::*;

    pub(in crate::auth) fn settings(algorithm: SigningAlgorithm) -> TokenSettings {
        TokenSettings {
            issuer: "authd-test".into(),
            audience: "authd-test-aud".into(),
            algorithm,
            access_ttl: Duration::from_secs(900),
            leeway: Duration::from_secs(5),
            verified_cache_entries: 100,
            keys: KeySource::Rotating(crate::auth::RotationSchedule {
                rotation: Duration::from_secs(30 * 86_400),
                reload_interval: Duration::from_secs(60),
            }),
        }
    }

    fn keyring(algorithm: SigningAlgorithm) -> Keyring {
        let key = crate::auth::rotation::generate_key(algorithm, Utc::now()).unwrap();
        let kid = key.kid.clone();
        Keyring::from_records(&[key], &kid, &settings(algorithm)).unwrap()
    }

    fn issue(ring: &Keyring, now: DateTime<Utc>) -> String {
        ring.issue(Uuid::now_v7(), Uuid::now_v7(), "a@example.com", "user", now)
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Hs256] {
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
        let ring = keyring(SigningAlgorithm::EdDsa);
        let header = jsonwebtoken::decode_header(issue(&ring, Utc::now())).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(ring.signing_kid.as_str()));
        assert_eq!(header.alg, Algorithm::EdDSA);
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let ring = keyring(SigningAlgorithm::EdDsa);
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
        let ring = keyring(SigningAlgorithm::EdDsa);
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
        let old = keyring(SigningAlgorithm::EdDsa);
        let now = Utc::now();
        let token = issue(&old, now);
        assert!(matches!(old.verify(&token, now), Verdict::Valid(_)));
        // A reload whose key set no longer holds the token's key keeps the memory but
        // must not honour it.
        let mut reloaded = keyring(SigningAlgorithm::EdDsa);
        reloaded.keep_verified_of(&old);
        assert_eq!(reloaded.verify(&token, now), Verdict::Invalid);
    }

    #[test]
    fn only_verified_tokens_are_remembered() {
        let ring = keyring(SigningAlgorithm::EdDsa);
        let other = keyring(SigningAlgorithm::EdDsa);
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
        let ring = keyring(SigningAlgorithm::EdDsa);
        let token = issue(&ring, Utc::now() + chrono::Duration::seconds(60));
        assert_eq!(ring.verify(&token, Utc::now()), Verdict::Invalid);
    }

    #[test]
    fn another_keyrings_token_is_invalid() {
        let ours = keyring(SigningAlgorithm::EdDsa);
        let theirs = keyring(SigningAlgorithm::EdDsa);
        assert_eq!(
            ours.verify(&issue(&theirs, Utc::now()), Utc::now()),
            Verdict::Invalid
        );
    }

    #[test]
    fn wrong_issuer_or_audience_is_invalid() {
        let key = crate::auth::rotation::generate_key(SigningAlgorithm::EdDsa, Utc::now()).unwrap();
        let issuer = Keyring::from_records(
            std::slice::from_ref(&key),
            &key.kid,
            &settings(SigningAlgorithm::EdDsa),
        )
        .unwrap();
        let mut other = settings(SigningAlgorithm::EdDsa);
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
        let ring = keyring(SigningAlgorithm::EdDsa);
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
    fn jwks_lists_public_keys_only() {
        let ring = keyring(SigningAlgorithm::EdDsa);
        let [jwk] = ring.public_keys() else {
            panic!("one key expected")
        };
        assert_eq!((jwk.kty, jwk.crv, jwk.alg), ("OKP", "Ed25519", "EdDSA"));
        assert_eq!(URL_SAFE_NO_PAD.decode(&jwk.x).unwrap().len(), 32);
        assert!(keyring(SigningAlgorithm::Hs256).public_keys().is_empty());
    }

    #[test]
    fn garbage_is_invalid() {
        let ring = keyring(SigningAlgorithm::Hs256);
        for token in ["", "a", "a.b.c", "....", &"x".repeat(10_000)] {
            assert_eq!(ring.verify(token, Utc::now()), Verdict::Invalid);
        }
    }
}
