//! Stops and restarts the database server itself while clients run. Ignored in the normal
//! (parallel) suite, because stopping the server breaks every other test using it;
//! `.ci/run` runs these alone: `cargo test --test api -- --ignored --test-threads=1`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sea_orm::DbBackend;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    helpers::{PASSWORD, TestApp, TestDb, assert_code, spawn_app_with, testing_sqlite},
    workload::{OnFailure, Workload},
};

/// Stops or starts the database server under test, as `.ci/run` does, and waits until
/// it is down or answers.
fn database_server(backend: DbBackend, action: &str) {
    let command = |program: &str, args: &[&str]| {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let (mut control, mut answers) = if backend == DbBackend::Postgres {
        let version = std::fs::read_dir("/etc/postgresql")
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        let version = version.to_string_lossy();
        (
            command(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &version, "main", action],
            ),
            command("pg_isready", &["-h", "127.0.0.1", "-p", "5432", "-q"]),
        )
    } else {
        let control = if action == "stop" {
            command("mysqladmin", &["-uroot", "-h127.0.0.1", "shutdown"])
        } else {
            let daemon = [
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ];
            command("start-stop-daemon", &daemon)
        };
        (
            control,
            command("mysqladmin", &["-uroot", "-h127.0.0.1", "ping"]),
        )
    };
    let succeeds = |command: &mut Command| command.status().is_ok_and(|s| s.success());
    assert!(
        succeeds(&mut control),
        "{action} of the database server failed"
    );
    let want_up = action == "start";
    for _ in 0..600 {
        if succeeds(&mut answers) == want_up {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the database server did not {action}");
}

async fn app_on_a_server() -> Option<(TestApp, DbBackend)> {
    if testing_sqlite() {
        eprintln!("skipped: needs AUTHD_TEST_DATABASE_URL to name a local database server");
        return None;
    }
    let db = TestDb::fresh().await;
    let backend = if db.url.starts_with("postgres") {
        DbBackend::Postgres
    } else {
        DbBackend::MySql
    };
    let app = spawn_app_with(db, |config| {
        config.database.acquire_timeout = Duration::from_secs(1)
    })
    .await;
    Some((app, backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the database server; run alone (see module docs)"]
async fn database_stopped_and_restarted_under_a_running_client() {
    let Some((app, backend)) = app_on_a_server().await else {
        return;
    };
    let (email, tokens) = app.new_user().await;

    database_server(backend, "stop");
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

    database_server(backend, "start");
    app.wait_for_health(ServingStatus::Serving).await;
    app.login(&email, PASSWORD).await.unwrap();
    assert!(app.validate(&tokens.access_token).await.unwrap().active);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the database server; run alone (see module docs)"]
async fn database_restarted_under_load_loses_nothing_acknowledged() {
    let Some((app, backend)) = app_on_a_server().await else {
        return;
    };
    let workload = Workload::start(&app.channel, "restart", 4, OnFailure::Continue);
    let progress = async |more: usize| {
        let target = workload.acknowledged() + more;
        for _ in 0..1200 {
            if workload.acknowledged() >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the clients made no progress");
    };
    progress(20).await;

    database_server(backend, "stop");
    app.wait_for_health(ServingStatus::NotServing).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    database_server(backend, "start");
    app.wait_for_health(ServingStatus::Serving).await;
    // Writes resume with no restart of authd.
    progress(20).await;

    let journal = workload.finish().await;
    let report = journal.verify(&app.db, &app.channel).await;
    eprintln!("database server restarted under load:\n{report}");
    app.stop().await;
}
