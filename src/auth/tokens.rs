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
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
    },
};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// Ed25519.
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
    /// HMAC-SHA256.
    Hs256,
}

impl SigningAlgorithm {
    pub(super) const ALL: [Self; 4] = [Self::EdDsa, Self::Es256, Self::Rs256, Self::Hs256];

    /// The JOSE name, as stored with each key and written in the `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Hs256 => "HS256",
        }
    }

    /// The algorithm a stored key names.
    pub(super) fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            Self::EdDsa => KeyAlgorithm::EdDSA,
            Self::Es256 => KeyAlgorithm::ES256,
            Self::Rs256 => KeyAlgorithm::RS256,
            Self::Hs256 => KeyAlgorithm::HS256,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
            Self::Hs256 => Algorithm::HS256,
        }
    }

    /// What an opened key record signs with, what verifies its tokens, and its public key
    /// as a JWK (none for HMAC). Tokens are verified with the key built from the JWK
    /// itself, so what GetJwks publishes is exactly what verifies.
    fn keys(self, record: &KeyRecord) -> anyhow::Result<(EncodingKey, DecodingKey, Option<Jwk>)> {
        let private = record.private_key.expose_secret();
        let bad = || {
            format!(
                "signing key {} ({}) is malformed",
                record.kid,
                self.as_str()
            )
        };
        let (encoding, parameters) = match self {
            Self::Hs256 => {
                let (encoding, decoding) = (
                    EncodingKey::from_secret(private),
                    DecodingKey::from_secret(private),
                );
                return Ok((encoding, decoding, None));
            }
            Self::EdDsa => {
                let public = record
                    .public_key
                    .as_deref()
                    .with_context(|| format!("signing key {} has no public key", record.kid))?;
                let parameters = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(public),
                });
                (EncodingKey::from_ed_der(private), parameters)
            }
            // The public parameters are derived from the private key.
            Self::Es256 | Self::Rs256 => {
                let encoding = match self {
                    Self::Es256 => EncodingKey::from_ec_der(private),
                    _ => EncodingKey::from_rsa_der(private),
                };
                let derived = Jwk::from_encoding_key(&encoding, self.jwt()).with_context(bad)?;
                (encoding, derived.algorithm)
            }
        };
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(self.key_algorithm()),
                key_id: Some(record.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: parameters,
        };
        let decoding = DecodingKey::from_jwk(&jwk).with_context(bad)?;
        Ok((encoding, decoding, Some(jwk)))
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

/// A public key as a JWK (RFC 7517, with RFC 7518's members for its type); holds no
/// private parameter: it is built from public parameters only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk(Jwk);

impl PublicJwk {
    pub fn kid(&self) -> &str {
        self.0.common.key_id.as_deref().unwrap_or_default()
    }

    pub fn jwk(&self) -> &Jwk {
        &self.0
    }
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
    /// The signing key's algorithm.
    algorithm: Algorithm,
    pub(super) signing_kid: String,
    signing_key: EncodingKey,
    /// When the signing key was made (rotation is judged by it).
    signing_created_at: DateTime<Utc>,
    /// By kid; each key verifies only tokens of its own algorithm.
    verifying_keys: HashMap<String, VerifyingKey>,
    public_keys: Vec<PublicJwk>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway: i64,
    /// Tokens already verified; carried over from keyring to keyring on reload.
    verified: Arc<VerifiedCache>,
}

/// A key that verifies tokens, and the checks tokens of its algorithm get.
struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Arc<Validation>,
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
    /// The keyring of `records` (opened, of any algorithm), signing with `signer_kid`.
    pub(super) fn from_records(
        records: &[KeyRecord],
        signer_kid: &str,
        settings: &TokenSettings,
    ) -> anyhow::Result<Self> {
        // aws-lc-rs, also where a build unifies in jsonwebtoken's other backend (the load
        // generator compares them, and installs its choice first).
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let mut signer = None;
        let mut verifying_keys = HashMap::new();
        let mut public_keys = Vec::new();
        let mut validations: HashMap<Algorithm, Arc<Validation>> = HashMap::new();
        for record in records {
            let algorithm = SigningAlgorithm::named(&record.algorithm)
                .with_context(|| format!("signing key {} has an unknown algorithm", record.kid))?;
            let (encoding, decoding, jwk) = algorithm.keys(record)?;
            if record.kid == signer_kid {
                signer = Some((algorithm.jwt(), encoding, record.created_at));
            }
            public_keys.extend(jwk.map(PublicJwk));
            let validation = validations
                .entry(algorithm.jwt())
                .or_insert_with(|| Arc::new(validation(algorithm, settings)));
            let key = VerifyingKey {
                algorithm: algorithm.jwt(),
                key: decoding,
                validation: Arc::clone(validation),
            };
            verifying_keys.insert(record.kid.clone(), key);
        }
        let (algorithm, signing_key, signing_created_at) = signer.context("no signing key")?;

        Ok(Self {
            algorithm,
            signing_kid: signer_kid.to_owned(),
            signing_key,
            signing_created_at,
            verifying_keys,
            public_keys,
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
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return None;
        }
        let kid = header.kid?;
        // The algorithm is pinned by the key the kid names, never taken from the header.
        let key = self.verifying_keys.get(&kid)?;
        if header.alg != key.algorithm {
            return None;
        }
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.key, &key.validation)
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

/// The checks of tokens signed with `algorithm` (all but expiry, see `unexpired`).
fn validation(algorithm: SigningAlgorithm, settings: &TokenSettings) -> Validation {
    let mut validation = Validation::new(algorithm.jwt());
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&[&settings.audience]);
    // Expiry is checked after everything else, so that only a token that is ours in
    // every other respect is reported as EXPIRED rather than INVALID.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation
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
        for algorithm in SigningAlgorithm::ALL {
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
    fn jwks_lists_public_keys_only_with_the_members_of_their_type() {
        let members = |algorithm| {
            let ring = keyring(algorithm);
            let [jwk] = ring.public_keys() else {
                panic!("one key expected")
            };
            assert_eq!(jwk.kid(), ring.signing_kid);
            serde_json::to_value(jwk.jwk()).unwrap()
        };
        let decoded = |value: &serde_json::Value| URL_SAFE_NO_PAD.decode(value.as_str().unwrap());
        let ed = members(SigningAlgorithm::EdDsa);
        assert_eq!(
            (ed["kty"].as_str(), ed["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        assert_eq!(decoded(&ed["x"]).unwrap().len(), 32);
        let ec = members(SigningAlgorithm::Es256);
        assert_eq!(
            (ec["kty"].as_str(), ec["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(decoded(&ec["x"]).unwrap().len(), 32);
        assert_eq!(decoded(&ec["y"]).unwrap().len(), 32);
        let rsa = members(SigningAlgorithm::Rs256);
        assert_eq!(rsa["kty"].as_str(), Some("RSA"));
        assert_eq!(decoded(&rsa["n"]).unwrap().len(), 256);
        assert_eq!(decoded(&rsa["e"]).unwrap(), [1, 0, 1]);
        for (jwk, alg) in [(ed, "EdDSA"), (ec, "ES256"), (rsa, "RS256")] {
            assert_eq!(
                (jwk["alg"].as_str(), jwk["use"].as_str()),
                (Some(alg), Some("sig"))
            );
            // No private member of any key type (RFC 7518 6.2.2, 6.3.2, RFC 8037 2).
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(jwk.get(private).is_none(), "{alg} JWK has {private}");
            }
        }
        assert!(keyring(SigningAlgorithm::Hs256).public_keys().is_empty());
    }

    #[test]
    fn an_hs256_token_keyed_with_a_published_public_key_is_invalid() {
        for algorithm in [
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Es256,
            SigningAlgorithm::Rs256,
        ] {
            let ring = keyring(algorithm);
            let now = Utc::now();
            let public = ring.public_keys()[0].clone();
            let json = serde_json::to_value(public.jwk()).unwrap();
            let member = json
                .get("x")
                .or_else(|| json.get("n"))
                .and_then(|v| v.as_str())
                .unwrap()
                .to_owned();
            let mut header = Header::new(Algorithm::HS256);
            header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
            header.kid = Some(public.kid().to_owned());
            let claims = AccessClaims {
                iss: "authd-test".into(),
                aud: "authd-test-aud".into(),
                sub: Uuid::now_v7().to_string(),
                sid: Uuid::now_v7().to_string(),
                jti: Uuid::now_v7().to_string(),
                iat: now.timestamp(),
                exp: now.timestamp() + 900,
                email: "a@example.com".into(),
                role: "admin".into(),
            };
            // The attacker's guesses at what a confused verifier would key HMAC with.
            for secret in [json.to_string().into_bytes(), member.clone().into_bytes()] {
                let key = EncodingKey::from_secret(&secret);
                let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                assert_eq!(ring.verify(&forged, now), Verdict::Invalid, "{algorithm:?}");
            }
        }
    }

    #[test]
    fn a_key_verifies_only_tokens_of_its_own_algorithm() {
        let now = Utc::now();
        let ed = crate::auth::rotation::generate_key(SigningAlgorithm::EdDsa, now).unwrap();
        let ec = crate::auth::rotation::generate_key(SigningAlgorithm::Es256, now).unwrap();
        let kids = [ed.kid.clone(), ec.kid.clone()];
        let records = [ed, ec];
        let settings = settings(SigningAlgorithm::Es256);
        let signs_ed = Keyring::from_records(&records, &kids[0], &settings).unwrap();
        let signs_ec = Keyring::from_records(&records, &kids[1], &settings).unwrap();
        // Both algorithms' tokens verify while both keys are live (an algorithm change).
        for token in [issue(&signs_ed, now), issue(&signs_ec, now)] {
            assert!(matches!(signs_ec.verify(&token, now), Verdict::Valid(_)));
        }
        // A header naming the other algorithm than its key's is refused outright.
        let token = issue(&signs_ed, now);
        let (_, rest) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD
            .encode(format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, kids[0]).as_bytes());
        assert_eq!(
            signs_ec.verify(&format!("{forged}.{rest}"), now),
            Verdict::Invalid
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let ring = keyring(SigningAlgorithm::Hs256);
        for token in ["", "a", "a.b.c", "....", &"x".repeat(10_000)] {
            assert_eq!(ring.verify(token, Utc::now()), Verdict::Invalid);
        }
    }
}
