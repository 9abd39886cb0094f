//! The domain's side of email: what is sent, and the port it goes through. The SMTP
//! delivery itself (queue, retries, the audit of each delivery) is `crate::mail`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use uuid::Uuid;

use super::Caller;
use crate::store::CodeKind;

/// A one-time code to deliver by email.
#[derive(Debug)]
pub struct Letter {
    pub kind: CodeKind,
    /// The address, as stored.
    pub to: String,
    pub code: SecretString,
    /// How long the code works.
    pub valid_for: Duration,
    pub user_id: Uuid,
    /// Who asked for it, for the audit of the delivery.
    pub caller: Caller,
}

/// Where letters are posted. Posting never fails and never waits for a mail server:
/// delivery happens off the request path, and a failure is logged and audited there,
/// never reported to the caller (it would tell whether an account exists).
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug {
    async fn post(&self, letter: Letter);
}
