use std::time::Duration;

use tonic::Code;

use crate::helpers::{TestApp, TestDb, assert_code, set_active, spawn_app};

#[tokio::test]
async fn get_me_returns_the_callers_user() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;

    let user = app.get_me(Some(&tokens.access_token)).await.unwrap();

    assert_eq!(user.email, email);
    assert_eq!(user.name, "Test User");
    assert!(user.active);
    app.stop().await;
}

#[tokio::test]
async fn get_me_without_a_usable_bearer_is_unauthenticated() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;

    assert_code(app.get_me(None).await, Code::Unauthenticated);
    assert_code(app.get_me(Some("garbage")).await, Code::Unauthenticated);
    assert_code(
        app.get_me(Some(&tokens.refresh_token)).await,
        Code::Unauthenticated,
    );
    let mut tampered = tokens.access_token.clone();
    tampered.insert(tampered.len() / 2, 'x');
    assert_code(app.get_me(Some(&tampered)).await, Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn get_me_with_an_expired_access_token_is_unauthenticated() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.access_ttl = Duration::from_secs(60);
            config.tokens.clock_leeway = Duration::ZERO;
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    assert_eq!(tokens.expires_in, 60);

    app.advance(Duration::from_secs(61)).await;

    let status = assert_code(
        app.get_me(Some(&tokens.access_token)).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("expired"), "{status:?}");
    // The refresh token still gets a fresh access token.
    let fresh = app.rotate(&tokens.refresh_token).await;
    app.get_me(Some(&fresh.access_token)).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn get_me_reads_the_user_fresh_and_refuses_a_deactivated_one() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;

    set_active(&app.db, &email, false);

    assert_code(
        app.get_me(Some(&tokens.access_token)).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}
