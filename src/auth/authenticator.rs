//! The [`Authenticator`]: what every `auth.v1.AuthService` use case works with, and the
//! steps they share. The use cases themselves live one file each beside this one
//! (`signup`, `refresh`, `logout`, `introspection`).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{
    AuthError, Clock, Keyring, PasswordHasher, PasswordPolicy, PublicJwk, RefreshKey, Revocations,
    User,
    audit::{AuditEvent, AuditKind, AuditOutcome, Auditor, Caller},
    chrono_duration,
    codes::CodePolicy,
    mail::Mailer,
    paging::PageTokens,
    refresh_token::{NewRefreshToken, new_refresh_token},
};
use crate::store::{
    AuditRecord, AuditStore, CodeStore, NewSession, SessionRecord, SessionStore, ThrottleRule,
    ThrottleStore, UserStore,
};
use crate::sync;

/// A session's tokens, as handed to the client.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    /// Refresh-token lifetime in seconds.
    pub refresh_expires_in: i64,
}

/// A user and fresh tokens: what Register, Login and Refresh return.
#[derive(Debug)]
pub struct Authenticated {
    pub user: User,
    pub tokens: TokenPair,
}

/// The stores the use cases work on.
#[derive(Debug)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub throttle: Arc<dyn ThrottleStore>,
    pub audit: Arc<dyn AuditStore>,
    pub codes: Arc<dyn CodeStore>,
}

/// One-time codes by email: their rules, and the mailer (`None`: delivery is off, and the
/// calls that send mail answer FAILED_PRECONDITION).
#[derive(Debug)]
pub struct AccountMail {
    pub policy: CodePolicy,
    pub mailer: Option<Arc<dyn Mailer>>,
}

/// Password-reset requests being issued in the background at once; beyond, a request is
/// dropped (and logged), so a flood cannot grow memory.
const BACKGROUND_ISSUES: usize = 256;

/// How accounts are admitted: the password hash, the rules for new passwords, the login
/// throttle, and the role self-registered users get.
#[derive(Debug)]
pub struct Credentials {
    pub hasher: PasswordHasher,
    pub policy: PasswordPolicy,
    pub throttle: ThrottleRule,
    pub default_role: String,
}

/// The keys tokens are made with.
#[derive(Debug)]
pub struct TokenKeys {
    pub keyring: Keyring,
    pub refresh_key: RefreshKey,
}

/// How long sessions and their refresh tokens live.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// A refresh token unused this long stops working.
    pub refresh_ttl: Duration,
    /// A session ends this long after it started, however often it is refreshed.
    pub max_age: Duration,
    /// How long a just-rotated refresh token still gets its successor back.
    pub reuse_grace: Duration,
}

impl SessionPolicy {
    /// When a session ends however often it is refreshed.
    pub(super) fn end(&self, session: &SessionRecord) -> DateTime<Utc> {
        session.created_at + chrono_duration(self.max_age)
    }

    /// When a new session's first refresh token expires.
    pub(super) fn first_expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono_duration(self.refresh_ttl.min(self.max_age))
    }

    /// When a refresh token issued at `now` expires.
    pub(super) fn refresh_expiry(
        &self,
        session: &SessionRecord,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        (now + chrono_duration(self.refresh_ttl)).min(self.end(session))
    }
}

/// The use cases of `auth.v1.AuthService`.
#[derive(Debug)]
pub struct Authenticator {
    pub(super) users: Arc<dyn UserStore>,
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) throttle: Arc<dyn ThrottleStore>,
    pub(super) codes: Arc<dyn CodeStore>,
    pub(super) auditor: Auditor,
    pub(super) credentials: Credentials,
    /// Swapped whole when the key set changes (rotation); read on every validation.
    pub(super) keyring: RwLock<Arc<Keyring>>,
    pub(super) refresh_key: RefreshKey,
    pub(super) session_policy: SessionPolicy,
    pub(super) revocations: Arc<Revocations>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) code_policy: CodePolicy,
    pub(super) mailer: Option<Arc<dyn Mailer>>,
    /// Slots for work a call leaves to the background (see `reset`).
    pub(super) background: Arc<Semaphore>,
}

/// What the server's own metrics read at a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Vitals {
    pub hashes_in_flight: usize,
    pub verified_cache_hits: u64,
    pub verified_cache_misses: u64,
    pub signing_key_age: Duration,
    /// `None` before the first poll.
    pub revocation_sync_age: Option<Duration>,
}

impl Authenticator {
    /// The hash pool's load, the verified-token cache's use, and how old the signing key
    /// and the revocation view are.
    pub fn vitals(&self) -> Vitals {
        let now = self.clock.now();
        let age = |then: DateTime<Utc>| (now - then).to_std().unwrap_or_default();
        let keyring = crate::sync::read(&self.keyring);
        let (hits, misses) = keyring.verified_hits_and_misses();
        Vitals {
            hashes_in_flight: self.credentials.hasher.in_flight(),
            verified_cache_hits: hits,
            verified_cache_misses: misses,
            signing_key_age: age(keyring.signing_created_at()),
            revocation_sync_age: self.revocations.synced_at().map(age),
        }
    }

    pub fn new(
        stores: Stores,
        credentials: Credentials,
        keys: TokenKeys,
        session_policy: SessionPolicy,
        mail: AccountMail,
        revocations: Arc<Revocations>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users: stores.users,
            sessions: stores.sessions,
            throttle: stores.throttle,
            codes: stores.codes,
            auditor: Auditor::new(stores.audit),
            credentials,
            keyring: RwLock::new(Arc::new(keys.keyring)),
            refresh_key: keys.refresh_key,
            session_policy,
            revocations,
            clock,
            code_policy: mail.policy,
            mailer: mail.mailer,
            background: Arc::new(Semaphore::new(BACKGROUND_ISSUES)),
        }
    }

    /// The page tokens of the administrative listings.
    pub fn page_tokens(&self) -> Result<PageTokens, AuthError> {
        let key = self.refresh_key.derive("authd page tokens v1")?;
        Ok(PageTokens::new(key))
    }

    /// The public keys for GetJwks.
    pub fn public_keys(&self) -> Vec<PublicJwk> {
        self.keyring().public_keys().to_vec()
    }

    /// Installs a reloaded key set (after a rotation or retirement).
    pub fn replace_keyring(&self, mut keyring: Keyring) {
        let mut current = sync::write(&self.keyring);
        keyring.keep_verified_of(&current);
        *current = Arc::new(keyring);
    }

    pub(super) fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&sync::read(&self.keyring))
    }

    /// An event to store with the change it describes.
    pub(super) fn audit_entry(
        &self,
        caller: &Caller,
        (kind, outcome): (AuditKind, AuditOutcome),
        (user_id, session_id): (Option<Uuid>, Option<Uuid>),
        now: DateTime<Utc>,
    ) -> AuditRecord {
        let event = AuditEvent {
            kind,
            outcome,
            user_id,
            session_id,
        };
        self.auditor.entry(caller, event, now)
    }

    /// Stores an event that comes with no change of its own, stamped when it is stored.
    pub(super) async fn audit(
        &self,
        caller: &Caller,
        (kind, outcome): (AuditKind, AuditOutcome),
        (user_id, session_id): (Option<Uuid>, Option<Uuid>),
    ) {
        let event = AuditEvent {
            kind,
            outcome,
            user_id,
            session_id,
        };
        self.auditor.record(caller, event, self.clock.now()).await;
    }

    /// A new session for `user_id`, started by `caller` at `now`, and its first refresh
    /// token.
    pub(super) fn new_session(
        &self,
        user_id: Uuid,
        caller: &Caller,
        now: DateTime<Utc>,
    ) -> Result<(SecretString, NewSession), AuthError> {
        let NewRefreshToken { token, hash } = new_refresh_token()?;
        let session = NewSession {
            id: Uuid::now_v7(),
            user_id,
            refresh_hash: hash,
            created_at: now,
            expires_at: self.session_policy.first_expiry(now),
            user_agent: caller.user_agent.clone(),
            peer: caller.ip(),
        };
        Ok((token, session))
    }

    /// How every successful Register, Login and Refresh ends: the event its transaction
    /// stored is logged, and the user gets a new access token beside the session's
    /// refresh token.
    pub(super) fn authenticated(
        &self,
        audit: Option<&AuditRecord>,
        user: User,
        session_id: Uuid,
        (refresh_token, refresh_expires_at): (SecretString, DateTime<Utc>),
        now: DateTime<Utc>,
    ) -> Result<Authenticated, AuthError> {
        if let Some(audit) = audit {
            self.auditor.log(audit);
        }
        let keyring = self.keyring();
        let access_token = keyring.issue(user.id, session_id, &user.email, &user.role, now)?;
        let tokens = TokenPair {
            access_token,
            refresh_token,
            expires_in: keyring.access_ttl_secs(),
            refresh_expires_in: (refresh_expires_at - now).num_seconds(),
        };
        Ok(Authenticated { user, tokens })
    }
}
