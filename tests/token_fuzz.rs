//! Property tests (a bounded fuzz run in CI) for access-token verification: whatever bytes
//! arrive, verification never panics, and nothing but an untouched token we issued is
//! ever valid.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use authd::{
    auth::{Keyring, Verdict},
    config::{JwtAlgorithm, TokenConfig},
    store::{KeyRecord, KeyStore, StoreResult},
};
use chrono::Utc;
use proptest::prelude::*;
use secrecy::ExposeSecret as _;
use std::sync::Mutex;
use uuid::Uuid;

/// Keys in memory: enough to build a keyring without a database.
#[derive(Debug, Default)]
struct MemoryKeys(Mutex<Vec<KeyRecord>>);

#[async_trait::async_trait]
impl KeyStore for MemoryKeys {
    async fn live_keys(&self, algorithms: &[&str]) -> StoreResult<Vec<KeyRecord>> {
        let keys = self.0.lock().unwrap();
        Ok(keys
            .iter()
            .filter(|k| algorithms.contains(&k.algorithm.as_str()))
            .map(|k| k.with_private_key(k.private_key.expose_secret().clone()))
            .collect())
    }

    async fn retire_key(&self, kid: &str, _now: chrono::DateTime<Utc>) -> StoreResult<()> {
        self.0.lock().unwrap().retain(|k| k.kid != kid);
        Ok(())
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        self.0
            .lock()
            .unwrap()
            .push(key.with_private_key(key.private_key.expose_secret().clone()));
        Ok(())
    }
}

fn keyring(algorithm: JwtAlgorithm) -> Keyring {
    let config = TokenConfig {
        issuer: "authd".into(),
        audience: "authd".into(),
        algorithm,
        access_ttl: Duration::from_secs(900),
        refresh_ttl: Duration::from_secs(3600),
        refresh_reuse_grace: Duration::from_secs(10),
        session_max_age: Duration::from_secs(86_400),
        jwt_secret: None,
        jwt_secret_file: None,
        key_rotation: Duration::from_secs(30 * 86_400),
        key_reload_interval: Duration::from_secs(60),
        master_key: None,
        master_key_file: None,
        clock_leeway: Duration::from_secs(5),
        validate_cache_entries: 100,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sealer = authd::auth::KeySealer::new(None).unwrap();
    runtime
        .block_on(Keyring::load(
            &MemoryKeys::default(),
            &config.settings().unwrap(),
            &sealer,
            Utc::now(),
        ))
        .unwrap()
}

fn issued(ring: &Keyring) -> String {
    ring.issue(
        Uuid::now_v7(),
        Uuid::now_v7(),
        "fuzz@example.com",
        "user",
        Utc::now(),
    )
    .unwrap()
    .expose_secret()
    .to_owned()
}

const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_is_never_valid(input in ".{0,600}") {
        let ring = keyring(JwtAlgorithm::EdDsa);
        prop_assert!(!matches!(ring.verify(&input, Utc::now()), Verdict::Valid(_)));
    }

    #[test]
    fn any_single_character_change_to_a_real_token_is_never_valid(
        position in any::<prop::sample::Index>(),
        replacement in prop::sample::select(B64URL.chars().collect::<Vec<_>>()),
        algorithm in prop::sample::select(vec![JwtAlgorithm::EdDsa, JwtAlgorithm::Hs256]),
    ) {
        let ring = keyring(algorithm);
        let token = issued(&ring);
        let mut chars: Vec<char> = token.chars().collect();
        let at = position.index(chars.len());
        prop_assume!(chars[at] != replacement);
        chars[at] = replacement;
        let forged: String = chars.into_iter().collect();
        prop_assert!(!matches!(ring.verify(&forged, Utc::now()), Verdict::Valid(_)), "{forged}");
    }

    #[test]
    fn tokens_of_another_keyring_are_never_valid(algorithm in prop::sample::select(vec![JwtAlgorithm::EdDsa, JwtAlgorithm::Hs256])) {
        let ours = keyring(algorithm);
        let theirs = keyring(algorithm);
        prop_assert_eq!(ours.verify(&issued(&theirs), Utc::now()), Verdict::Invalid);
    }
}
