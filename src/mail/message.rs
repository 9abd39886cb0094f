//! What the letters say.

use std::time::Duration;

use lettre::{
    Message,
    message::{Mailbox, header::ContentType},
};
use secrecy::ExposeSecret as _;

use super::MailSettings;
use crate::{auth::Letter, store::CodeKind};

/// A link with `{code}` where the code goes, e.g. `https://app.example.com/reset?code={code}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTemplate(String);

impl LinkTemplate {
    const PLACEHOLDER: &'static str = "{code}";

    pub fn new(template: &str) -> Result<Self, String> {
        if !template.contains(Self::PLACEHOLDER) {
            return Err(format!("expected a link containing {}", Self::PLACEHOLDER));
        }
        if template.chars().any(char::is_whitespace) {
            return Err("expected a link without spaces".to_owned());
        }
        Ok(Self(template.to_owned()))
    }

    /// The link for `code` (url-safe base64, so it goes in as it is).
    fn fill(&self, code: &str) -> String {
        self.0.replace(Self::PLACEHOLDER, code)
    }
}

/// The message for a letter.
pub(super) fn compose(letter: &Letter, settings: &MailSettings) -> anyhow::Result<Message> {
    let to: Mailbox = letter
        .to
        .parse()
        .map_err(|err| anyhow::anyhow!("the address is not deliverable: {err}"))?;
    let code = letter.code.expose_secret();
    let valid_for = humantime::format_duration(Duration::from_secs(letter.valid_for.as_secs()));
    let (subject, body) = match letter.kind {
        CodeKind::PasswordReset => (
            "Reset your password",
            format!(
                "Someone asked to reset the password of the account {address}.\n\n\
                 {action}\n\n\
                 It works once, within {valid_for}. If you did not ask for this, ignore this \
                 message: your password stays as it is.\n",
                address = letter.to,
                action = action(settings.reset_link.as_ref(), code, "choose a new password"),
            ),
        ),
        CodeKind::EmailVerification => (
            "Confirm your email address",
            format!(
                "Please confirm that {address} is your email address.\n\n\
                 {action}\n\n\
                 It works once, within {valid_for}. If you did not ask for this, ignore this \
                 message.\n",
                address = letter.to,
                action = action(settings.verify_link.as_ref(), code, "confirm it"),
            ),
        ),
    };
    Ok(Message::builder()
        .from(settings.from.clone())
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)?)
}

/// The line that hands over the code: as a link when a template is configured.
fn action(link: Option<&LinkTemplate>, code: &str, what: &str) -> String {
    match link {
        Some(link) => format!("To {what}, open this link:\n{}", link.fill(code)),
        None => format!("To {what}, use this code:\n{code}"),
    }
}
