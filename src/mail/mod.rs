//! Email delivery over SMTP: the [`auth::Mailer`](crate::auth::Mailer) the domain posts
//! one-time codes to.
//!
//! Posting puts the letter on a bounded queue and returns at once; [`Delivery`] takes
//! letters off it, a few at a time, and sends each with retries and exponential backoff.
//! A dead or slow mail server therefore never delays a call, and never grows memory past
//! the queue: a letter posted to a full queue is dropped. Every letter ends in one audit
//! event (`mail_delivery`: sent, gave up, or dropped) and a log line, except those still
//! queued or in flight at shutdown, which are counted in one log line; none holds the
//! code.

mod message;
mod transport;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor, message::Mailbox};
use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinSet,
};

pub use self::{message::LinkTemplate, transport::smtp_transport};
use crate::auth::{AuditEvent, AuditKind, AuditOutcome, Auditor, Clock, Letter, Mailer};

/// Letters sent at once.
const CONCURRENT_SENDS: usize = 4;

/// How mail is sent.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Mailbox,
    /// The password-reset link, `{code}` replaced; `None`: the message carries the code.
    pub reset_link: Option<LinkTemplate>,
    pub verify_link: Option<LinkTemplate>,
    /// Letters waiting to be sent, at most.
    pub queue: usize,
    /// Tries per letter before it is given up.
    pub attempts: u32,
    /// The wait after the first failed try; it doubles after each.
    pub backoff: Duration,
}

/// The mailer the domain posts to, and the delivery loop that empties its queue (run it
/// with [`Delivery::run`]).
pub fn mailer(
    settings: MailSettings,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
) -> (Arc<SmtpMailer>, Delivery) {
    let (queue, letters) = mpsc::channel(settings.queue.max(1));
    let postman = Arc::new(Postman {
        settings,
        auditor: auditor.clone(),
        clock: Arc::clone(&clock),
    });
    let mailer = Arc::new(SmtpMailer {
        queue,
        auditor,
        clock,
    });
    (mailer, Delivery { letters, postman })
}

/// Queues letters for [`Delivery`].
#[derive(Debug)]
pub struct SmtpMailer {
    queue: mpsc::Sender<Letter>,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn post(&self, letter: Letter) {
        let Err(refused) = self.queue.try_send(letter) else {
            return;
        };
        let letter = match refused {
            mpsc::error::TrySendError::Full(letter) | mpsc::error::TrySendError::Closed(letter) => {
                letter
            }
        };
        tracing::warn!(
            user_id = %letter.user_id,
            kind = letter.kind.as_str(),
            "email dropped: the delivery queue is full"
        );
        audit(&self.auditor, &*self.clock, &letter, AuditOutcome::Dropped).await;
    }
}

/// The loop that sends queued letters.
#[derive(Debug)]
pub struct Delivery {
    letters: mpsc::Receiver<Letter>,
    postman: Arc<Postman>,
}

impl Delivery {
    /// Sends letters until `stop` turns true; what is still queued or being sent then is
    /// given up (and logged): the codes stay valid, and the user can ask again.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONCURRENT_SENDS));
        let mut sending = JoinSet::new();
        loop {
            let letter = tokio::select! {
                letter = self.letters.recv() => letter,
                _ = stop.changed() => None,
            };
            let Some(letter) = letter else { break };
            // Waiting here for a slot is what bounds the work: the queue fills meanwhile.
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot,
                _ = stop.changed() => break,
            };
            let Ok(slot) = slot else { break };
            let postman = Arc::clone(&self.postman);
            sending.spawn(async move {
                postman.deliver(letter).await;
                drop(slot);
            });
            while sending.try_join_next().is_some() {}
        }
        let unsent = self.letters.len() + sending.len();
        if unsent > 0 {
            tracing::warn!(unsent, "shutting down: emails not sent");
        }
        sending.shutdown().await;
    }
}

/// Sends one letter, with retries.
#[derive(Debug)]
struct Postman {
    settings: MailSettings,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
}

impl Postman {
    async fn deliver(&self, letter: Letter) {
        let settings = &self.settings;
        let message = match message::compose(&letter, settings) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(user_id = %letter.user_id, error = %err, "email not sent: cannot compose it");
                audit(&self.auditor, &*self.clock, &letter, AuditOutcome::GaveUp).await;
                return;
            }
        };
        let mut wait = settings.backoff;
        for attempt in 1..=settings.attempts {
            match settings.transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(user_id = %letter.user_id, kind = letter.kind.as_str(), attempt, "email sent");
                    audit(&self.auditor, &*self.clock, &letter, AuditOutcome::Sent).await;
                    return;
                }
                // A 5xx answer will not change by asking again.
                Err(err) if err.is_permanent() => {
                    tracing::error!(user_id = %letter.user_id, error = %err, "email refused by the mail server");
                    break;
                }
                Err(err) => {
                    tracing::warn!(user_id = %letter.user_id, attempt, error = %err, "email not sent, will retry");
                    if attempt < settings.attempts {
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        tracing::error!(user_id = %letter.user_id, kind = letter.kind.as_str(), "email given up");
        audit(&self.auditor, &*self.clock, &letter, AuditOutcome::GaveUp).await;
    }
}

async fn audit(auditor: &Auditor, clock: &dyn Clock, letter: &Letter, outcome: AuditOutcome) {
    let event = AuditEvent {
        kind: AuditKind::MailDelivery,
        outcome,
        user_id: Some(letter.user_id),
        session_id: None,
    };
    auditor.record(&letter.caller, event, clock.now()).await;
}
