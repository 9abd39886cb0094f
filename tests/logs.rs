//! No password or token ever reaches a log line or a status message, even at TRACE level
//! with every library's logging on. Its own test binary, because it installs a global
//! subscriber that records everything.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub,
    dead_code
)]

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/mail_sink.rs"]
mod mail_sink;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use tonic::Status;

use authd::proto::auth::v1 as pb;
use helpers::{TestApp, TestDb, with_bearer};
use mail_sink::MailSink;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn with_id<T>(id: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// Everything logged by every test of this binary, as JSON lines, at TRACE.
fn capture() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            let _logs = authd::telemetry::init(
                "trace",
                authd::telemetry::LogFormat::Json,
                false,
                move || writer.clone(),
                None,
            )
            .unwrap();
            capture
        })
        .clone()
}

impl Capture {
    /// The JSON lines logged so far.
    fn lines(&self) -> Vec<serde_json::Value> {
        let logs = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        logs.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_one_access_line_carrying_its_request_id() {
    let capture = capture();
    let app = TestApp::builder(TestDb::fresh().await).spawn().await;
    let mut client = app.client.clone();
    let register = pb::RegisterRequest {
        email: "lines@example.com".to_owned(),
        password: "Sup3r-Secret-Passphrase-42".to_owned(),
        name: "Lines".to_owned(),
    };
    let tokens = client
        .register(with_id("access-register-1", register))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    client
        .get_me(with_id("access-get-me-1", pb::GetMeRequest {}))
        .await
        .unwrap_err();
    let validate = |token: &str| pb::ValidateTokenRequest {
        token: token.to_owned(),
    };
    client
        .validate_token(with_id(
            "access-validate-ok",
            validate(&tokens.access_token),
        ))
        .await
        .unwrap();
    app.stop().await;

    let lines = capture.lines();
    // The request id of the `rpc` span a line was logged in.
    let span_id = |line: &serde_json::Value| {
        let spans = line["spans"].as_array()?;
        std::iter::once(&line["span"])
            .chain(spans)
            .find(|span| span["name"] == "rpc")?["request_id"]
            .as_str()
            .map(str::to_owned)
    };
    let of = |id: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|line| span_id(line).as_deref() == Some(id))
            .cloned()
            .collect()
    };
    let access = |id: &str| -> serde_json::Value {
        let access: Vec<_> = of(id)
            .into_iter()
            .filter(|line| line["target"] == "authd::access")
            .collect();
        assert_eq!(access.len(), 1, "one access line per call: {access:#?}");
        access[0].clone()
    };

    let register = access("access-register-1");
    assert_eq!(register["level"], "INFO");
    assert_eq!(register["service"], "auth.v1.AuthService");
    assert_eq!(register["method"], "Register");
    assert_eq!(register["code"], "OK");
    assert_eq!(register["peer"], "127.0.0.1");
    assert!(register["latency_ms"].as_f64().unwrap() > 0.0, "{register}");
    // The audit line of the call carries its request id too.
    let audit: Vec<_> = of("access-register-1")
        .into_iter()
        .filter(|line| line["target"] == "authd::audit")
        .collect();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["request_id"], "access-register-1");

    // A failed call (a trailers-only answer) is logged with its code.
    let get_me = access("access-get-me-1");
    assert_eq!(get_me["code"], "Unauthenticated");
    assert_eq!(get_me["level"], "INFO");
    // The hot path succeeds at DEBUG, out of an INFO log.
    let validate = access("access-validate-ok");
    assert_eq!(validate["method"], "ValidateToken");
    assert_eq!(validate["code"], "OK");
    assert_eq!(validate["level"], "DEBUG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_reaches_a_log_line_or_a_status_message() {
    let capture = capture();
    let sink = MailSink::start().await;
    let smtp_url = sink.url();
    // No retry grace, so the replayed refresh token below is refused as reuse.
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.refresh_reuse_grace = std::time::Duration::ZERO;
            config.mail.smtp_url = Some(smtp_url.into());
            config.mail.mail_from = Some("authd <no-reply@example.com>".to_owned());
        })
        .spawn()
        .await;
    let password = "Sup3r-Secret-Passphrase-42";
    let wrong_password = "Wr0ng-Secret-Passphrase-42";
    let mut secrets = vec![password.to_owned(), wrong_password.to_owned()];
    let mut statuses: Vec<Status> = Vec::new();

    let registered = app
        .register("secret@example.com", password, "Secret")
        .await
        .unwrap();
    let first = registered.tokens.unwrap();
    statuses.push(
        app.register("secret@example.com", password, "Secret")
            .await
            .unwrap_err(),
    );
    statuses.push(
        app.register("other@example.com", "tiny-pw", "Other")
            .await
            .unwrap_err(),
    );
    statuses.push(
        app.login("secret@example.com", wrong_password)
            .await
            .unwrap_err(),
    );
    statuses.push(
        app.login("nobody@example.com", wrong_password)
            .await
            .unwrap_err(),
    );
    let second = app
        .login("secret@example.com", password)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let rotated = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    statuses.push(app.refresh(&first.refresh_token).await.unwrap_err());
    statuses.push(app.get_me(Some(&first.access_token)).await.unwrap_err());
    app.get_me(Some(&second.access_token)).await.unwrap();
    app.validate(&second.access_token).await.unwrap();
    app.logout(&second.refresh_token, false, None)
        .await
        .unwrap();
    statuses.push(app.get_me(Some(&second.access_token)).await.unwrap_err());
    statuses.push(app.refresh(&second.refresh_token).await.unwrap_err());

    // One-time codes: a reset (refused once with a weak password, then used and replayed)
    // and an email verification after an email change.
    let new_password = "An0ther-Secret-Passphrase-7";
    secrets.push(new_password.to_owned());
    let mut client = app.client.clone();
    let reset = |email: &str| pb::RequestPasswordResetRequest {
        email: email.to_owned(),
    };
    client
        .request_password_reset(reset("secret@example.com"))
        .await
        .unwrap();
    let code = sink.wait_for(1).await[0].code();
    let reset_with = |code: &str, new_password: &str| pb::ResetPasswordRequest {
        code: code.to_owned(),
        new_password: new_password.to_owned(),
    };
    statuses.push(
        client
            .reset_password(reset_with(&code, "tiny-pw"))
            .await
            .unwrap_err(),
    );
    client
        .reset_password(reset_with(&code, new_password))
        .await
        .unwrap();
    statuses.push(
        client
            .reset_password(reset_with(&code, new_password))
            .await
            .unwrap_err(),
    );
    secrets.push(code);
    let third = app
        .login("secret@example.com", new_password)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let change = pb::ChangeEmailRequest {
        new_email: "moved@example.com".to_owned(),
        current_password: new_password.to_owned(),
    };
    client
        .change_email(with_bearer(change, Some(&third.access_token)))
        .await
        .unwrap();
    let code = sink.wait_for(2).await[1].code();
    let verify = pb::VerifyEmailRequest { code: code.clone() };
    client.verify_email(verify.clone()).await.unwrap();
    statuses.push(client.verify_email(verify).await.unwrap_err());
    secrets.push(code);

    for tokens in [&first, &second, &rotated, &third] {
        secrets.push(tokens.access_token.clone());
        secrets.push(tokens.refresh_token.clone());
        // A JWT's signature alone is as good as the token for a replay check.
        secrets.push(tokens.access_token.rsplit('.').next().unwrap().to_owned());
    }
    app.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 50,
        "the capture must have recorded the run"
    );
    assert!(
        logs.contains("login succeeded"),
        "authd's own events must be in the capture"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {secret}"
        );
        for status in &statuses {
            assert!(!status.message().contains(secret.as_str()), "{status:?}");
        }
    }
}
