//! Stops and restarts the PostgreSQL server itself while a client runs. Ignored in the
//! normal (parallel) suite, because stopping the server breaks every other test using it;
//! `.ci/run` runs it alone: `cargo test --test api -- --ignored --test-threads=1`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{PASSWORD, TestDb, assert_code, spawn_app_with};

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let status = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version.to_string_lossy(),
            "main",
            action,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctlcluster {action} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the PostgreSQL server; run alone (see module docs)"]
async fn postgres_stopped_and_restarted_under_a_running_client() {
    let db = TestDb::fresh().await;
    if !db.url.starts_with("postgres") {
        eprintln!("skipped: needs AUTHD_TEST_DATABASE_URL to name the local PostgreSQL server");
        return;
    }
    let app = spawn_app_with(db, |config| {
        config.database.acquire_timeout = Duration::from_secs(1)
    })
    .await;
    let (email, tokens) = app.new_user().await;

    pg_ctl("stop");
    app.wait_for_health(ServingStatus::NotServing).await;
    let started = Instant::now();
    assert_code(app.login(&email, PASSWORD).await, Code::Unavailable);
    assert_code(
        app.get_me(Some(&tokens.access_token)).await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "calls hung while the database was down"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Fail closed: without fresh revocation data an otherwise valid token is not vouched for.
    assert_code(app.validate(&tokens.access_token).await, Code::Unavailable);

    pg_ctl("start");
    app.wait_for_health(ServingStatus::Serving).await;
    app.login(&email, PASSWORD).await.unwrap();
    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    app.stop().await;
}
