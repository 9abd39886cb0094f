//! One-time codes sent by email (password reset, email verification): 256 random bits,
//! url-safe base64, stored only as a SHA-256 (a fast hash is right for full-entropy
//! secrets, as for refresh tokens), single use, expiring, and superseded by a newer code
//! of their kind.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::{AuthError, Authenticator, FieldViolation, chrono_duration, random_bytes, sha256_hex};
use crate::store::{CodeKind, CodeRecord, IssueLimit, NewCode};

const CODE_BYTES: usize = 32;
/// 32 bytes in unpadded base64.
const CODE_LEN: usize = 43;
/// Longer than this is refused as malformed input before anything is looked up.
const CODE_MAX_CHARS: usize = 256;
/// The window of the per-account limit on issued codes.
pub(super) const LIMIT_WINDOW: Duration = Duration::from_secs(3600);

/// How long codes live and how many a user may be sent.
#[derive(Debug, Clone, Copy)]
pub struct CodePolicy {
    pub reset_ttl: Duration,
    pub verify_ttl: Duration,
    /// Codes of one kind sent to one account per hour; requests beyond are answered as
    /// usual and send nothing.
    pub per_hour: u32,
}

impl CodePolicy {
    pub(super) fn ttl(&self, kind: CodeKind) -> Duration {
        match kind {
            CodeKind::PasswordReset => self.reset_ttl,
            CodeKind::EmailVerification => self.verify_ttl,
        }
    }
}

/// A new code of `kind` for `user_id`, issued at `now` and valid for `ttl`: the code to
/// send, and its row.
pub(super) fn new_code(
    user_id: Uuid,
    kind: CodeKind,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<(SecretString, NewCode), AuthError> {
    let code = URL_SAFE_NO_PAD.encode(random_bytes::<CODE_BYTES>()?);
    let record = NewCode {
        id: Uuid::now_v7(),
        user_id,
        kind,
        code_hash: sha256_hex(&code),
        created_at: now,
        expires_at: now + chrono_duration(ttl),
    };
    Ok((SecretString::from(code), record))
}

impl Authenticator {
    /// A new code of `kind` for `user_id`, issued at `now`: the code to send, and its row.
    pub(super) fn new_code(
        &self,
        user_id: Uuid,
        kind: CodeKind,
        now: DateTime<Utc>,
    ) -> Result<(SecretString, NewCode), AuthError> {
        new_code(user_id, kind, self.code_policy.ttl(kind), now)
    }

    /// The per-account cap on codes of one kind: at most the configured number in the last
    /// hour.
    pub(super) fn code_limit(&self, now: DateTime<Utc>) -> IssueLimit {
        IssueLimit {
            max: self.code_policy.per_hour,
            since: now - chrono_duration(LIMIT_WINDOW),
        }
    }

    /// The stored code a presented one names, if it is of `kind`, unspent and unexpired
    /// at `now`; `None` for anything else (malformed, unknown, used, superseded, expired,
    /// of the other kind): the caller gives one answer for all.
    pub(super) async fn redeemable_code(
        &self,
        presented: &str,
        kind: CodeKind,
        now: DateTime<Utc>,
    ) -> Result<Option<CodeRecord>, AuthError> {
        // Pasted from a message, a code may carry the line's whitespace.
        let presented = presented.trim();
        let well_formed = presented.len() == CODE_LEN
            && URL_SAFE_NO_PAD
                .decode(presented)
                .is_ok_and(|bytes| bytes.len() == CODE_BYTES);
        if !well_formed {
            return Ok(None);
        }
        Ok(self
            .codes
            .find_code(&sha256_hex(presented))
            .await?
            .filter(|code| {
                code.kind == kind.as_str() && code.spent_at.is_none() && code.expires_at > now
            }))
    }
}

/// The `code` field: present and of a sane length (what it names is checked later).
pub(super) fn check_code_field(code: &str) -> Result<(), FieldViolation> {
    if code.trim().is_empty() {
        return Err(FieldViolation::new("code", "code is required"));
    }
    if code.chars().count() > CODE_MAX_CHARS {
        return Err(FieldViolation::new(
            "code",
            format!("code must be at most {CODE_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}
