use tokio::task::JoinSet;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::helpers::{PASSWORD, assert_code, spawn_app};

#[tokio::test]
async fn register_creates_a_user_and_returns_a_working_token_pair() {
    let app = spawn_app().await;

    let response = app
        .register("  Ada@Example.COM ", PASSWORD, "  Ada Lovelace ")
        .await
        .unwrap();

    let user = response.user.unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.name, "Ada Lovelace");
    assert_eq!(user.role, "user");
    assert!(user.active);
    assert!(!user.email_verified);
    assert!(uuid::Uuid::parse_str(&user.id).is_ok_and(|id| id.hyphenated().to_string() == user.id));
    assert!(user.created_at.is_some() && user.updated_at.is_some());
    let tokens = response.tokens.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 15 * 60);
    assert_eq!(tokens.refresh_expires_in, 7 * 24 * 3600);
    assert_eq!(tokens.refresh_token.len(), 43, "256 bits, url-safe base64");
    let me = app.get_me(Some(&tokens.access_token)).await.unwrap();
    assert_eq!(me.id, user.id);
    app.stop().await;
}

#[tokio::test]
async fn register_with_a_taken_email_in_any_letter_case_is_already_exists() {
    let app = spawn_app().await;
    app.register("grace@example.com", PASSWORD, "Grace")
        .await
        .unwrap();

    let status = assert_code(
        app.register("GRACE@example.com", PASSWORD, "Grace 2").await,
        Code::AlreadyExists,
    );

    assert!(!status.message().contains(PASSWORD));
    app.stop().await;
}

#[tokio::test]
async fn register_names_every_invalid_field_in_bad_request_details() {
    let app = spawn_app().await;

    let status = assert_code(
        app.register("not-an-email", "short", "   ").await,
        Code::InvalidArgument,
    );

    let details = status
        .get_details_bad_request()
        .expect("google.rpc.BadRequest");
    let mut fields: Vec<_> = details
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    fields.sort();
    assert_eq!(fields, ["email", "name", "password"]);
    assert!(
        !status.message().contains("short"),
        "the password must not be echoed"
    );
    app.stop().await;
}

#[tokio::test]
async fn register_enforces_the_length_limits() {
    let app = spawn_app().await;
    let too_long_email = format!("{}@example.com", "a".repeat(250));
    let cases = [
        (
            too_long_email.as_str(),
            PASSWORD.to_owned(),
            "Name".to_owned(),
            "email",
        ),
        (
            "a@example.com",
            "Zq8#mV2!pL9".to_owned(),
            "Name".to_owned(),
            "password",
        ),
        (
            "a@example.com",
            "tq7-Vz".repeat(43),
            "Name".to_owned(),
            "password",
        ),
        (
            "a@example.com",
            "x".repeat(1025),
            "Name".to_owned(),
            "password",
        ),
        (
            "a@example.com",
            PASSWORD.to_owned(),
            "n".repeat(101),
            "name",
        ),
    ];
    for (email, password, name, field) in cases {
        let status = assert_code(
            app.register(email, &password, &name).await,
            Code::InvalidArgument,
        );
        let details = status.get_details_bad_request().unwrap();
        assert_eq!(details.field_violations[0].field, field);
    }
    // The boundaries themselves are accepted: 12 and 256 code points, 100-character names.
    app.register("b@example.com", "Zq8#mV2!pL9w", &"n".repeat(100))
        .await
        .unwrap();
    app.register("c@example.com", &"tq7-Vz".repeat(43)[..256], "Name")
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn password_length_is_counted_in_code_points_after_nfkc() {
    let app = spawn_app().await;
    // Eleven "é" typed as e + combining accent: 22 code points as sent, 11 after NFKC.
    let status = assert_code(
        app.register("d@example.com", &"e\u{301}".repeat(11), "Name")
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("at least 12"), "{status:?}");
    // Spaces and any script are fine.
    app.register("e@example.com", "日本語の長いパスフレーズです", "Name")
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn common_passwords_and_passwords_built_from_the_account_are_refused() {
    let app = spawn_app().await;
    let cases = [
        ("password1234", "common"),
        ("qwertyuiop12", "common"),
        ("zyxwvutsrqponm", "easy to guess"),
        ("grace.hopper1906", "email address or name"),
        ("hopper-grace-1906", "email address or name"),
    ];
    for (password, reason) in cases {
        let status = assert_code(
            app.register("grace.hopper@example.com", password, "Grace Hopper")
                .await,
            Code::InvalidArgument,
        );
        let violation = &status.get_details_bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "password");
        assert!(
            violation.description.contains(reason),
            "{password}: {}",
            violation.description
        );
        assert!(!violation.description.contains(password));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_have_exactly_one_winner() {
    let app = spawn_app().await;
    let mut calls = JoinSet::new();
    for i in 0..8 {
        let client = app.client.clone();
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@example.com"
        };
        calls.spawn(async move {
            client
                .clone()
                .register(authd::proto::auth::v1::RegisterRequest {
                    email: email.to_owned(),
                    password: PASSWORD.to_owned(),
                    name: format!("Racer {i}"),
                })
                .await
        });
    }
    let results = calls.join_all().await;

    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for result in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(result.code(), Code::AlreadyExists, "{result:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn names_and_emails_with_invisible_formatting_characters_are_refused() {
    let app = spawn_app().await;
    // A right-to-left override renders "Admin\u{202E}nimda" as "Adminadmin"; zero-width
    // characters make a name or an address look like another's.
    for (email, name, field) in [
        ("rlo@example.com", "Admin\u{202E}nimda", "name"),
        ("zwsp@example.com", "Bob\u{200B}", "name"),
        ("zwj@example.com", "Eve\u{200D}Smith", "name"),
        ("bom@example.com", "\u{FEFF}Mallory", "name"),
        ("a\u{200B}lice@example.com", "Alice", "email"),
    ] {
        let status = assert_code(
            app.register(email, PASSWORD, name).await,
            Code::InvalidArgument,
        );
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field, "{name:?} / {email:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn one_address_in_two_unicode_encodings_is_one_account() {
    let app = spawn_app().await;
    let composed = "\u{00E9}mile@example.com";
    let decomposed = "e\u{0301}mile@example.com";
    app.register(composed, PASSWORD, "Emile").await.unwrap();

    assert_code(
        app.register(decomposed, PASSWORD, "Emile").await,
        Code::AlreadyExists,
    );
    let user = app.login(decomposed, PASSWORD).await.unwrap().user.unwrap();
    assert_eq!(user.email, composed);
    app.stop().await;
}
