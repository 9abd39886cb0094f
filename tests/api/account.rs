//! The user's own account: UpdateMe, ListSessions, RevokeSession, `last_login_at`.

use std::time::Duration;

use authd::proto::auth::v1::{self as pb, InactiveReason};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::helpers::{
    PASSWORD, TestApp, TestDb, assert_code, spawn_app, violated_fields, with_bearer,
};

async fn update_me(
    app: &TestApp,
    bearer: Option<&str>,
    name: &str,
) -> Result<pb::User, tonic::Status> {
    let request = pb::UpdateMeRequest {
        name: name.to_owned(),
    };
    let response = app
        .client
        .clone()
        .update_me(with_bearer(request, bearer))
        .await?;
    Ok(response.into_inner().user.expect("user"))
}

async fn list_sessions(app: &TestApp, bearer: &str) -> Result<Vec<pb::Session>, tonic::Status> {
    let request = with_bearer(pb::ListSessionsRequest {}, Some(bearer));
    let response = app.client.clone().list_sessions(request).await?;
    Ok(response.into_inner().sessions)
}

async fn revoke_session(
    app: &TestApp,
    bearer: &str,
    session_id: &str,
) -> Result<(), tonic::Status> {
    let request = pb::RevokeSessionRequest {
        session_id: session_id.to_owned(),
    };
    app.client
        .clone()
        .revoke_session(with_bearer(request, Some(bearer)))
        .await?;
    Ok(())
}

/// Logs in with this `user-agent`.
async fn login_as(app: &TestApp, email: &str, user_agent: &str) -> pb::TokenPair {
    let mut request = Request::new(pb::LoginRequest {
        email: email.to_owned(),
        password: PASSWORD.to_owned(),
    });
    request
        .metadata_mut()
        .insert("user-agent", MetadataValue::try_from(user_agent).unwrap());
    let response = app.client.clone().login(request).await.unwrap();
    response.into_inner().tokens.unwrap()
}

async fn session_id(app: &TestApp, access_token: &str) -> String {
    app.validate(access_token).await.unwrap().session_id
}

#[tokio::test]
async fn update_me_changes_the_name_under_the_register_rules() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let bearer = Some(tokens.access_token.as_str());

    app.advance(Duration::from_secs(2)).await;
    let user = update_me(&app, bearer, "  Ada Lovelace ").await.unwrap();
    assert_eq!(
        (user.name.as_str(), user.email.as_str()),
        ("Ada Lovelace", email.as_str())
    );
    let seconds = |at: Option<prost_types::Timestamp>| at.unwrap().seconds;
    assert!(seconds(user.updated_at) > seconds(user.created_at));
    assert_eq!(app.get_me(bearer).await.unwrap().name, "Ada Lovelace");

    for bad in ["", "   ", "Ada\u{202E}nomis", &"x".repeat(101)] {
        let status = assert_code(update_me(&app, bearer, bad).await, Code::InvalidArgument);
        assert!(status.message().contains("invalid"), "{status:?}");
    }
    assert_code(update_me(&app, None, "Ada").await, Code::Unauthenticated);
    assert_eq!(app.get_me(bearer).await.unwrap().name, "Ada Lovelace");
    app.stop().await;
}

#[tokio::test]
async fn last_login_at_is_when_register_or_login_last_started_a_session() {
    let app = spawn_app().await;
    let registered = app
        .register("stamp@example.com", PASSWORD, "Stamp")
        .await
        .unwrap();
    let user = registered.user.unwrap();
    let at_register = user.last_login_at.expect("set by Register");
    assert_eq!(at_register.seconds, user.created_at.unwrap().seconds);

    app.advance(Duration::from_secs(60)).await;
    let tokens = registered.tokens.unwrap();
    let refreshed = app.rotate(&tokens.refresh_token).await;
    let me = app.get_me(Some(&refreshed.access_token)).await.unwrap();
    assert_eq!(me.last_login_at, Some(at_register), "a refresh is no login");

    app.advance(Duration::from_secs(60)).await;
    let logged_in = app.login("stamp@example.com", PASSWORD).await.unwrap();
    let at_login = logged_in.user.unwrap().last_login_at.expect("set by Login");
    assert!(
        at_login.seconds >= at_register.seconds + 120,
        "{at_login:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn list_sessions_shows_the_callers_live_sessions_newest_first() {
    let app = spawn_app().await;
    let (email, first) = app.new_user().await;
    let phone = login_as(&app, &email, "phone-app/2.1").await;
    let laptop = login_as(&app, &email, &format!("laptop {}", "x".repeat(300))).await;
    let ended = login_as(&app, &email, "ended").await;
    app.logout(&ended.refresh_token, false, None).await.unwrap();
    let (_, stranger) = app.new_user().await;

    let sessions = list_sessions(&app, &phone.access_token).await.unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let expected = [
        session_id(&app, &laptop.access_token).await,
        session_id(&app, &phone.access_token).await,
        session_id(&app, &first.access_token).await,
    ];
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    let current: Vec<bool> = sessions.iter().map(|s| s.current).collect();
    assert_eq!(current, [false, true, false]);
    // The client library adds its own name after the application's.
    assert!(
        sessions[1].user_agent.starts_with("phone-app/2.1"),
        "{}",
        sessions[1].user_agent
    );
    assert_eq!(
        sessions[0].user_agent.chars().count(),
        256,
        "trimmed to 256"
    );
    for session in &sessions {
        assert_eq!(session.peer, "127.0.0.1");
        assert!(session.expires_at.unwrap().seconds > session.created_at.unwrap().seconds);
        assert!(session.last_used_at.is_some());
    }
    let theirs = list_sessions(&app, &stranger.access_token).await.unwrap();
    assert_eq!(theirs.len(), 1, "only the caller's own");
    assert_code(
        list_sessions(&app, &ended.access_token).await,
        Code::Unauthenticated,
    );
    app.stop().await;
}

#[tokio::test]
async fn revoke_session_ends_only_the_callers_own_sessions() {
    let app = spawn_app().await;
    let (email, mine) = app.new_user().await;
    let other_device = login_as(&app, &email, "other-device").await;
    let (_, theirs) = app.new_user().await;
    let their_session = session_id(&app, &theirs.access_token).await;

    // Someone else's session, an unknown one, and not a session id at all.
    let status = assert_code(
        revoke_session(&app, &mine.access_token, &their_session).await,
        Code::NotFound,
    );
    let unknown = assert_code(
        revoke_session(&app, &mine.access_token, &uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
    assert_eq!(
        status.message(),
        unknown.message(),
        "nothing tells the two apart"
    );
    assert_code(
        revoke_session(&app, &mine.access_token, "not-a-uuid").await,
        Code::InvalidArgument,
    );
    assert!(app.validate(&theirs.access_token).await.unwrap().active);
    app.refresh(&theirs.refresh_token).await.unwrap();

    // One of mine: its tokens stop working, the others go on.
    let target = session_id(&app, &other_device.access_token).await;
    revoke_session(&app, &mine.access_token, &target)
        .await
        .unwrap();
    let validation = app.validate(&other_device.access_token).await.unwrap();
    assert_eq!(
        (validation.active, validation.reason()),
        (false, InactiveReason::Revoked)
    );
    assert_code(
        app.refresh(&other_device.refresh_token).await,
        Code::Unauthenticated,
    );
    assert!(app.validate(&mine.access_token).await.unwrap().active);
    // A retry of the same revocation is answered OK.
    revoke_session(&app, &mine.access_token, &target)
        .await
        .unwrap();
    assert_eq!(
        list_sessions(&app, &mine.access_token).await.unwrap().len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_session_revoked_on_one_replica_is_revoked_on_another_within_the_sync_interval() {
    let db = TestDb::fresh().await;
    let one = TestApp::builder(db.clone()).spawn().await;
    let two = TestApp::builder(db).spawn().await;
    let (email, mine) = one.new_user().await;
    let other = login_as(&one, &email, "other").await;
    let target = session_id(&one, &other.access_token).await;

    revoke_session(&one, &mine.access_token, &target)
        .await
        .unwrap();
    two.wait_for_validation(&other.access_token, InactiveReason::Revoked)
        .await;
    one.stop().await;
    two.stop().await;
}

async fn change_password(
    app: &TestApp,
    bearer: &str,
    current: &str,
    new: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    let request = pb::ChangePasswordRequest {
        current_password: current.to_owned(),
        new_password: new.to_owned(),
    };
    let response = app
        .client
        .clone()
        .change_password(with_bearer(request, Some(bearer)))
        .await?;
    Ok(response.into_inner().tokens.expect("tokens"))
}

const NEW_PASSWORD: &str = "a brand new passphrase of mine";

#[tokio::test]
async fn change_password_ends_every_session_and_returns_one_new_session() {
    let db = TestDb::fresh().await;
    let app = TestApp::builder(db.clone()).spawn().await;
    let replica = TestApp::builder(db).spawn().await;
    let (email, first) = app.new_user().await;
    let second = login_as(&app, &email, "second").await;

    let fresh = change_password(&app, &second.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();

    // Every earlier session ends, the caller's included, here and on the other replica.
    for old in [&first, &second] {
        let validation = app.validate(&old.access_token).await.unwrap();
        assert_eq!(validation.reason(), InactiveReason::Revoked);
        replica
            .wait_for_validation(&old.access_token, InactiveReason::Revoked)
            .await;
        assert_code(app.refresh(&old.refresh_token).await, Code::Unauthenticated);
    }
    // The new session works, and is the only one.
    assert!(app.validate(&fresh.access_token).await.unwrap().active);
    let sessions = list_sessions(&app, &fresh.access_token).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].current);
    app.rotate(&fresh.refresh_token).await;
    // Only the new password logs in.
    assert_code(app.login(&email, PASSWORD).await, Code::Unauthenticated);
    app.login(&email, NEW_PASSWORD).await.unwrap();
    app.stop().await;
    replica.stop().await;
}

#[tokio::test]
async fn change_password_refuses_a_wrong_current_password_and_counts_it_like_login() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.login.max_failures = 3)
        .spawn()
        .await;
    let (email, tokens) = app.new_user().await;
    let bearer = tokens.access_token.as_str();

    for _ in 0..3 {
        let status = assert_code(
            change_password(&app, bearer, "not the password at all", NEW_PASSWORD).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "invalid email or password");
    }
    // The account's failure budget is spent, for ChangePassword and Login alike, however
    // right the next guess is.
    assert_code(
        change_password(&app, bearer, PASSWORD, NEW_PASSWORD).await,
        Code::ResourceExhausted,
    );
    assert_code(app.login(&email, PASSWORD).await, Code::ResourceExhausted);
    // Nothing changed: the session lives, the old password stands.
    assert!(app.validate(bearer).await.unwrap().active);
    app.stop().await;
}

#[tokio::test]
async fn change_password_names_each_bad_field() {
    let app = spawn_app().await;
    let (email, tokens) = app.new_user().await;
    let bearer = tokens.access_token.as_str();

    let fields = |status: tonic::Status| violated_fields(&status);
    let status = assert_code(
        change_password(&app, bearer, "", "short").await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(status), ["current_password", "new_password"]);
    // Weak by the strength estimate, or built from the account's own email.
    for weak in ["password1234", &format!("{email}{email}")] {
        let status = assert_code(
            change_password(&app, bearer, PASSWORD, weak).await,
            Code::InvalidArgument,
        );
        assert_eq!(fields(status), ["new_password"], "{weak}");
    }
    assert_code(
        change_password(&app, "not-a-token", PASSWORD, NEW_PASSWORD).await,
        Code::Unauthenticated,
    );
    app.login(&email, PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn list_sessions_answers_with_the_newest_hundred() {
    let app = spawn_app().await;
    let (email, oldest) = app.new_user().await;
    let mut newest = None;
    for _ in 0..authd::auth::SESSIONS_LISTED {
        newest = Some(app.login(&email, PASSWORD).await.unwrap().tokens.unwrap());
    }
    let newest = newest.unwrap();

    let listed = list_sessions(&app, &newest.access_token).await.unwrap();
    assert_eq!(listed.len(), 100);
    assert!(listed[0].current);
    // The oldest session is live, past the cap: its caller still gets the newest hundred.
    let listed = list_sessions(&app, &oldest.access_token).await.unwrap();
    assert_eq!(listed.len(), 100);
    assert!(listed.iter().all(|session| !session.current));
    app.stop().await;
}
