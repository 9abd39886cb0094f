use std::time::{Duration, Instant};

use authd::proto::auth::v1::InactiveReason;
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{PASSWORD, TestApp, TestDb, assert_code, set_active, spawn_app};

#[tokio::test]
async fn keys_and_sessions_survive_a_restart_on_the_same_database() {
    let db = TestDb::fresh().await;
    let app = TestApp::builder(db.clone()).spawn().await;
    let (email, tokens) = app.new_user().await;
    app.stop().await;

    let app = TestApp::builder(db).spawn().await;

    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    assert_eq!(
        app.get_me(Some(&tokens.access_token)).await.unwrap().email,
        email
    );
    let rotated = app.rotate(&tokens.refresh_token).await;
    assert!(app.validate(&rotated.access_token).await.unwrap().active);
    app.login(&email, PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let db = TestDb::fresh().await;
    let app = TestApp::builder(db.clone()).spawn().await;
    let (_, tokens) = app.new_user().await;
    app.logout(&tokens.refresh_token, false, None)
        .await
        .unwrap();
    app.stop().await;

    let app = TestApp::builder(db).spawn().await;

    assert_eq!(
        app.validate(&tokens.access_token).await.unwrap().reason(),
        InactiveReason::Revoked
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_revokes_on_another_within_the_sync_interval() {
    let db = TestDb::fresh().await;
    let a = TestApp::builder(db.clone()).spawn().await;
    let b = TestApp::builder(db).spawn().await;
    let (_, tokens) = a.new_user().await;
    assert!(
        b.validate(&tokens.access_token).await.unwrap().active,
        "replicas share keys"
    );

    a.logout(&tokens.refresh_token, false, None).await.unwrap();

    // Sync runs every 200 ms in tests; wait_for_validation allows 5 s.
    b.wait_for_validation(&tokens.access_token, InactiveReason::Revoked)
        .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn deactivation_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let (email, first) = app.new_user().await;
    let second = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap();

    let output = set_active(&app.db, &email, false);
    assert!(String::from_utf8_lossy(&output.stdout).contains("sessions ended: 2"));
    for tokens in [&first, &second] {
        app.wait_for_validation(&tokens.access_token, InactiveReason::Revoked)
            .await;
        assert_code(
            app.refresh(&tokens.refresh_token).await,
            Code::Unauthenticated,
        );
    }
    assert_code(app.login(&email, PASSWORD).await, Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_calls_finish() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    let client = app.client.clone();
    let login = tokio::spawn(async move {
        client
            .clone()
            .login(authd::proto::auth::v1::LoginRequest {
                email,
                password: PASSWORD.into(),
            })
            .await
    });
    // Give the call time to reach the server; argon2 then keeps it busy for a while.
    tokio::time::sleep(Duration::from_millis(10)).await;

    app.stop().await;

    assert!(
        login.await.unwrap().is_ok(),
        "the in-flight login must complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_a_deactivation_gets_no_session_that_stays_active() {
    // A slow hash: the deactivation lands while the password is being checked.
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.hashing.iterations = 60;
            config.hashing.workers = std::num::NonZeroUsize::new(1);
        })
        .spawn()
        .await;
    let (email, _) = app.new_user().await;

    let login = tokio::spawn({
        let (app_client, email) = (app.client.clone(), email.clone());
        async move {
            let mut client = app_client;
            client
                .login(authd::proto::auth::v1::LoginRequest {
                    email,
                    password: PASSWORD.into(),
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    set_active(&app.db, &email, false);

    match login.await.unwrap() {
        Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        // Had it won the race, its session must have been ended with the others.
        Ok(response) => {
            let token = response.into_inner().tokens.unwrap().access_token;
            app.wait_for_validation(&token, InactiveReason::Revoked)
                .await;
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_says_not_serving_at_once_and_keeps_accepting_through_the_drain() {
    let drain = Duration::from_secs(2);
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.shutdown_drain = drain)
        .spawn()
        .await;
    let (_, tokens) = app.new_user().await;
    let addr = app.addr;

    let signalled = Instant::now();
    app.signal();
    app.wait_for_health(ServingStatus::NotServing).await;
    assert!(signalled.elapsed() < drain, "NOT_SERVING came late");
    // A load balancer that has not caught up yet still gets answers, on new connections.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("still accepting while draining");
    let mut client = authd::proto::auth::v1::auth_service_client::AuthServiceClient::new(channel);
    let answer = client
        .validate_token(authd::proto::auth::v1::ValidateTokenRequest {
            token: tokens.access_token.clone(),
        })
        .await
        .unwrap();
    assert!(answer.into_inner().active);
    drop(client);

    app.stopped().await;
    assert!(
        signalled.elapsed() >= drain,
        "stopped before the drain ended"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port closes once stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_drain_short() {
    let app = TestApp::builder(TestDb::fresh().await)
        .configure(|config| config.shutdown_drain = Duration::from_secs(600))
        .spawn()
        .await;
    app.signal();
    app.wait_for_health(ServingStatus::NotServing).await;
    let started = Instant::now();
    // The second signal.
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} after the second signal",
        started.elapsed()
    );
}
