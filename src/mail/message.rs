//! What the letters say.

use std::time::Duration;

use lettre::{
    Message,
    message::{
        Body, Mailbox,
        header::{ContentTransferEncoding, ContentType},
    },
};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use super::MailSettings;
use crate::{auth::Letter, store::CodeKind};

/// A link with `{code}` where the code goes, e.g. `https://app.example.com/reset?code={code}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTemplate(String);

impl LinkTemplate {
    const PLACEHOLDER: &'static str = "{code}";
    /// Far inside the 998 bytes an email line may hold.
    const MAX_CHARS: usize = 900;

    pub fn new(template: &str) -> Result<Self, String> {
        if !template.contains(Self::PLACEHOLDER) {
            return Err(format!("expected a link containing {}", Self::PLACEHOLDER));
        }
        if template
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("expected a link without spaces or control characters".to_owned());
        }
        if template.chars().count() > Self::MAX_CHARS {
            return Err(format!("expected at most {} characters", Self::MAX_CHARS));
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
    let valid_for = in_words(letter.valid_for);
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
    // Relays add one when it is missing, but spam filters count its absence against us.
    let message_id = format!("<{}@{}>", Uuid::now_v7(), settings.from.email.domain());
    Ok(Message::builder()
        .message_id(Some(message_id))
        .from(settings.from.clone())
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(plain(body))?)
}

/// The body as it is when it is ASCII with lines an email may carry (7bit), so the link
/// stays whole and readable in any mailbox; otherwise as lettre encodes it. (lettre would
/// quote-print any line of 76 characters or more, and a link often is one.)
fn plain(body: String) -> Body {
    let seven_bit = body.is_ascii()
        && !body.contains('\r')
        && body
            .lines()
            .all(|line| line.len() < 998 && !line.contains('\0'));
    if seven_bit {
        let crlf = body.replace('\n', "\r\n");
        return Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit);
    }
    Body::new(body)
}

/// "30 minutes", "24 hours", "1 hour": how long a code works, as a reader says it.
fn in_words(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (count, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

/// The line that hands over the code: as a link when a template is configured.
fn action(link: Option<&LinkTemplate>, code: &str, what: &str) -> String {
    match link {
        Some(link) => format!("To {what}, open this link:\n{}", link.fill(code)),
        None => format!("To {what}, use this code:\n{code}"),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::{auth::Caller, mail::smtp_transport};

    fn settings(reset_link: Option<&str>) -> MailSettings {
        MailSettings {
            transport: smtp_transport("smtp://127.0.0.1:25?tls=none").unwrap(),
            from: "authd <no-reply@example.com>".parse().unwrap(),
            reset_link: reset_link.map(|link| LinkTemplate::new(link).unwrap()),
            verify_link: None,
            queue: 1,
            attempts: 1,
            backoff: Duration::from_secs(1),
        }
    }

    fn letter(to: &str) -> Letter {
        Letter {
            kind: CodeKind::PasswordReset,
            to: to.to_owned(),
            code: SecretString::from("x".repeat(43)),
            valid_for: Duration::from_secs(1800),
            user_id: Uuid::nil(),
            caller: Caller::default(),
        }
    }

    #[test]
    fn a_long_link_travels_whole_in_a_7bit_body() {
        let link = format!(
            "https://accounts.example.com/{}/reset?code={{code}}",
            "p".repeat(60)
        );
        let message = compose(&letter("ada@example.com"), &settings(Some(&link))).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Content-Transfer-Encoding: 7bit"), "{raw}");
        assert!(
            raw.contains(&link.replace("{code}", &"x".repeat(43))),
            "{raw}"
        );
        assert!(raw.contains("within 30 minutes"), "{raw}");
        assert!(raw.contains("Message-ID: <"), "{raw}");
        assert!(raw.contains("@example.com>"), "{raw}");
    }

    #[test]
    fn lifetimes_read_as_words() {
        let words = |seconds| in_words(Duration::from_secs(seconds));
        assert_eq!(words(1800), "30 minutes");
        assert_eq!(words(86_400), "24 hours");
        assert_eq!(words(3600), "1 hour");
        assert_eq!(words(90), "90 seconds");
    }

    #[test]
    fn without_a_link_the_code_itself_is_sent() {
        let message = compose(&letter("ada@example.com"), &settings(None)).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(
            raw.contains(&format!("use this code:\r\n{}", "x".repeat(43))),
            "{raw}"
        );
    }

    #[test]
    fn link_templates_must_hold_the_code_and_nothing_unsafe() {
        for bad in [
            "https://app.example.com/reset",
            "https://app.example.com/reset?code={code} x",
            "https://app.example.com/reset?code={code}\r\nBcc: x@example.com",
        ] {
            assert!(LinkTemplate::new(bad).is_err(), "{bad:?}");
        }
    }
}
