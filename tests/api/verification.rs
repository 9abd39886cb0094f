//! Email verification and ChangeEmail, with the codes read from real SMTP messages.

use std::time::Duration;

use authd::proto::auth::v1 as pb;
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, TestDb, assert_code, spawn_app, violated_fields, with_bearer},
    mail_sink::MailSink,
    recovery::{NEW_PASSWORD, mailing_app, request_reset, reset_password, wait_for_audit},
};

async fn request_verification(app: &TestApp, bearer: &str) -> Result<(), tonic::Status> {
    let request = with_bearer(pb::RequestEmailVerificationRequest {}, Some(bearer));
    app.client
        .clone()
        .request_email_verification(request)
        .await?;
    Ok(())
}

async fn verify(app: &TestApp, code: &str) -> Result<pb::User, tonic::Status> {
    let request = pb::VerifyEmailRequest {
        code: code.to_owned(),
    };
    let response = app.client.clone().verify_email(request).await?;
    Ok(response.into_inner().user.expect("user"))
}

async fn change_email(
    app: &TestApp,
    bearer: &str,
    new_email: &str,
    password: &str,
) -> Result<pb::User, tonic::Status> {
    let request = pb::ChangeEmailRequest {
        new_email: new_email.to_owned(),
        current_password: password.to_owned(),
    };
    let response = app
        .client
        .clone()
        .change_email(with_bearer(request, Some(bearer)))
        .await?;
    Ok(response.into_inner().user.expect("user"))
}

#[tokio::test]
async fn a_verification_code_from_the_mailbox_verifies_the_address_once() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    let bearer = tokens.access_token.as_str();
    assert!(!app.get_me(Some(bearer)).await.unwrap().email_verified);

    request_verification(&app, bearer).await.unwrap();
    let message = sink.wait_for(1).await.remove(0);
    assert_eq!(message.to, [email.as_str()]);
    assert_eq!(
        message.header("Subject").as_deref(),
        Some("Confirm your email address")
    );
    assert!(
        message
            .text()
            .contains("https://app.example.com/verify?code=")
    );
    // Pasted with the end of its line.
    let user = verify(&app, &format!(" {}\r\n", message.code()))
        .await
        .unwrap();
    assert!(user.email_verified);
    assert_eq!(user.email, email);
    assert!(app.get_me(Some(bearer)).await.unwrap().email_verified);

    assert_code(verify(&app, &message.code()).await, Code::Unauthenticated);
    let status = assert_code(
        request_verification(&app, bearer).await,
        Code::FailedPrecondition,
    );
    assert_eq!(status.message(), "email is already verified");
    let status = assert_code(verify(&app, "").await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["code"]);
    assert_code(
        request_verification(&app, "not a token").await,
        Code::Unauthenticated,
    );
    wait_for_audit(&app.db, "verify_email", "success", 1).await;
    wait_for_audit(&app.db, "verify_email", "invalid_code", 1).await;
    app.stop().await;
}

#[tokio::test]
async fn codes_of_one_kind_neither_verify_nor_supersede_the_other_and_expire() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    request_reset(&app, &email).await.unwrap();
    let reset = sink.wait_for(1).await[0].code();
    assert_code(verify(&app, &reset).await, Code::Unauthenticated);

    request_verification(&app, &tokens.access_token)
        .await
        .unwrap();
    let verification = sink.wait_for(2).await[1].code();
    // The verification code left the reset code alone; the reset voids the verification.
    reset_password(&app, &reset, NEW_PASSWORD).await.unwrap();
    assert_code(verify(&app, &verification).await, Code::Unauthenticated);

    let tokens = app
        .login(&email, NEW_PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    request_verification(&app, &tokens.access_token)
        .await
        .unwrap();
    let code = sink.wait_for(3).await[2].code();
    // 24 hours by default.
    app.advance(Duration::from_secs(24 * 3600 + 60)).await;
    assert_code(verify(&app, &code).await, Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn verification_requests_beyond_the_hourly_limit_are_resource_exhausted() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .configure(|config| config.mail.reset_per_hour = 2)
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    let bearer = tokens.access_token.as_str();
    request_verification(&app, bearer).await.unwrap();
    sink.wait_for(1).await;
    request_verification(&app, bearer).await.unwrap();
    sink.wait_for(2).await;
    let status = assert_code(
        request_verification(&app, bearer).await,
        Code::ResourceExhausted,
    );
    use tonic_types::StatusExt as _;
    assert!(status.get_details_retry_info().is_some());
    // Only the newest of the two sent still works.
    let messages = sink.wait_for(2).await;
    assert_code(
        verify(&app, &messages[0].code()).await,
        Code::Unauthenticated,
    );
    assert!(
        verify(&app, &messages[1].code())
            .await
            .unwrap()
            .email_verified
    );
    app.stop().await;
}

#[tokio::test]
async fn change_email_checks_the_password_unverifies_and_mails_the_new_address() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .configure(|config| config.login.max_failures = 3)
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    let (taken, _) = app.new_user().await;
    let bearer = tokens.access_token.as_str();
    // Verified first, and a reset code outstanding: the change undoes both.
    request_verification(&app, bearer).await.unwrap();
    verify(&app, &sink.wait_for(1).await[0].code())
        .await
        .unwrap();
    request_reset(&app, &email).await.unwrap();
    let reset = sink.wait_for(2).await[1].code();

    let status = assert_code(
        change_email(&app, bearer, "new@example.com", "not the password").await,
        Code::Unauthenticated,
    );
    assert_eq!(status.message(), "invalid email or password");
    assert_code(
        change_email(&app, bearer, &taken.to_uppercase(), PASSWORD).await,
        Code::AlreadyExists,
    );
    let status = assert_code(
        change_email(&app, bearer, "not an address", "").await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["new_email", "current_password"]);
    let status = assert_code(
        change_email(&app, bearer, &email, PASSWORD).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["new_email"]);

    let user = change_email(&app, bearer, " New.Address@Example.com ", PASSWORD)
        .await
        .unwrap();
    assert_eq!(user.email, "new.address@example.com");
    assert!(!user.email_verified);
    let message = sink.wait_for(3).await.remove(2);
    assert_eq!(message.to, ["new.address@example.com"]);
    assert_code(
        reset_password(&app, &reset, NEW_PASSWORD).await,
        Code::Unauthenticated,
    );
    assert_code(app.login(&email, PASSWORD).await, Code::Unauthenticated);
    app.login("new.address@example.com", PASSWORD)
        .await
        .unwrap();
    // The session goes on; the new address verifies with the code sent to it.
    assert_eq!(
        app.get_me(Some(bearer)).await.unwrap().email,
        "new.address@example.com"
    );
    assert!(verify(&app, &message.code()).await.unwrap().email_verified);
    // The old address is free again.
    app.register(&email, PASSWORD, "Again").await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn wrong_passwords_to_change_email_count_toward_the_login_throttle() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.login.max_failures = 2)
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    let bearer = tokens.access_token.as_str();
    for _ in 0..2 {
        assert_code(
            change_email(&app, bearer, "x@example.com", "not the password").await,
            Code::Unauthenticated,
        );
    }
    assert_code(
        change_email(&app, bearer, "x@example.com", PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert_code(app.login(&email, PASSWORD).await, Code::ResourceExhausted);
    app.stop().await;
}

#[tokio::test]
async fn without_smtp_change_email_still_changes_and_unverifies() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let user = change_email(&app, &tokens.access_token, "moved@example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        (user.email.as_str(), user.email_verified),
        ("moved@example.com", false)
    );
    app.stop().await;
}

#[tokio::test]
async fn many_new_accounts_asking_at_once_all_get_their_code() {
    // New accounts hold no codes yet: on MySQL, voiding "their" older codes must not lock
    // a range of the index that the others insert into (a deadlock, answered UNAVAILABLE).
    const ACCOUNTS: usize = 12;
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let mut bearers = Vec::new();
    for _ in 0..ACCOUNTS {
        bearers.push(app.new_user().await.1.access_token);
    }
    for round in 0..3 {
        let mut asks = tokio::task::JoinSet::new();
        for bearer in &bearers {
            let (mut client, bearer) = (app.client.clone(), bearer.clone());
            asks.spawn(async move {
                let request = with_bearer(pb::RequestEmailVerificationRequest {}, Some(&bearer));
                client.request_email_verification(request).await
            });
        }
        for asked in asks.join_all().await {
            assert!(asked.is_ok(), "round {round}: {asked:?}");
        }
    }
    assert_eq!(sink.wait_for(3 * ACCOUNTS).await.len(), 3 * ACCOUNTS);
    app.stop().await;
}

#[tokio::test]
async fn change_email_sends_no_more_codes_than_the_hourly_limit() {
    // Each change mails an address of the caller's choosing: the hourly cap on codes holds
    // for them too, and a change past it is refused with nothing changed.
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .configure(|config| config.mail.reset_per_hour = 2)
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    let bearer = tokens.access_token.as_str();
    change_email(&app, bearer, "first.move@example.com", PASSWORD)
        .await
        .unwrap();
    request_verification(&app, bearer).await.unwrap();
    let refused = assert_code(
        change_email(&app, bearer, "third.move@example.com", PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert!(refused.message().contains("too many"), "{refused:?}");
    assert_eq!(
        app.get_me(Some(bearer)).await.unwrap().email,
        "first.move@example.com"
    );
    wait_for_audit(&app.db, "change_email", "limit_reached", 1).await;
    // An hour later the change goes through.
    app.advance(Duration::from_secs(3601)).await;
    let login = app.login("first.move@example.com", PASSWORD).await.unwrap();
    let bearer = login.tokens.unwrap().access_token;
    change_email(&app, &bearer, "third.move@example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(sink.wait_for(3).await[2].to, ["third.move@example.com"]);
    app.stop().await;
}
