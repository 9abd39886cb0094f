//! Password reset by email: RequestPasswordReset → a message on the wire to a real SMTP
//! server → ResetPassword with the code read from that message.

use std::time::{Duration, Instant};

use authd::{
    proto::auth::v1::{self as pb, InactiveReason},
    store::{
        self, AuditRecord, EmailChange, EmailChanged, NewSession, PasswordChange, SessionStart,
        SessionStore, SqlStore, UserStore,
    },
};
use chrono::Utc;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use secrecy::SecretString;
use tonic::Code;
use uuid::Uuid;

use crate::{
    helpers::{
        PASSWORD, TestApp, TestAppBuilder, TestDb, assert_code, audit_rows, free_port, test_config,
        with_bearer,
    },
    mail_sink::MailSink,
};

pub const NEW_PASSWORD: &str = "a brand new passphrase 2026";

/// A server that mails through `sink`, retrying fast.
pub fn mailing_app(db: TestDb, smtp_url: &str) -> TestAppBuilder {
    let smtp_url = smtp_url.to_owned();
    TestApp::builder(db).configure(move |config| {
        config.mail.smtp_url = Some(smtp_url.into());
        config.mail.mail_from = Some("authd <no-reply@example.com>".to_owned());
        config.mail.reset_url = Some("https://app.example.com/reset?code={code}".to_owned());
        config.mail.verify_url = Some("https://app.example.com/verify?code={code}".to_owned());
        config.mail.mail_retry_backoff = Duration::from_millis(50);
    })
}

pub async fn request_reset(app: &TestApp, email: &str) -> Result<(), tonic::Status> {
    let request = pb::RequestPasswordResetRequest {
        email: email.to_owned(),
    };
    app.client.clone().request_password_reset(request).await?;
    Ok(())
}

pub async fn reset_password(
    app: &TestApp,
    code: &str,
    password: &str,
) -> Result<(), tonic::Status> {
    let request = pb::ResetPasswordRequest {
        code: code.to_owned(),
        new_password: password.to_owned(),
    };
    app.client.clone().reset_password(request).await?;
    Ok(())
}

/// Waits (at most 10 s) until the audit trail holds `count` events of `kind` with
/// `outcome`.
pub async fn wait_for_audit(db: &TestDb, kind: &str, outcome: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = audit_rows(db)
            .await
            .iter()
            .filter(|row| row.0 == kind && row.1 == outcome)
            .count();
        if seen >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} {kind}/{outcome} events expected, {seen} recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reset_code_sent_by_smtp_sets_a_new_password_and_ends_every_session() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, first) = app.new_user().await;
    let second = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap();

    // Any letter case finds the account.
    request_reset(&app, &email.to_uppercase()).await.unwrap();
    let message = sink.wait_for(1).await.remove(0);
    assert_eq!(message.to, [email.as_str()]);
    assert_eq!(message.from, "no-reply@example.com");
    assert_eq!(
        message.header("Subject").as_deref(),
        Some("Reset your password")
    );
    let code = message.code();
    assert_eq!(code.len(), 43, "256 bits, url-safe base64");
    assert!(
        message
            .text()
            .contains("https://app.example.com/reset?code=")
    );

    reset_password(&app, &code, NEW_PASSWORD).await.unwrap();
    for tokens in [&first, &second] {
        let validated = app.validate(&tokens.access_token).await.unwrap();
        assert_eq!(validated.reason(), InactiveReason::Revoked);
        assert_code(
            app.refresh(&tokens.refresh_token).await,
            Code::Unauthenticated,
        );
    }
    assert_code(app.login(&email, PASSWORD).await, Code::Unauthenticated);
    app.login(&email, NEW_PASSWORD).await.unwrap();
    // Single use.
    let reused = assert_code(
        reset_password(&app, &code, "yet another passphrase 77").await,
        Code::Unauthenticated,
    );
    assert_eq!(reused.message(), "invalid or expired code");
    app.login(&email, NEW_PASSWORD).await.unwrap();

    wait_for_audit(&app.db, "mail_delivery", "sent", 1).await;
    let events: Vec<_> = audit_rows(&app.db)
        .await
        .into_iter()
        .map(|row| (row.0, row.1))
        .filter(|(kind, _)| kind.contains("reset") || kind == "mail_delivery")
        .collect();
    for expected in [
        ("request_password_reset", "success"),
        ("mail_delivery", "sent"),
        ("reset_password", "success"),
        ("reset_password", "invalid_code"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_password_reset_answers_alike_and_as_fast_for_unknown_addresses() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // Interleaved, and alternating which goes first, so neither drift nor position
    // favours a side (the method of the Login timing test).
    for i in 0..41 {
        for known_turn in [i % 2 == 0, i % 2 == 1] {
            let (target, samples) = if known_turn {
                (email.as_str(), &mut known)
            } else {
                ("nobody@example.com", &mut unknown)
            };
            let started = Instant::now();
            request_reset(&app, target).await.unwrap();
            samples.push(started.elapsed());
        }
    }
    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64()
    };
    let (known, unknown) = (median(&mut known), median(&mut unknown));
    let ratio = known / unknown;
    println!(
        "RequestPasswordReset median: known {known:.6}s, unknown {unknown:.6}s, ratio {ratio:.3}"
    );
    // Issuing the code (a write and an SMTP conversation) happens after the answer; were
    // it on the request path, the known address would take several times as long.
    assert!(
        (0.67..1.5).contains(&ratio),
        "median known {known:.6}s vs unknown {unknown:.6}s"
    );
    // The unknown address was only audited; the known one got the hourly limit's worth.
    wait_for_audit(&app.db, "request_password_reset", "no_account", 41).await;
    wait_for_audit(&app.db, "request_password_reset", "limit_reached", 36).await;
    let messages = sink.wait_for(5).await;
    assert!(
        messages
            .iter()
            .all(|message| message.to == [email.as_str()])
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sink.messages().len(),
        5,
        "AUTHD_PASSWORD_RESET_PER_HOUR is 5"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_hourly_limit_counts_per_account_and_frees_up_after_an_hour() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .configure(|config| config.mail.reset_per_hour = 2)
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    let (other, _) = app.new_user().await;
    for _ in 0..4 {
        request_reset(&app, &email).await.unwrap();
    }
    wait_for_audit(&app.db, "request_password_reset", "limit_reached", 2).await;
    wait_for_audit(&app.db, "request_password_reset", "success", 2).await;
    // Another account has its own allowance.
    request_reset(&app, &other).await.unwrap();
    let messages = sink.wait_for(3).await;
    let to = |address: &str| {
        messages
            .iter()
            .filter(|m| m.to == [address.to_owned()])
            .count()
    };
    assert_eq!((to(&email), to(&other)), (2, 1));

    app.advance(Duration::from_secs(3601)).await;
    request_reset(&app, &email).await.unwrap();
    let messages = sink.wait_for(4).await;
    assert_eq!(messages[3].to, [email]);
    app.stop().await;
}

#[tokio::test]
async fn used_expired_superseded_unknown_and_wrong_kind_codes_are_refused() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    let refused = async |code: &str| {
        let status = assert_code(
            reset_password(&app, code, NEW_PASSWORD).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "invalid or expired code");
    };

    // Superseded: the second request voids the first code.
    request_reset(&app, &email).await.unwrap();
    let first = sink.wait_for(1).await[0].code();
    request_reset(&app, &email).await.unwrap();
    let second = sink.wait_for(2).await[1].code();
    refused(&first).await;

    // Of the other kind: an email-verification code.
    let request = crate::helpers::with_bearer(
        pb::RequestEmailVerificationRequest {},
        Some(&tokens.access_token),
    );
    app.client
        .clone()
        .request_email_verification(request)
        .await
        .unwrap();
    let verification = sink.wait_for(3).await[2].code();
    refused(&verification).await;

    // Expired: 30 minutes by default.
    app.advance(Duration::from_secs(31 * 60)).await;
    refused(&second).await;

    // Unknown and malformed.
    refused(&"A".repeat(43)).await;
    refused("not-a-code").await;

    // Empty: a field violation, with the new password's own.
    let status = assert_code(
        reset_password(&app, "", "short").await,
        Code::InvalidArgument,
    );
    let fields = crate::helpers::violated_fields(&status);
    assert_eq!(fields, ["code", "new_password"]);

    // A weak new password with a good code: refused, and the code still works.
    request_reset(&app, &email).await.unwrap();
    let fresh = sink.wait_for(4).await[3].code();
    let status = assert_code(
        reset_password(&app, &fresh, "password").await,
        Code::InvalidArgument,
    );
    assert_eq!(crate::helpers::violated_fields(&status), ["new_password"]);
    reset_password(&app, &fresh, NEW_PASSWORD).await.unwrap();
    app.login(&email, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_code_presented_many_times_at_once_resets_exactly_once() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    request_reset(&app, &email).await.unwrap();
    let code = sink.wait_for(1).await[0].code();

    let attempts = (0..6).map(|i| {
        let (client, code) = (app.client.clone(), code.clone());
        tokio::spawn(async move {
            let request = pb::ResetPasswordRequest {
                code,
                new_password: format!("{NEW_PASSWORD} number {i}"),
            };
            let mut client = client;
            client.reset_password(request).await.map(|_| i)
        })
    });
    let mut winners = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one reset wins");
    let password = format!("{NEW_PASSWORD} number {}", winners[0]);
    app.login(&email, &password).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_password_change_voids_outstanding_reset_codes() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    request_reset(&app, &email).await.unwrap();
    let code = sink.wait_for(1).await[0].code();
    let request = crate::helpers::with_bearer(
        pb::ChangePasswordRequest {
            current_password: PASSWORD.to_owned(),
            new_password: NEW_PASSWORD.to_owned(),
        },
        Some(&tokens.access_token),
    );
    app.client.clone().change_password(request).await.unwrap();
    assert_code(
        reset_password(&app, &code, "yet another passphrase 77").await,
        Code::Unauthenticated,
    );
    app.login(&email, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_deactivated_accounts_get_the_same_answer_and_no_mail() {
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    // A code sent before the deactivation dies with it, even once reactivated.
    request_reset(&app, &email).await.unwrap();
    let code = sink.wait_for(1).await[0].code();
    let set_active = |active| {
        let output = crate::helpers::set_active(&app.db, &email, active);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    };
    set_active(false);
    set_active(true);
    assert_code(
        reset_password(&app, &code, NEW_PASSWORD).await,
        Code::Unauthenticated,
    );
    set_active(false);
    request_reset(&app, &email).await.unwrap();
    request_reset(&app, "nobody@example.com").await.unwrap();
    wait_for_audit(&app.db, "request_password_reset", "no_account", 2).await;
    let status = assert_code(
        request_reset(&app, "not an address").await,
        Code::InvalidArgument,
    );
    assert_eq!(crate::helpers::violated_fields(&status), ["email"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.messages().len(), 1, "nothing after the deactivation");
    app.stop().await;
}

#[tokio::test]
async fn without_smtp_the_calls_that_send_mail_are_failed_precondition() {
    let app = crate::helpers::spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let status = assert_code(request_reset(&app, &email).await, Code::FailedPrecondition);
    assert_eq!(status.message(), "email delivery is not configured");
    let request = crate::helpers::with_bearer(
        pb::RequestEmailVerificationRequest {},
        Some(&tokens.access_token),
    );
    let status = assert_code(
        app.client.clone().request_email_verification(request).await,
        Code::FailedPrecondition,
    );
    assert_eq!(status.message(), "email delivery is not configured");
    app.stop().await;
}

#[tokio::test]
async fn a_mail_server_that_is_down_delays_no_call_and_gets_the_mail_once_it_is_back() {
    // Nothing listens on the port yet: every try is refused until the sink starts.
    let port = free_port();
    let app = mailing_app(
        TestDb::fresh().await,
        &format!("smtp://127.0.0.1:{port}?tls=none"),
    )
    .configure(|config| config.mail.mail_attempts = 8)
    .spawn()
    .await;
    let (email, _) = app.new_user().await;
    let started = Instant::now();
    request_reset(&app, &email).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the answer waited for SMTP"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sink = MailSink::start_on(port).await;
    let message = sink.wait_for(1).await.remove(0);
    wait_for_audit(&app.db, "mail_delivery", "sent", 1).await;
    // Delivered once, not once per failed try.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1);
    reset_password(&app, &message.code(), NEW_PASSWORD)
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_mail_server_refusing_for_good_is_given_up_logged_and_audited() {
    let sink = MailSink::start().await;
    sink.refuse(true);
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .configure(|config| config.mail.mail_attempts = 3)
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    request_reset(&app, &email).await.unwrap();
    wait_for_audit(&app.db, "mail_delivery", "gave_up", 1).await;
    // A busy server that recovers gets the next one.
    sink.refuse(false);
    request_reset(&app, &email).await.unwrap();
    sink.wait_for(1).await;
    wait_for_audit(&app.db, "mail_delivery", "sent", 1).await;
    app.stop().await;
}

/// Needs a network database: the proxy in front of it is cut and restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_the_code_calls_are_unavailable_and_the_code_survives() {
    let db = TestDb::fresh().await;
    let Some(target) = db.server_addr().filter(|_| !db.is_sqlite()) else {
        eprintln!("skipped: needs AUTHD_TEST_DATABASE_URL to name a PostgreSQL or MySQL server");
        return;
    };
    let sink = MailSink::start().await;
    let proxy = crate::helpers::DbProxy::start(target).await;
    let app = mailing_app(db.via(proxy.addr), &sink.url())
        .configure(|config| config.database.acquire_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    request_reset(&app, &email).await.unwrap();
    let code = sink.wait_for(1).await[0].code();

    proxy.cut();
    assert_code(request_reset(&app, &email).await, Code::Unavailable);
    assert_code(
        reset_password(&app, &code, NEW_PASSWORD).await,
        Code::Unavailable,
    );
    let verify = pb::VerifyEmailRequest { code: code.clone() };
    assert_code(
        app.client.clone().verify_email(verify).await,
        Code::Unavailable,
    );

    proxy.restore();
    app.wait_for_health(tonic_health::pb::health_check_response::ServingStatus::Serving)
        .await;
    reset_password(&app, &code, NEW_PASSWORD).await.unwrap();
    app.login(&email, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

/// The user's id and stored password hash, and the id of one of their live sessions.
async fn account_rows(db: &TestDb, email: &str) -> (Uuid, String, Uuid) {
    let conn = db.connect().await;
    let backend = conn.get_database_backend();
    let user = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                DbBackend::Postgres => "SELECT id, password_hash FROM users WHERE email = $1",
                _ => "SELECT id, password_hash FROM users WHERE email = ?",
            },
            [email.into()],
        ))
        .await
        .unwrap()
        .expect("user row");
    let (user_id, hash): (Uuid, String) = (
        user.try_get_by_index(0).unwrap(),
        user.try_get_by_index(1).unwrap(),
    );
    let session = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                DbBackend::Postgres => "SELECT id FROM sessions WHERE user_id = $1",
                _ => "SELECT id FROM sessions WHERE user_id = ?",
            },
            [user_id.into()],
        ))
        .await
        .unwrap()
        .expect("session row");
    (user_id, hash, session.try_get_by_index(0).unwrap())
}

#[tokio::test]
async fn changes_checked_before_a_reset_cannot_undo_it_when_they_commit_after() {
    // What an in-flight Login, ChangePassword or ChangeEmail that checked the old password
    // (or session) before a reset committed asks of the store once the reset is in: each
    // must yield to the reset.
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    let (user_id, checked_hash, checked_session) = account_rows(&app.db, &email).await;
    request_reset(&app, &email).await.unwrap();
    let code = sink.wait_for(1).await.remove(0).code();
    reset_password(&app, &code, NEW_PASSWORD).await.unwrap();
    let (_, reset_hash, _) = account_rows(&app.db, &email).await;

    let config = test_config(&app.db).database.settings().unwrap();
    let store = SqlStore::new(store::connect(&config).await.unwrap(), &config);
    let now = Utc::now();
    let session = || NewSession {
        id: Uuid::now_v7(),
        user_id,
        refresh_hash: format!("{:064x}", Uuid::now_v7().as_u128()),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        user_agent: None,
        peer: None,
    };
    let audit = AuditRecord {
        id: Uuid::now_v7(),
        occurred_at: now,
        kind: "test",
        outcome: "test",
        user_id: Some(user_id),
        session_id: None,
        peer: None,
        actor: None,
        request_id: None,
    };
    let attacker_hash = SecretString::from("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g");

    let change = PasswordChange {
        user_id,
        caller_session: checked_session,
        password_hash: attacker_hash.clone(),
        session: session(),
        now,
    };
    let changed = UserStore::change_password(&store, change, &audit).await;
    assert!(
        changed.unwrap().is_none(),
        "a password change from an ended session"
    );
    let change = EmailChange {
        user_id,
        caller_session: checked_session,
        email: "attacker@example.com".to_owned(),
        now,
        verification: None,
    };
    let changed = UserStore::change_email(&store, change, &audit).await;
    assert!(
        matches!(changed, Ok(EmailChanged::SignedOut)),
        "an email change from an ended session: {changed:?}"
    );
    let upgraded = store
        .update_password_hash(
            user_id,
            SecretString::from(checked_hash.clone()),
            attacker_hash,
            now,
        )
        .await;
    assert!(
        !upgraded.unwrap(),
        "a rehash of the password before the reset"
    );
    let started = SessionStore::create(&store, session(), checked_hash.into(), &audit).await;
    assert_eq!(started.unwrap(), SessionStart::PasswordChanged);

    // The reset stands: its password, its hash, its address, and no new session.
    assert_eq!(account_rows(&app.db, &email).await.1, reset_hash);
    assert_code(app.login(&email, PASSWORD).await, Code::Unauthenticated);
    app.login(&email, NEW_PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_answered_ok_is_never_undone_by_a_password_change_racing_it() {
    // The holder of a stolen access token and the old password changes the password while
    // the owner resets it. Either the change commits first (and voids the code: the reset
    // is refused) or the reset does (and the change is refused): a reset answered OK
    // always leaves its password in place.
    let sink = MailSink::start().await;
    let app = mailing_app(TestDb::fresh().await, &sink.url())
        .spawn()
        .await;
    for round in 0..6 {
        let (email, stolen) = app.new_user().await;
        request_reset(&app, &email).await.unwrap();
        let code = sink.wait_for(round + 1).await.remove(round).code();
        let change = pb::ChangePasswordRequest {
            current_password: PASSWORD.to_owned(),
            new_password: "the attacker's passphrase 99".to_owned(),
        };
        let mut client = app.client.clone();
        let bearer = stolen.access_token.clone();
        let attack = tokio::spawn(async move {
            client
                .change_password(with_bearer(change, Some(&bearer)))
                .await
        });
        let reset = reset_password(&app, &code, NEW_PASSWORD).await;
        let attack = attack.await.unwrap();
        match (&reset, &attack) {
            (Ok(()), _) => {
                app.login(&email, NEW_PASSWORD)
                    .await
                    .unwrap_or_else(|status| {
                        panic!("round {round}: reset OK, change {attack:?}, then: {status:?}")
                    });
            }
            (Err(status), Ok(_)) => assert_eq!(status.code(), Code::Unauthenticated),
            (Err(reset), Err(change)) => {
                panic!("round {round}: both refused: {reset:?} {change:?}")
            }
        }
    }
    app.stop().await;
}
