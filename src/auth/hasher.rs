//! Password hashing with argon2id, off the async workers, on a bounded pool.
//!
//! Stored hashes are argon2 PHC strings, or bcrypt hashes of imported users until their
//! first login replaces them; both are checked on the same pool. An empty stored hash is
//! an account without a password (created or imported without one): nothing matches it.
//!
//! A hash costs tens of milliseconds of CPU and 19 MiB of memory, so it must neither block a
//! tokio worker nor pile up without bound. A fixed set of hash threads (one per core by
//! default) caps the hashes computed at once; `admitted` caps those running plus those
//! waiting for a thread. When the queue is full the caller gets [`AuthError::HashingBusy`]
//! at once, so overload costs a quick RESOURCE_EXHAUSTED instead of memory and
//! ever-growing latency.
//!
//! The hash threads run in the background scheduling class (SCHED_IDLE on Linux): when
//! logins saturate the pool, the async workers still get the CPU the moment they need it,
//! so ValidateToken and every other RPC keep their latency, and logins take what is left.
//! Under a load that leaves no CPU idle, logins slow down and the queue bound refuses the
//! excess; the cheap RPCs do not.

use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context as _;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Semaphore, oneshot};
use tracing::Span;

use super::{AuthError, BelowFloor, NewPassword, Password, random_bytes};

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane. Configured values below it
/// stop start-up.
const MIN_MEMORY_KIB: u32 = 19_456;
const MIN_ITERATIONS: u32 = 2;
const MIN_PARALLELISM: u32 = 1;

/// An argon2id cost at or above OWASP's minimum: nothing weaker can be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

/// Which part of a [`HashCost`] is below its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CostBelowFloor {
    #[error("argon2 memory: {0}")]
    Memory(BelowFloor),
    #[error("argon2 iterations: {0}")]
    Iterations(BelowFloor),
    #[error("argon2 parallelism: {0}")]
    Parallelism(BelowFloor),
}

impl HashCost {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, CostBelowFloor> {
        Ok(Self {
            memory_kib: BelowFloor::check(memory_kib, MIN_MEMORY_KIB)
                .map_err(CostBelowFloor::Memory)?,
            iterations: BelowFloor::check(iterations, MIN_ITERATIONS)
                .map_err(CostBelowFloor::Iterations)?,
            parallelism: BelowFloor::check(parallelism, MIN_PARALLELISM)
                .map_err(CostBelowFloor::Parallelism)?,
        })
    }
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The bounded argon2id pool. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// Feeds the hash threads; they exit when the last clone of this is dropped.
    jobs: mpsc::Sender<Job>,
    workers: usize,
    /// Workers plus the queue: how many hashes may be admitted at once.
    capacity: usize,
    admitted: Arc<Semaphore>,
    /// Verified against when the email is unknown, so Login takes the same time either way.
    dummy_hash: Arc<SecretString>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("workers", &self.workers)
            .field("admitted_permits", &self.admitted.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A pool of `workers` hash threads with room for `queue` waiting requests, hashing
    /// with the given argon2id cost. Computes the dummy hash once, so call it at start-up.
    pub fn new(cost: HashCost, workers: usize, queue: usize) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut scratch = Scratch::for_params(&params);
        let dummy_hash = hash_with(&argon2, &random_dummy_password()?, &mut scratch)?;
        let workers = workers.max(1);
        Ok(Self {
            argon2,
            jobs: spawn_hash_threads(workers, &params)?,
            workers,
            capacity: workers + queue,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// Hashes running or waiting for a thread.
    pub fn in_flight(&self) -> usize {
        self.capacity
            .saturating_sub(self.admitted.available_permits())
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

    /// Judges a new password's strength, then hashes it, in one job off the async
    /// workers: the estimate can cost more CPU than the hash on crafted input. A weak
    /// password is [`AuthError::InvalidInput`].
    pub async fn hash_new(&self, new: &NewPassword) -> Result<SecretString, AuthError> {
        let argon2 = self.argon2.clone();
        let NewPassword {
            password,
            policy,
            user_inputs,
        } = new.clone();
        self.run(move |scratch| {
            let inputs: Vec<&str> = user_inputs.iter().map(String::as_str).collect();
            let secret = password.secret();
            policy
                .check_strength(secret.expose_secret(), &inputs)
                .map_err(|violation| AuthError::InvalidInput(vec![violation]))?;
            hash_with(&argon2, secret, scratch).map_err(AuthError::Unexpected)
        })
        .await?
    }

    /// Hashes a password into a PHC string (a password already in use, re-hashed at a
    /// higher cost).
    pub async fn hash(&self, password: &Password) -> Result<SecretString, AuthError> {
        let argon2 = self.argon2.clone();
        let password = password.secret().clone();
        self.run(move |scratch| hash_with(&argon2, &password, scratch))
            .await?
            .map_err(AuthError::Unexpected)
    }

    /// Checks a password against a stored hash, or against the dummy hash when there is
    /// no user or no password, so every path costs at least one argon2 run. False for
    /// `None` and for an account without a password.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&SecretString>,
    ) -> Result<bool, AuthError> {
        let stored = stored.filter(|hash| !hash.expose_secret().is_empty());
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).clone();
        let password = password.secret().clone();
        let configured = self.argon2.clone();
        let dummy = Arc::clone(&self.dummy_hash);
        let matches = self
            .run(move |scratch| {
                if is_bcrypt(stored.expose_secret()) {
                    // bcrypt reads at most 72 bytes. The dummy argon2 after it keeps a wrong
                    // password for an imported account from answering faster than one for
                    // an unknown email.
                    let matches = bcrypt::verify(password.expose_secret(), stored.expose_secret())
                        .map_err(|e| anyhow::anyhow!("stored bcrypt hash: {e}"));
                    let _ = verify_with(&password, &dummy, scratch);
                    return matches;
                }
                let matches = verify_with(&password, &stored, scratch);
                pad_to_configured_cost(&configured, &stored, scratch);
                matches
            })
            .await?
            .map_err(AuthError::Unexpected)?;
        Ok(known && matches)
    }

    /// Runs `job` on a hash thread once one is free, carrying the caller's span. A job
    /// whose caller went away before a thread picked it up is skipped.
    async fn run<T, F>(&self, job: F) -> Result<T, AuthError>
    where
        F: FnOnce(&mut Scratch) -> T + Send + 'static,
        T: Send + 'static,
    {
        // Held until the job is done or skipped, even if the caller stops waiting.
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| AuthError::HashingBusy)?;
        let (reply, answer) = oneshot::channel();
        let caller = Span::current();
        // Two spans, so that a trace tells a queue from a slow hash.
        let waiting = tracing::debug_span!("password_hash.wait");
        self.jobs
            .send(Box::new(move |scratch: &mut Scratch| {
                drop(waiting);
                if reply.is_closed() {
                    return;
                }
                let result = tracing::debug_span!(parent: &caller, "password_hash")
                    .in_scope(|| job(scratch));
                // Free the place before answering, so that the caller's next request
                // finds it free.
                drop(admitted);
                // The caller may have gone since; nothing is lost if so.
                let _ = reply.send(result);
            }))
            .map_err(|_| AuthError::Unexpected(anyhow::anyhow!("hash threads stopped")))?;
        answer
            .await
            .map_err(|_| AuthError::Unexpected(anyhow::anyhow!("hash job dropped")))
    }
}

/// Starts `count` hash threads at lowered priority, each with its own argon2 memory,
/// fed by the returned sender.
fn spawn_hash_threads(count: usize, params: &Params) -> anyhow::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..count {
        let queue = Arc::clone(&queue);
        let params = params.clone();
        std::thread::Builder::new()
            .name(format!("authd-argon2-{i}"))
            .spawn(move || {
                lower_this_thread_priority();
                let mut scratch = Scratch::for_params(&params);
                loop {
                    // Only the wait for a job is under the lock, never the hash.
                    let next = crate::sync::lock(&queue).recv();
                    match next {
                        Ok(job) => job(&mut scratch),
                        Err(mpsc::RecvError) => return,
                    }
                }
            })
            .context("starting a hash thread")?;
    }
    Ok(jobs)
}

/// Puts the calling thread in Linux's SCHED_IDLE class: whenever an ordinary thread (an
/// async worker) becomes runnable, the kernel preempts a hash at once for it. Elsewhere,
/// the lowest priority the platform offers.
fn lower_this_thread_priority() {
    #[cfg(target_os = "linux")]
    let result = {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
    };
    #[cfg(not(target_os = "linux"))]
    let result = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    if let Err(err) = result {
        tracing::warn!(?err, "could not lower the priority of a hash thread");
    }
}

/// argon2's working memory (19 MiB at the default cost), allocated once per hash thread
/// and reused by every hash it computes: no allocation, page faults or unmapping per
/// login, and a resident size fixed from start-up (workers x memory cost).
pub(super) struct Scratch(Vec<Block>);

impl Scratch {
    fn for_params(params: &Params) -> Self {
        Self(vec![Block::default(); params.block_count()])
    }

    /// Runs argon2 into `out`. A stored hash costlier than configured (the cost was lowered
    /// since) gets memory of its own for this one call, so the reused memory stays bounded.
    fn compute(
        &mut self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> argon2::Result<()> {
        let needed = argon2.params().block_count();
        match self.0.get_mut(..needed) {
            Some(blocks) => argon2.hash_password_into_with_memory(password, salt, out, blocks),
            None => argon2.hash_password_into(password, salt, out),
        }
    }
}

/// A new PHC string for `password` with the configured (argon2id) cost and a fresh salt.
fn hash_with(
    argon2: &Argon2<'_>,
    password: &SecretString,
    scratch: &mut Scratch,
) -> anyhow::Result<SecretString> {
    let salt_bytes: [u8; 16] = random_bytes()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let output_len = argon2
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        Ok(scratch.compute(
            argon2,
            password.expose_secret().as_bytes(),
            &salt_bytes,
            out,
        )?)
    })
    .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(SecretString::from(phc.to_string()))
}

/// Whether `password` matches a stored PHC string, computed with the stored algorithm,
/// version and cost (which may be older than the configured ones).
fn verify_with(
    password: &SecretString,
    stored: &SecretString,
    scratch: &mut Scratch,
) -> anyhow::Result<bool> {
    let invalid = |e: argon2::password_hash::Error| {
        anyhow::anyhow!("stored password hash is not a valid argon2 PHC string: {e}")
    };
    let parsed = PasswordHash::new(stored.expose_secret()).map_err(invalid)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(anyhow::anyhow!(
            "stored password hash has no salt or no hash"
        ));
    };
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(invalid)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| invalid(e.into()))?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(invalid)?;
    let argon2 = Argon2::new(algorithm, version, params);
    let mut salt_buffer = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buffer).map_err(invalid)?;
    let computed = Output::init_with(expected.len(), |out| {
        Ok(scratch.compute(&argon2, password.expose_secret().as_bytes(), salt, out)?)
    })
    .map_err(invalid)?;
    // Output compares in constant time.
    Ok(computed == expected)
}

/// After checking a hash stored at a lower cost than configured (the cost was raised since,
/// and this account has not logged in to be upgraded), spends the difference on a hash
/// that is thrown away: an unknown email is checked against a dummy hash at the configured
/// cost, and a wrong password for a dormant account must take as long. argon2's time goes
/// with memory x passes, so the padding is the passes at the configured memory that make
/// up the difference.
fn pad_to_configured_cost(configured: &Argon2<'_>, stored: &SecretString, scratch: &mut Scratch) {
    let Some(stored) = PasswordHash::new(stored.expose_secret())
        .ok()
        .and_then(|hash| Params::try_from(&hash).ok())
    else {
        return;
    };
    let wanted = configured.params();
    let work = |params: &Params| u64::from(params.m_cost()) * u64::from(params.t_cost());
    let missing = work(wanted).saturating_sub(work(&stored));
    let m_cost = u64::from(wanted.m_cost());
    let passes = (missing + m_cost / 2) / m_cost;
    let Ok(passes) = u32::try_from(passes) else {
        return;
    };
    if passes == 0 {
        return;
    }
    let Ok(params) = Params::new(wanted.m_cost(), passes, wanted.p_cost(), None) else {
        return;
    };
    let padding = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    // Its result means nothing; only its time counts.
    let _ = scratch.compute(&padding, b"padding", b"padding-salt-16b", &mut out);
}

/// The bcrypt versions accepted on import: `2a`, `2b` and `2y` all compute the same
/// algorithm (`2x`, crypt_blowfish's marker for its old sign-extension bug, does not).
const BCRYPT_PREFIXES: [&str; 3] = ["$2a$", "$2b$", "$2y$"];

fn is_bcrypt(hash: &str) -> bool {
    BCRYPT_PREFIXES
        .iter()
        .any(|prefix| hash.starts_with(prefix))
}

/// Imported hashes costlier than these are refused: verifying one must not take a hash
/// thread for minutes (bcrypt cost 17 is 32 times cost 12, about 8 s here) or allocate
/// without bound (argon2 memory is allocated per check).
const MAX_IMPORTED_BCRYPT_COST: u32 = 16;
const MAX_IMPORTED_ARGON2_MEMORY_KIB: u32 = 262_144;
const MAX_IMPORTED_ARGON2_ITERATIONS: u32 = 16;
const MAX_IMPORTED_ARGON2_PARALLELISM: u32 = 16;
/// The width of the stored column.
const MAX_STORED_HASH_LEN: usize = 255;

/// Why an imported password hash is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnusableHash {
    #[error("malformed bcrypt hash")]
    MalformedBcrypt,
    #[error("bcrypt cost above 16: the user must reset their password")]
    BcryptTooCostly,
    #[error("malformed argon2 PHC string")]
    MalformedArgon2,
    #[error("argon2 cost above m=262144, t=16, p=16: the user must reset their password")]
    Argon2TooCostly,
    #[error(
        "unsupported password hash: expected bcrypt ($2a$, $2b$, $2y$) or an argon2 PHC string"
    )]
    Unsupported,
}

/// Checks a hash brought from another system: a whole bcrypt hash, or an argon2 PHC
/// string, that this hasher can verify at a bounded cost. A hash that passes never makes
/// a login fail for anything but a wrong password.
pub fn check_importable_hash(hash: &str) -> Result<(), UnusableHash> {
    if is_bcrypt(hash) {
        return check_bcrypt(hash);
    }
    if !hash.starts_with("$argon2") {
        return Err(UnusableHash::Unsupported);
    }
    if hash.len() > MAX_STORED_HASH_LEN {
        return Err(UnusableHash::MalformedArgon2);
    }
    let parsed = PasswordHash::new(hash).map_err(|_| UnusableHash::MalformedArgon2)?;
    let params = Params::try_from(&parsed).map_err(|_| UnusableHash::MalformedArgon2)?;
    let mut salt = [0u8; 64];
    let salt_len = parsed
        .salt
        .and_then(|salt_string| salt_string.decode_b64(&mut salt).ok())
        .map_or(0, <[u8]>::len);
    let usable = Algorithm::try_from(parsed.algorithm).is_ok()
        && salt_len >= argon2::MIN_SALT_LEN
        && parsed.hash.is_some_and(|output| {
            (Output::MIN_LENGTH..=Output::MAX_LENGTH).contains(&output.len())
        })
        && parsed.version.is_none_or(|v| Version::try_from(v).is_ok());
    if !usable {
        return Err(UnusableHash::MalformedArgon2);
    }
    if params.m_cost() > MAX_IMPORTED_ARGON2_MEMORY_KIB
        || params.t_cost() > MAX_IMPORTED_ARGON2_ITERATIONS
        || params.p_cost() > MAX_IMPORTED_ARGON2_PARALLELISM
    {
        return Err(UnusableHash::Argon2TooCostly);
    }
    Ok(())
}

/// A bcrypt hash bcrypt will verify: 60 characters, a cost it accepts, and salt and digest
/// in canonical bcrypt base64 (as `bcrypt::verify` decodes them).
fn check_bcrypt(hash: &str) -> Result<(), UnusableHash> {
    use base64::Engine as _;
    let parts: bcrypt::HashParts = hash.parse().map_err(|_| UnusableHash::MalformedBcrypt)?;
    let (salt, digest) = (hash.get(7..29), hash.get(29..));
    let decodes =
        |field: Option<&str>| field.is_some_and(|field| bcrypt::BASE_64.decode(field).is_ok());
    if !(4..=31).contains(&parts.get_cost()) || !decodes(salt) || !decodes(digest) {
        return Err(UnusableHash::MalformedBcrypt);
    }
    if parts.get_cost() > MAX_IMPORTED_BCRYPT_COST {
        return Err(UnusableHash::BcryptTooCostly);
    }
    Ok(())
}

fn random_dummy_password() -> anyhow::Result<SecretString> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(SecretString::from(hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(s: &str) -> Password {
        Password::submitted(s.to_owned()).unwrap()
    }

    fn hasher(workers: usize, queue: usize, memory_kib: u32) -> PasswordHasher {
        PasswordHasher::new(HashCost::new(memory_kib, 2, 1).unwrap(), workers, queue).unwrap()
    }

    #[test]
    fn parameters_below_the_owasp_minimum_stop_start_up() {
        assert_eq!(
            HashCost::new(8_192, 2, 1),
            Err(CostBelowFloor::Memory(BelowFloor {
                floor: u64::from(MIN_MEMORY_KIB),
                got: 8_192
            }))
        );
        assert!(matches!(
            HashCost::new(19_456, 1, 1),
            Err(CostBelowFloor::Iterations(_))
        ));
        assert!(matches!(
            HashCost::new(19_456, 2, 0),
            Err(CostBelowFloor::Parallelism(_))
        ));
        assert!(HashCost::new(19_456, 2, 1).is_ok());
    }

    #[tokio::test]
    async fn a_hash_weaker_than_configured_needs_a_rehash() {
        let weak = hasher(1, 0, 19_456);
        let strong = hasher(1, 0, 32_768);
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
        let hasher = hasher(1, 1, 19_456);
        let phc = hasher.hash(&password("correct horse")).await.unwrap();
        assert!(
            phc.expose_secret()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC prefix"
        );
    }

    #[tokio::test]
    async fn verify_accepts_the_right_password_only() {
        let hasher = hasher(1, 1, 19_456);
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

    #[test]
    fn phc_strings_interoperate_with_the_argon2_crate() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(19_456, 2, 1, None).unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut scratch = Scratch::for_params(&params);
        let password = SecretString::from("correct horse".to_owned());

        // Ours verifies with the crate's own verifier...
        let ours = hash_with(&reference, &password, &mut scratch).unwrap();
        let parsed = PasswordHash::new(ours.expose_secret()).unwrap();
        assert!(reference.verify_password(b"correct horse", &parsed).is_ok());
        assert!(reference.verify_password(b"wrong horse", &parsed).is_err());

        // ...and a hash the crate made (as stored by earlier versions) verifies with ours,
        // twice on the same reused memory.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = reference
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let theirs = SecretString::from(theirs);
        assert!(verify_with(&password, &theirs, &mut scratch).unwrap());
        let wrong = SecretString::from("wrong horse".to_owned());
        assert!(!verify_with(&wrong, &theirs, &mut scratch).unwrap());
    }

    #[tokio::test]
    async fn a_hash_costlier_than_configured_still_verifies() {
        let weak = hasher(1, 0, 19_456);
        let strong = hasher(1, 0, 32_768);
        let phc = strong.hash(&password("correct horse")).await.unwrap();
        // More memory than the weak pool's threads hold: computed in memory of its own.
        assert!(
            weak.verify(&password("correct horse"), Some(&phc))
                .await
                .unwrap()
        );
        assert!(
            !weak
                .verify(&password("wrong horse"), Some(&phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn verify_without_a_user_is_false_even_for_the_dummy_password() {
        let hasher = hasher(1, 1, 19_456);
        assert!(!hasher.verify(&password("anything"), None).await.unwrap());
    }

    #[tokio::test]
    async fn full_queue_is_refused_at_once() {
        // One worker, no queue: while one hash runs, a second is refused, not queued.
        let hasher = hasher(1, 0, 19_456);
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

    /// `imported password` under bcrypt cost 4, by libxcrypt (Perl's `crypt`).
    const BCRYPT_2B: &str = "$2b$04$BYTNAs6VW7WE1b3E8xPA/umhLwx9TWichoy4LrJAUfmEJSmRdMoPK";

    #[tokio::test]
    async fn bcrypt_hashes_verify_on_the_pool_and_always_want_a_rehash() {
        let hasher = hasher(1, 1, 19_456);
        let stored = SecretString::from(BCRYPT_2B);
        let right = password("imported password 2b 04");
        assert!(hasher.verify(&right, Some(&stored)).await.unwrap());
        assert!(
            !hasher
                .verify(&password("wrong"), Some(&stored))
                .await
                .unwrap()
        );
        assert!(hasher.needs_rehash(&stored));
        // The same hash under the other accepted markers computes the same.
        let as_2y = SecretString::from(BCRYPT_2B.replacen("$2b$", "$2y$", 1));
        assert!(hasher.verify(&right, Some(&as_2y)).await.unwrap());
    }

    #[tokio::test]
    async fn an_account_without_a_password_matches_nothing() {
        let hasher = hasher(1, 1, 19_456);
        let none = SecretString::from(String::new());
        assert!(
            !hasher
                .verify(&password("anything"), Some(&none))
                .await
                .unwrap()
        );
    }

    #[test]
    fn importable_hashes_are_whole_bcrypt_or_argon2_phc_strings() {
        assert_eq!(check_importable_hash(BCRYPT_2B), Ok(()));
        assert_eq!(
            check_importable_hash(&BCRYPT_2B.replacen("$2b$", "$2a$", 1)),
            Ok(())
        );
        assert_eq!(
            check_importable_hash(&BCRYPT_2B[..50]),
            Err(UnusableHash::MalformedBcrypt)
        );
        assert_eq!(
            check_importable_hash(&BCRYPT_2B.replacen("$04$", "$99$", 1)),
            Err(UnusableHash::MalformedBcrypt)
        );
        assert_eq!(
            check_importable_hash(&BCRYPT_2B.replacen("$04$", "$17$", 1)),
            Err(UnusableHash::BcryptTooCostly)
        );
        // Characters outside bcrypt's base64, or non-canonical trailing bits.
        assert_eq!(
            check_importable_hash(&BCRYPT_2B.replacen("BYT", "B!T", 1)),
            Err(UnusableHash::MalformedBcrypt)
        );
        assert_eq!(
            check_importable_hash(&format!("{}L", &BCRYPT_2B[..59])),
            Err(UnusableHash::MalformedBcrypt)
        );
        assert_eq!(
            check_importable_hash(&BCRYPT_2B.replacen("$2b$", "$2x$", 1)),
            Err(UnusableHash::Unsupported)
        );
        let argon2 = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                      YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY";
        assert_eq!(check_importable_hash(argon2), Ok(()));
        assert_eq!(
            check_importable_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA"),
            Err(UnusableHash::MalformedArgon2)
        );
        assert_eq!(
            check_importable_hash("$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$YWJj"),
            Err(UnusableHash::MalformedArgon2)
        );
        // A salt argon2 refuses (under 8 bytes).
        assert_eq!(
            check_importable_hash(
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY"
            ),
            Err(UnusableHash::MalformedArgon2)
        );
        assert_eq!(
            check_importable_hash(
                "$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                 YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY"
            ),
            Err(UnusableHash::Argon2TooCostly)
        );
        for other in [
            "",
            "plaintext",
            "$1$salt$hash",
            "$5$rounds=5000$salt$hash",
            "$pbkdf2$x",
        ] {
            assert_eq!(
                check_importable_hash(other),
                Err(UnusableHash::Unsupported),
                "{other}"
            );
        }
    }
}
