use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::helpers::{PASSWORD, TestApp, TestDb, assert_code};

const WRONG: &str = "definitely not the password";

/// Ten failures allowed; then a first wait of `window`. Tests that do not wait it out use
/// a long one, so a slow machine cannot see it expire mid-test.
async fn throttled_app(window: Duration) -> TestApp {
    TestApp::builder(TestDb::fresh().await)
        .configure(|config| {
            config.login.max_failures = 10;
            config.login.window = window;
        })
        .spawn()
        .await
}

const LONG: Duration = Duration::from_secs(60);

fn retry_delay(status: &Status) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("google.rpc.RetryInfo with a delay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parallel_wrong_passwords_never_get_past_the_limit() {
    let app = throttled_app(LONG).await;
    let (email, _) = app.new_user().await;
    let results = app.logins_at_once(&email, WRONG, 200).await;

    let checked = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
        .count();
    let throttled: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    assert_eq!(
        checked, 10,
        "exactly the allowed number of passwords were checked"
    );
    assert_eq!(throttled.len(), 190);
    assert!(throttled.iter().all(|s| retry_delay(s) > Duration::ZERO));
    app.stop().await;
}

#[tokio::test]
async fn a_throttled_answer_does_not_tell_whether_the_password_was_right() {
    let app = throttled_app(LONG).await;
    let (email, _) = app.new_user().await;
    for _ in 0..10 {
        assert_code(app.login(&email, WRONG).await, Code::Unauthenticated);
    }

    let right = assert_code(app.login(&email, PASSWORD).await, Code::ResourceExhausted);
    let wrong = assert_code(app.login(&email, WRONG).await, Code::ResourceExhausted);

    assert_eq!(right.message(), wrong.message());
    app.stop().await;
}

#[tokio::test]
async fn unknown_emails_are_throttled_exactly_like_real_ones() {
    let app = throttled_app(LONG).await;
    let (email, _) = app.new_user().await;
    for candidate in [email.as_str(), "nobody@example.com"] {
        for _ in 0..10 {
            assert_code(app.login(candidate, WRONG).await, Code::Unauthenticated);
        }
    }

    let known = assert_code(app.login(&email, WRONG).await, Code::ResourceExhausted);
    let unknown = assert_code(
        app.login("NOBODY@example.com", WRONG).await,
        Code::ResourceExhausted,
    );

    assert_eq!(known.message(), unknown.message());
    app.stop().await;
}

#[tokio::test]
async fn the_wait_grows_with_further_failures_and_a_success_resets_it() {
    let app = throttled_app(Duration::from_secs(3)).await;
    let (email, _) = app.new_user().await;
    for _ in 0..10 {
        assert_code(app.login(&email, WRONG).await, Code::Unauthenticated);
    }
    let first = retry_delay(&assert_code(
        app.login(&email, WRONG).await,
        Code::ResourceExhausted,
    ));
    assert!(first <= Duration::from_secs(3), "{first:?}");

    // After the wait one more attempt is checked, and the next wait is longer.
    app.advance(first + Duration::from_millis(100)).await;
    assert_code(app.login(&email, WRONG).await, Code::Unauthenticated);
    let second = retry_delay(&assert_code(
        app.login(&email, WRONG).await,
        Code::ResourceExhausted,
    ));
    assert!(second > first, "{second:?} should exceed {first:?}");

    // The right password after the wait logs in and clears the counter.
    app.advance(second + Duration::from_millis(100)).await;
    app.login(&email, PASSWORD).await.unwrap();
    for _ in 0..9 {
        assert_code(app.login(&email, WRONG).await, Code::Unauthenticated);
    }
    app.stop().await;
}

/// An account's first login attempts arriving together race to create its throttle
/// counter; none of them may be mistaken for a throttled attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_logins_are_all_admitted() {
    let app = throttled_app(LONG).await;
    for _ in 0..5 {
        let (email, _) = app.new_user().await;
        for result in app.logins_at_once(&email, PASSWORD, 8).await {
            assert!(result.is_ok(), "a first login was refused: {result:?}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_accented_variant_of_an_email_never_opens_the_account_nor_escapes_its_throttle() {
    let app = throttled_app(Duration::from_secs(600)).await;
    let (alice, variant) = ("alice@example.com", "\u{00E1}lice@example.com");
    app.register(alice, PASSWORD, "Alice").await.unwrap();

    // A different address, whatever the database's collation thinks of accents.
    assert_code(app.login(variant, PASSWORD).await, Code::Unauthenticated);
    // Alice's failure budget runs out; the variant is no way around it.
    for _ in 0..10 {
        assert_code(app.login(alice, WRONG).await, Code::Unauthenticated);
    }
    assert_code(app.login(alice, PASSWORD).await, Code::ResourceExhausted);
    assert_code(app.login(variant, PASSWORD).await, Code::Unauthenticated);
    app.stop().await;
}
