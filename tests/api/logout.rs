use authd::proto::auth::v1::InactiveReason;
use tonic::Code;

use crate::helpers::{PASSWORD, assert_code, spawn_app};

#[tokio::test]
async fn logout_by_refresh_token_ends_that_session_at_once() {
    let app = spawn_app().await;
    let (email, first) = app.new_user().await;
    let other = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap();
    // Validated once, so the server remembers it as verified: revocation must still win.
    assert!(app.validate(&first.access_token).await.unwrap().active);

    app.logout(&first.refresh_token, false, None).await.unwrap();

    assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );
    let validation = app.validate(&first.access_token).await.unwrap();
    assert_eq!(
        (validation.active, validation.reason()),
        (false, InactiveReason::Revoked)
    );
    assert!(
        validation.user_id.is_empty() && validation.email.is_empty(),
        "no claims when inactive"
    );
    assert_code(
        app.get_me(Some(&first.access_token)).await,
        Code::Unauthenticated,
    );
    // The user's other session is untouched.
    assert!(app.validate(&other.access_token).await.unwrap().active);
    app.refresh(&other.refresh_token).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn logout_with_only_a_bearer_token_ends_the_bearers_session() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;

    app.logout("", false, Some(&tokens.access_token))
        .await
        .unwrap();

    assert_eq!(
        app.validate(&tokens.access_token).await.unwrap().reason(),
        InactiveReason::Revoked
    );
    assert_code(
        app.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}

#[tokio::test]
async fn logout_of_all_sessions_ends_every_session_of_the_user_only() {
    let app = spawn_app().await;
    let (email, first) = app.new_user().await;
    let second = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap();
    let (_, stranger) = app.new_user().await;

    app.logout("", true, Some(&first.access_token))
        .await
        .unwrap();

    for tokens in [&first, &second] {
        assert_eq!(
            app.validate(&tokens.access_token).await.unwrap().reason(),
            InactiveReason::Revoked
        );
        assert_code(
            app.refresh(&tokens.refresh_token).await,
            Code::Unauthenticated,
        );
    }
    assert!(app.validate(&stranger.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test]
async fn logout_needs_a_refresh_token_or_a_valid_bearer() {
    let app = spawn_app().await;
    assert_code(app.logout("", false, None).await, Code::Unauthenticated);
    assert_code(
        app.logout("", false, Some("not.a.jwt")).await,
        Code::Unauthenticated,
    );
    assert_code(
        app.logout("unknown-token", false, None).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}

#[tokio::test]
async fn logout_with_a_revoked_bearer_is_unauthenticated() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    app.logout(&tokens.refresh_token, false, None)
        .await
        .unwrap();

    assert_code(
        app.logout("", false, Some(&tokens.access_token)).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}
