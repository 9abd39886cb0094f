use std::time::Duration;

use authd::proto::auth::v1::{InactiveReason, RefreshRequest};
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{TestApp, TestDb, assert_code, spawn_app};

#[tokio::test]
async fn refresh_rotates_the_pair_and_the_old_refresh_token_stops_working() {
    let app = spawn_app().await;
    let (email, first) = app.new_user().await;

    let response = app.refresh(&first.refresh_token).await.unwrap();

    assert_eq!(response.user.unwrap().email, email);
    let second = response.tokens.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    let old = app.validate(&first.access_token).await.unwrap();
    let new = app.validate(&second.access_token).await.unwrap();
    assert!(new.active);
    assert_eq!(old.session_id, new.session_id, "rotation keeps the session");
    // The new refresh token works in turn.
    app.refresh(&second.refresh_token).await.unwrap();
    app.stop().await;
}

fn no_grace(config: &mut authd::config::Config) {
    config.tokens.refresh_reuse_grace = Duration::ZERO;
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_session() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(no_grace)
        .spawn()
        .await;
    let (_, first) = app.new_user().await;
    let second = app.rotate(&first.refresh_token).await;

    let status = assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );

    assert!(status.message().contains("already used"), "{status:?}");
    assert_code(
        app.refresh(&second.refresh_token).await,
        Code::Unauthenticated,
    );
    let validation = app.validate(&second.access_token).await.unwrap();
    assert!(!validation.active);
    assert_eq!(validation.reason(), InactiveReason::Revoked);
    assert_code(
        app.get_me(Some(&second.access_token)).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}

#[tokio::test]
async fn reusing_any_older_token_of_the_chain_is_detected() {
    let app = spawn_app().await;
    let (_, first) = app.new_user().await;
    let second = app.rotate(&first.refresh_token).await;
    let third = app.rotate(&second.refresh_token).await;

    assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );

    assert_code(
        app.refresh(&third.refresh_token).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}

async fn refresh_concurrently(
    app: &crate::helpers::TestApp,
    token: &str,
    calls: usize,
) -> Vec<Result<authd::proto::auth::v1::RefreshResponse, tonic::Status>> {
    let mut set = JoinSet::new();
    for _ in 0..calls {
        let mut client = app.client.clone();
        let token = token.to_owned();
        set.spawn(async move {
            client
                .refresh(RefreshRequest {
                    refresh_token: token,
                })
                .await
                .map(tonic::Response::into_inner)
        });
    }
    set.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grace_concurrent_refreshes_of_one_token_have_exactly_one_winner() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(no_grace)
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;

    let results = refresh_concurrently(&app, &tokens.refresh_token, 10).await;

    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_grace_concurrent_refreshes_all_get_the_one_successor() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;

    let results = refresh_concurrently(&app, &tokens.refresh_token, 10).await;

    let successors: std::collections::HashSet<_> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("every retry inside the window succeeds")
                .tokens
                .as_ref()
                .unwrap()
                .refresh_token
                .clone()
        })
        .collect();
    assert_eq!(successors.len(), 1, "the chain must not fork");
    let successor = successors.into_iter().next().unwrap();
    let next = app.rotate(&successor).await;
    assert!(app.validate(&next.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_successor() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    let first = app.rotate(&tokens.refresh_token).await;

    let retried = app.rotate(&tokens.refresh_token).await;

    assert_eq!(retried.refresh_token, first.refresh_token);
    assert!(
        app.validate(&first.access_token).await.unwrap().active,
        "no revocation"
    );
    assert!(app.validate(&retried.access_token).await.unwrap().active);
    app.refresh(&first.refresh_token).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_replay_after_the_grace_window_revokes_the_session() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.refresh_reuse_grace = Duration::from_secs(10);
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    let first = app.rotate(&tokens.refresh_token).await;

    app.advance(Duration::from_secs(11)).await;

    assert_code(
        app.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
    );
    assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );
    assert_eq!(
        app.validate(&first.access_token).await.unwrap().reason(),
        InactiveReason::Revoked
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_unknown_and_empty_refresh_tokens_are_refused() {
    let app = spawn_app().await;
    assert_code(app.refresh("garbage").await, Code::Unauthenticated);
    assert_code(app.refresh(&"A".repeat(43)).await, Code::Unauthenticated);
    assert_code(app.refresh("").await, Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn an_access_token_is_not_a_refresh_token_and_vice_versa() {
    let app = spawn_app().await;
    let (_, tokens) = app.new_user().await;
    assert_code(
        app.refresh(&tokens.access_token).await,
        Code::Unauthenticated,
    );
    let validation = app.validate(&tokens.refresh_token).await.unwrap();
    assert_eq!(validation.reason(), InactiveReason::Invalid);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_refresh_token_expires_after_the_refresh_ttl() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.refresh_ttl = Duration::from_secs(3600);
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    assert_eq!(tokens.refresh_expires_in, 3600);

    app.advance(Duration::from_secs(3601)).await;

    let status = assert_code(
        app.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("expired"), "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn refreshing_never_extends_a_session_past_its_maximum_age() {
    // The idle TTL (a day) would let it live on; only the hour's maximum age ends it.
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.tokens.refresh_ttl = Duration::from_secs(86_400);
            config.tokens.session_max_age = Duration::from_secs(3600);
        })
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    assert_eq!(
        tokens.refresh_expires_in, 3600,
        "the first refresh token ends with the session"
    );

    app.advance(Duration::from_secs(1800)).await;
    let rotated = app.rotate(&tokens.refresh_token).await;
    // What is left of the hour, not the day's idle TTL (MySQL keeps whole seconds, and
    // the real time the calls took passes too).
    assert!(
        (1780..=1800).contains(&rotated.refresh_expires_in),
        "{}",
        rotated.refresh_expires_in
    );
    app.advance(Duration::from_secs(1801)).await;

    assert_code(
        app.refresh(&rotated.refresh_token).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}
