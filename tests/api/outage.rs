//! Stops and restarts the database server itself while clients run. Ignored in the normal
//! (parallel) suite, because stopping the server breaks every other test using it;
//! `.ci/run` runs these alone: `cargo test --test api -- --ignored --test-threads=1`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    helpers::{PASSWORD, TestApp, TestDb, assert_code, testing_sqlite},
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
    let app = TestApp::builder(db)
        .configure(|config| config.database.acquire_timeout = Duration::from_secs(1))
        .spawn()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "holds every commit of the MariaDB server; run alone (see module docs)"]
async fn a_commit_cut_off_by_a_killed_connection_is_unavailable_and_later_writes_are_kept() {
    if testing_sqlite() {
        eprintln!("skipped: needs AUTHD_TEST_DATABASE_URL to name a local database server");
        return;
    }
    let db = TestDb::fresh().await;
    let backend = if db.url.starts_with("postgres") {
        DbBackend::Postgres
    } else {
        DbBackend::MySql
    };
    // MariaDB holds every commit on the server: the health probe's write must not be
    // the one found committing (and killed) instead of the Register's.
    let app = TestApp::builder(db)
        .configure(|config| {
            config.database.acquire_timeout = Duration::from_secs(1);
            config.health_probe_interval = Duration::from_secs(3600);
        })
        .spawn()
        .await;
    // One session: MariaDB's backup stages belong to the session that takes them.
    let mut options = sea_orm::ConnectOptions::new(app.db.url.clone());
    options.max_connections(1);
    let admin = sea_orm::Database::connect(options).await.unwrap();
    let database = app.db.name();
    // Hold the COMMIT: PostgreSQL by a deferred trigger that sleeps, MariaDB by blocking
    // every commit on the server.
    let hold = if backend == DbBackend::Postgres {
        vec![
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$",
            "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON users \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.email LIKE 'held-%') EXECUTE FUNCTION slow_commit()",
        ]
    } else {
        vec!["BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"]
    };
    for statement in hold {
        admin.execute_unprepared(statement).await.unwrap();
    }

    let held = tokio::spawn({
        let app_client = app.client.clone();
        async move {
            let mut client = app_client;
            client
                .register(authd::proto::auth::v1::RegisterRequest {
                    email: "held-commit@example.com".into(),
                    password: PASSWORD.into(),
                    name: "Held".into(),
                })
                .await
        }
    });
    // Wait for its COMMIT to hang, then kill the connection it runs on.
    let committing = if backend == DbBackend::Postgres {
        format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{database}' \
             AND state = 'active' AND query = 'COMMIT'"
        )
    } else {
        format!(
            "SELECT id FROM information_schema.processlist \
             WHERE db = '{database}' AND info = 'COMMIT'"
        )
    };
    let mut victims = Vec::new();
    for _ in 0..400 {
        let rows = admin
            .query_all_raw(Statement::from_string(backend, committing.clone()))
            .await
            .unwrap();
        victims = rows
            .iter()
            .map(|row| {
                if backend == DbBackend::Postgres {
                    i64::from(row.try_get_by_index::<i32>(0).unwrap())
                } else {
                    row.try_get_by_index::<i64>(0).unwrap()
                }
            })
            .collect();
        if !victims.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!victims.is_empty(), "the Register never reached its COMMIT");
    for &victim in &victims {
        let kill = if backend == DbBackend::Postgres {
            format!("SELECT pg_terminate_backend({victim})")
        } else {
            format!("KILL CONNECTION {victim}")
        };
        admin.execute_unprepared(&kill).await.unwrap();
    }
    if backend != DbBackend::Postgres {
        // KILL only flags the thread: lifting the block before it has gone would let the
        // held COMMIT win the race and complete.
        let list = victims
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let alive = format!("SELECT id FROM information_schema.processlist WHERE id IN ({list})");
        let mut gone = false;
        for _ in 0..400 {
            let rows = admin
                .query_all_raw(Statement::from_string(backend, alive.clone()))
                .await
                .unwrap();
            if rows.is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(gone, "the killed connection never went away");
        admin.execute_unprepared("BACKUP STAGE END").await.unwrap();
    }

    assert_code(held.await.unwrap(), Code::Unavailable);
    // The next writes go through on a fresh connection and are kept; the held one is not.
    let (email, tokens) = app.new_user().await;
    app.rotate(&tokens.refresh_token).await;
    let stored: Vec<String> = admin
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT email FROM users ORDER BY email",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index(0).unwrap())
        .collect();
    assert_eq!(stored, vec![email]);
    admin.close().await.unwrap();
    app.stop().await;
}
