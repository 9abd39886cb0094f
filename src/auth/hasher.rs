//! Password hashing with argon2id, off the async workers, on a bounded pool.
//!
//! A hash costs tens of milliseconds of CPU and 19 MiB of memory, so it must neither block a
//! tokio worker nor pile up without bound. `running` caps the hashes computed at once (one
//! per core by default); `admitted` caps those running plus those waiting for a worker.
//! When the queue is full the caller gets [`AuthError::HashingBusy`] at once, so overload
//! costs a quick RESOURCE_EXHAUSTED instead of memory and ever-growing latency.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::SaltString,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::{AuthError, Password, random_bytes};
use crate::config::HashingConfig;

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane. Configured values below it
/// stop start-up.
const MIN_MEMORY_KIB: u32 = 19_456;
const MIN_ITERATIONS: u32 = 2;
const MIN_PARALLELISM: u32 = 1;

/// The bounded argon2id pool. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Verified against when the email is unknown, so Login takes the same time either way.
    dummy_hash: Arc<SecretString>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("running_permits", &self.running.available_permits())
            .field("admitted_permits", &self.admitted.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A pool of `workers` hash threads with room for `queue` waiting requests, hashing
    /// with the given argon2id cost. Computes the dummy hash once, so call it at start-up.
    pub fn new(config: &HashingConfig) -> anyhow::Result<Self> {
        for (value, floor, variable) in [
            (config.memory_kib, MIN_MEMORY_KIB, "AUTHD_ARGON2_MEMORY_KIB"),
            (config.iterations, MIN_ITERATIONS, "AUTHD_ARGON2_ITERATIONS"),
            (
                config.parallelism,
                MIN_PARALLELISM,
                "AUTHD_ARGON2_PARALLELISM",
            ),
        ] {
            anyhow::ensure!(
                value >= floor,
                "{variable}: expected at least {floor}, got {value}"
            );
        }
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, &random_dummy_password()?)?;
        let workers = config.worker_count();
        Ok(Self {
            argon2,
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + config.queue)),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// Whether a stored hash is weaker than what is configured now (another algorithm or
    /// a lower cost), so it should be replaced at this successful login.
    pub fn needs_rehash(&self, stored: &SecretString) -> bool {
        let Ok(hash) = PasswordHash::new(stored.expose_secret()) else {
            return true;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return true;
        };
        let wanted = self.argon2.params();
        hash.algorithm != Algorithm::Argon2id.ident()
            || params.m_cost() < wanted.m_cost()
            || params.t_cost() < wanted.t_cost()
            || params.p_cost() < wanted.p_cost()
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> Result<SecretString, AuthError> {
        let argon2 = self.argon2.clone();
        let password = password.secret().clone();
        self.run(move || hash_with(&argon2, &password))
            .await?
            .map_err(AuthError::Unexpected)
    }

    /// Checks a password against a stored PHC string, or against the dummy hash when
    /// there is no user, so both paths cost one argon2 run. False for `None`.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&SecretString>,
    ) -> Result<bool, AuthError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.dummy_hash).clone();
        let argon2 = self.argon2.clone();
        let password = password.secret().clone();
        let matches = self
            .run(move || {
                let parsed = PasswordHash::new(phc.expose_secret()).map_err(|e| {
                    anyhow::anyhow!("stored password hash is not a PHC string: {e}")
                })?;
                Ok::<_, anyhow::Error>(
                    argon2
                        .verify_password(password.expose_secret().as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await?
            .map_err(AuthError::Unexpected)?;
        Ok(known && matches)
    }

    /// Runs `job` on the blocking pool once a worker is free, carrying the caller's span.
    async fn run<T, F>(&self, job: F) -> Result<T, AuthError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| AuthError::HashingBusy)?;
        let _running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .context("hash pool closed")?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(job))
            .instrument(tracing::debug_span!("argon2"))
            .await
            .context("hash task failed")
            .map_err(AuthError::Unexpected)
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &SecretString) -> anyhow::Result<SecretString> {
    let salt: [u8; 16] = random_bytes()?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(SecretString::from(hash.to_string()))
}

fn random_dummy_password() -> anyhow::Result<SecretString> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(SecretString::from(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(s: &str) -> Password {
        Password::submitted(s.to_owned()).unwrap()
    }

    fn config(workers: usize, queue: usize, memory_kib: u32) -> HashingConfig {
        HashingConfig {
            workers: std::num::NonZeroUsize::new(workers),
            queue,
            memory_kib,
            iterations: 2,
            parallelism: 1,
            password_min_length: 12,
        }
    }

    #[test]
    fn parameters_below_the_owasp_minimum_stop_start_up() {
        let err = PasswordHasher::new(&config(1, 0, 8_192)).unwrap_err();
        assert!(err.to_string().contains("AUTHD_ARGON2_MEMORY_KIB"), "{err}");
    }

    #[tokio::test]
    async fn a_hash_weaker_than_configured_needs_a_rehash() {
        let weak = PasswordHasher::new(&config(1, 0, 19_456)).unwrap();
        let strong = PasswordHasher::new(&config(1, 0, 32_768)).unwrap();
        let phc = weak.hash(&password("correct horse")).await.unwrap();
        assert!(strong.needs_rehash(&phc));
        assert!(!weak.needs_rehash(&phc));
        assert!(
            strong
                .verify(&password("correct horse"), Some(&phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn hash_is_argon2id_phc_with_owasp_parameters() {
        let hasher = PasswordHasher::new(&config(1, 1, 19_456)).unwrap();
        let phc = hasher.hash(&password("correct horse")).await.unwrap();
        assert!(
            phc.expose_secret()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC prefix"
        );
    }

    #[tokio::test]
    async fn verify_accepts_the_right_password_only() {
        let hasher = PasswordHasher::new(&config(1, 1, 19_456)).unwrap();
        let phc = hasher.hash(&password("correct horse")).await.unwrap();
        assert!(
            hasher
                .verify(&password("correct horse"), Some(&phc))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&password("wrong horse"), Some(&phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn verify_without_a_user_is_false_even_for_the_dummy_password() {
        let hasher = PasswordHasher::new(&config(1, 1, 19_456)).unwrap();
        assert!(!hasher.verify(&password("anything"), None).await.unwrap());
    }

    #[tokio::test]
    async fn full_queue_is_refused_at_once() {
        // One worker, no queue: while one hash runs, a second is refused, not queued.
        let hasher = PasswordHasher::new(&config(1, 0, 19_456)).unwrap();
        let busy = hasher.clone();
        let first = tokio::spawn(async move { busy.hash(&password("first password")).await });
        // Wait until the first job holds the only admission permit.
        while hasher.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let second = hasher.hash(&password("second password")).await;
        assert!(matches!(second, Err(AuthError::HashingBusy)));
        assert!(first.await.unwrap().is_ok());
    }
}
