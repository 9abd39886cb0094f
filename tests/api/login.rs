use tonic::Code;

use crate::helpers::{PASSWORD, assert_code, set_active, spawn_app};

#[tokio::test]
async fn login_starts_a_new_session_in_any_letter_case() {
    let app = spawn_app().await;
    let (email, registered) = app.new_user().await;

    let response = app.login(&email.to_uppercase(), PASSWORD).await.unwrap();

    let tokens = response.tokens.unwrap();
    assert_eq!(response.user.unwrap().email, email);
    assert_ne!(tokens.refresh_token, registered.refresh_token);
    let first = app.validate(&registered.access_token).await.unwrap();
    let second = app.validate(&tokens.access_token).await.unwrap();
    assert!(first.active && second.active);
    assert_ne!(
        first.session_id, second.session_id,
        "each login is its own session"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;

    let wrong_password = assert_code(
        app.login(&email, "not the password at all").await,
        Code::Unauthenticated,
    );
    let unknown_email = assert_code(
        app.login("nobody@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );

    assert_eq!(wrong_password.message(), unknown_email.message());
    assert_eq!(wrong_password.details(), unknown_email.details());
    assert_eq!(wrong_password.message(), "invalid email or password");
    app.stop().await;
}

#[tokio::test]
async fn login_with_an_empty_password_or_bad_email_is_invalid_argument() {
    let app = spawn_app().await;
    assert_code(app.login("a@example.com", "").await, Code::InvalidArgument);
    assert_code(
        app.login("not an email", PASSWORD).await,
        Code::InvalidArgument,
    );
    assert_code(
        app.login("a@example.com", &"x".repeat(1025)).await,
        Code::InvalidArgument,
    );
    app.stop().await;
}

#[tokio::test]
async fn deactivated_account_is_permission_denied_only_with_the_right_password() {
    let app = spawn_app().await;
    let (email, _) = app.new_user().await;
    set_active(&app.db, &email, false);

    assert_code(app.login(&email, PASSWORD).await, Code::PermissionDenied);
    assert_code(
        app.login(&email, "not the password at all").await,
        Code::Unauthenticated,
    );

    set_active(&app.db, &email, true);
    app.login(&email, PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hash_queue_is_resource_exhausted_at_once_with_retry_info() {
    use std::num::NonZeroUsize;

    use tonic_types::StatusExt as _;

    let app = crate::helpers::TestApp::builder(crate::helpers::TestDb::fresh().await)
        .configure(|config| {
            config.hashing.workers = NonZeroUsize::new(1);
            config.hashing.queue = 0;
        })
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    let results = app.logins_at_once(&email, PASSWORD, 12).await;

    assert!(results.iter().any(Result::is_ok), "some logins get through");
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !refused.is_empty(),
        "one worker and no queue cannot take 12 logins at once"
    );
    for status in refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status
            .get_details_retry_info()
            .expect("google.rpc.RetryInfo");
        assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_hash_weaker_than_configured_is_upgraded_at_the_next_login() {
    use sea_orm::{ConnectionTrait as _, Statement};

    let db = crate::helpers::TestDb::fresh().await;
    let app = crate::helpers::TestApp::builder(db.clone()).spawn().await;
    let (email, _) = app.new_user().await;
    app.stop().await;
    let stored_hash = || async {
        let conn = sea_orm::Database::connect(&db.url).await.unwrap();
        let sql = format!("SELECT password_hash FROM users WHERE email = '{email}'");
        let row = conn
            .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        let hash: String = row.try_get("", "password_hash").unwrap();
        conn.close().await.unwrap();
        hash
    };
    assert!(stored_hash().await.contains("m=19456,t=2,p=1"));

    let app = crate::helpers::TestApp::builder(db.clone())
        .configure(|config| {
            config.hashing.memory_kib = 32_768;
            config.hashing.iterations = 3;
        })
        .spawn()
        .await;
    app.login(&email, PASSWORD).await.unwrap();

    assert!(stored_hash().await.contains("m=32768,t=3,p=1"));
    app.login(&email, PASSWORD).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_take_the_same_median_time() {
    use std::time::{Duration, Instant};

    let app = crate::helpers::TestApp::builder(crate::helpers::TestDb::fresh().await)
        .configure(|config| {
            config.login.max_failures = 100;
        })
        .spawn()
        .await;
    let (email, _) = app.new_user().await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    // Both emails go through the same throttle bookkeeping, so only the password check
    // differs between them. Interleaved, and alternating which goes first, so neither
    // load drift nor position favours a side.
    for i in 0..41 {
        for known_turn in [i % 2 == 0, i % 2 == 1] {
            let (target, samples) = if known_turn {
                (email.as_str(), &mut known)
            } else {
                ("nobody@example.com", &mut unknown)
            };
            let started = Instant::now();
            assert_code(
                app.login(target, "not the password at all").await,
                Code::Unauthenticated,
            );
            samples.push(started.elapsed());
        }
    }

    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64()
    };
    let (known, unknown) = (median(&mut known), median(&mut unknown));
    let ratio = known / unknown;
    // Both paths run one full argon2 verification; without the dummy hash the unknown
    // email would answer in well under a tenth of the time. The bounds leave room for a
    // shared machine running other tests at once.
    assert!(
        (0.67..1.5).contains(&ratio),
        "median known {known:.4}s vs unknown {unknown:.4}s"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_whole_password_is_verified_however_long() {
    let app = spawn_app().await;
    // Far past bcrypt's 72-byte limit: a difference in the last character must count.
    let long = format!("{} tail", "correct horse battery staple ".repeat(8));
    let mut almost = long.clone();
    almost.pop();
    almost.push('X');
    app.register("long@example.com", &long, "Long")
        .await
        .unwrap();

    assert_code(
        app.login("long@example.com", &almost).await,
        Code::Unauthenticated,
    );

    app.login("long@example.com", &long).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_hash_cost_is_raised_a_dormant_account_and_an_unknown_email_take_the_same_time() {
    use std::time::{Duration, Instant};

    let db = crate::helpers::TestDb::fresh().await;
    let app = crate::helpers::TestApp::builder(db.clone()).spawn().await;
    let (email, _) = app.new_user().await;
    app.stop().await;
    // The operator raises the cost fourfold; this account has not logged in since, so its
    // hash is still at the old cost while the dummy hash is at the new one.
    let app = crate::helpers::TestApp::builder(db)
        .configure(|config| {
            config.login.max_failures = 100;
            config.hashing.iterations = 8;
        })
        .spawn()
        .await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..21 {
        for known_turn in [i % 2 == 0, i % 2 == 1] {
            let (target, samples) = if known_turn {
                (email.as_str(), &mut known)
            } else {
                ("nobody@example.com", &mut unknown)
            };
            let started = Instant::now();
            assert_code(
                app.login(target, "not the password at all").await,
                Code::Unauthenticated,
            );
            samples.push(started.elapsed());
        }
    }

    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64()
    };
    let (known, unknown) = (median(&mut known), median(&mut unknown));
    let ratio = known / unknown;
    // Unpadded, the dormant account answers in about a quarter of the time.
    assert!(
        (0.67..1.5).contains(&ratio),
        "median known {known:.4}s vs unknown {unknown:.4}s"
    );
    app.stop().await;
}
