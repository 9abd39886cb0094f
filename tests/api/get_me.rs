use std::time::Duration;

use tonic::Code;

use crate::helpers::{TestDb, assert_code, authd_bin, spawn_app, spawn_app_with};

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
    let app = spawn_app_with(TestDb::fresh().await, |config| {
        // Expiry is in whole seconds, so a token lives between TTL - 1 and TTL seconds:
        // 5 leaves the refreshed token at the end time to be used on a loaded machine.
        config.tokens.access_ttl = Duration::from_secs(5);
        config.tokens.clock_leeway = Duration::ZERO;
    })
    .await;
    let (_, tokens) = app.new_user().await;
    assert_eq!(tokens.expires_in, 5);

    tokio::time::sleep(Duration::from_millis(5_100)).await;

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

    let output = authd_bin()
        .args([
            "user",
            "set-active",
            &email,
            "false",
            "--database-url",
            &app.db.url,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    assert_code(
        app.get_me(Some(&tokens.access_token)).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}
