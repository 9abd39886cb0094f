//! The SMTP connection, from AUTHD_SMTP_URL.

use std::time::Duration;

use lettre::{AsyncSmtpTransport, Tokio1Executor};
use url::Url;

/// The longest one SMTP exchange may take before the try counts as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

const EXPECTED: &str =
    "expected smtp://[USER:PASSWORD@]HOST[:PORT][?tls=none] or smtps://[USER:PASSWORD@]HOST[:PORT]";

/// The transport for an SMTP URL as api.md gives it: `smtp://` upgrades with STARTTLS and
/// refuses to go on without it, unless the URL says `?tls=none`; `smtps://` is TLS from
/// the first byte. Certificates are checked against the Mozilla roots. The errors never
/// repeat the URL (it may hold a password).
pub fn smtp_transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut url = Url::parse(url).map_err(|err| format!("{EXPECTED} ({err})"))?;
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match &*key {
            "tls" => tls = Some(value.into_owned()),
            _ => return Err(format!("{EXPECTED}: unknown parameter {key:?}")),
        }
    }
    match (url.scheme(), tls.as_deref()) {
        ("smtp", None | Some("required")) => url.set_query(Some("tls=required")),
        ("smtp", Some("none")) => url.set_query(None),
        ("smtps", None) => {}
        ("smtp" | "smtps", Some(other)) => {
            return Err(format!(
                "{EXPECTED}: tls={other:?} is not one of none, required"
            ));
        }
        (scheme, _) => return Err(format!("{EXPECTED}: the scheme is {scheme:?}")),
    }
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.as_str())
        .map_err(|err| format!("{EXPECTED} ({err})"))?;
    Ok(builder.timeout(Some(EXCHANGE_TIMEOUT)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_follow_the_contract() {
        for good in [
            "smtp://mail.example.com",
            "smtp://mail.example.com:587",
            "smtp://127.0.0.1:2525?tls=none",
            "smtp://user:p%40ss@mail.example.com:587?tls=required",
            "smtps://user:secret@mail.example.com:465",
        ] {
            assert!(smtp_transport(good).is_ok(), "{good}");
        }
        for bad in [
            "mail.example.com",
            "http://mail.example.com",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://mail.example.com?tls=none",
            "smtp://mail.example.com?starttls=no",
        ] {
            assert!(smtp_transport(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_never_repeat_the_password() {
        let err = smtp_transport("smtpx://user:hunter2secret@mail.example.com").unwrap_err();
        assert!(!err.contains("hunter2secret"), "{err}");
    }
}
