use std::time::Duration;

use authd::{config::JwtAlgorithm, proto::auth::v1::InactiveReason};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::Code;

use crate::helpers::{TestApp, TestDb, assert_code, spawn_app, test_config};

fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn an_active_token_returns_its_claims() {
    let app = spawn_app().await;
    let response = app
        .register("claims@example.com", crate::helpers::PASSWORD, "Claims")
        .await
        .unwrap();
    let user = response.user.unwrap();
    let tokens = response.tokens.unwrap();

    let validation = app.validate(&tokens.access_token).await.unwrap();

    assert!(validation.active);
    assert_eq!(validation.reason(), InactiveReason::Unspecified);
    assert_eq!(validation.user_id, user.id);
    assert_eq!(validation.email, "claims@example.com");
    assert_eq!(validation.role, "user");
    assert!(uuid::Uuid::parse_str(&validation.session_id).is_ok());
    let issued = validation.issued_at.unwrap().seconds;
    assert_eq!(validation.expires_at.unwrap().seconds - issued, 900);
    app.stop().await;
}

#[tokio::test]
async fn access_tokens_follow_rfc_9068() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;

    let header = jwt_part(&tokens.access_token, 0);
    let claims = jwt_part(&tokens.access_token, 1);

    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
    for claim in [
        "iss", "aud", "sub", "sid", "jti", "iat", "exp", "email", "role",
    ] {
        assert!(!claims[claim].is_null(), "missing claim {claim}");
    }
    assert_eq!(claims["iss"], "authd");
    assert_eq!(claims["aud"], "authd");
    let (_, again) = app.new_user().await;
    assert_ne!(jwt_part(&again.access_token, 1)["jti"], claims["jti"]);
    app.stop().await;
}

#[tokio::test]
async fn garbage_is_inactive_invalid_not_an_error() {
    let app = spawn_app().await;
    for token in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        &"x".repeat(10_000),
    ] {
        let validation = app.validate(token).await.unwrap();
        assert!(!validation.active);
        assert_eq!(validation.reason(), InactiveReason::Invalid);
        assert!(validation.user_id.is_empty() && validation.issued_at.is_none());
    }
    app.stop().await;
}

#[tokio::test]
async fn an_empty_token_is_invalid_argument() {
    let app = spawn_app().await;
    assert_code(app.validate("").await, Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_invalid() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let parts: Vec<_> = tokens.access_token.split('.').collect();

    // alg "none" with our real claims.
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    // Claims changed to another role, signature kept.
    let mut claims = jwt_part(&tokens.access_token, 1);
    claims["role"] = "admin".into();
    let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    // HS256 "signed" with the public kid as secret material is still the wrong algorithm.
    let mut header = jwt_part(&tokens.access_token, 0);
    header["alg"] = "HS256".into();
    let hs_header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    // Unknown kid.
    header["alg"] = "EdDSA".into();
    header["kid"] = "../../etc/passwd".into();
    let bad_kid = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());

    for token in [
        format!("{none}.{}.", parts[1]),
        format!("{}.{forged_claims}.{}", parts[0], parts[2]),
        format!("{hs_header}.{}.{}", parts[1], parts[2]),
        format!("{bad_kid}.{}.{}", parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 4]
        ),
    ] {
        let validation = app.validate(&token).await.unwrap();
        assert_eq!(
            (validation.active, validation.reason()),
            (false, InactiveReason::Invalid),
            "{token}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_from_another_authd_is_invalid() {
    let ours = spawn_app().await;
    let theirs = spawn_app().await;
    let (_, tokens) = theirs.new_user().await;

    let validation = ours.validate(&tokens.access_token).await.unwrap();

    assert_eq!(validation.reason(), InactiveReason::Invalid);
    ours.stop().await;
    theirs.stop().await;
}

/// The one expiry test that really waits: the others move the server's clock.
#[tokio::test]
async fn an_access_token_expires_on_the_wall_clock() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.access_ttl = Duration::from_secs(2);
            config.tokens.clock_leeway = Duration::ZERO;
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;

    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let validation = app.validate(&tokens.access_token).await.unwrap();
    assert_eq!(
        (validation.active, validation.reason()),
        (false, InactiveReason::Expired)
    );
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_inactive_expired() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.access_ttl = Duration::from_secs(60);
            config.tokens.clock_leeway = Duration::ZERO;
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    // Validated once, so the server remembers it as verified: expiry must still win.
    assert!(app.validate(&tokens.access_token).await.unwrap().active);

    app.advance(Duration::from_secs(61)).await;

    let validation = app.validate(&tokens.access_token).await.unwrap();
    assert_eq!(
        (validation.active, validation.reason()),
        (false, InactiveReason::Expired)
    );
    assert!(validation.user_id.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn issuer_and_audience_are_enforced() {
    let db = TestDb::fresh().await;
    let app = TestApp::builder(db.clone()).spawn().await;
    let (_, tokens) = app.new_user().await;
    app.stop().await;

    // Same keys (same database), different expected audience.
    let mut config = test_config(&db);
    config.tokens.audience = "another-audience".into();
    let app = TestApp::builder(db).config(config).spawn().await;

    let validation = app.validate(&tokens.access_token).await.unwrap();
    assert_eq!(validation.reason(), InactiveReason::Invalid);
    app.stop().await;
}

#[tokio::test]
async fn hs256_can_be_selected() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.algorithm = JwtAlgorithm::Hs256;
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;

    assert_eq!(jwt_part(&tokens.access_token, 0)["alg"], "HS256");
    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test]
async fn validate_token_runs_no_database_query() {
    // Background polls far apart, so that only the RPCs themselves could query.
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.revocation_sync = Duration::from_secs(3600);
            config.health_probe_interval = Duration::from_secs(3600);
            config.tokens.key_reload_interval = Duration::from_secs(3600);
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    // The counter does count: GetMe reads the user.
    let before = app.queries.get();
    app.get_me(Some(&tokens.access_token)).await.unwrap();
    assert!(app.queries.get() > before, "GetMe ran no query");

    let before = app.queries.get();
    for _ in 0..100 {
        assert!(app.validate(&tokens.access_token).await.unwrap().active);
        assert!(!app.validate("not.a.token").await.unwrap().active);
    }
    assert_eq!(
        app.queries.get(),
        before,
        "ValidateToken queried the database"
    );
    app.stop().await;
}
