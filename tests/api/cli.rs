use std::{io::Write as _, process::Stdio};

use crate::helpers::{PASSWORD, TestApp, TestDb, authd_bin};

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let output = authd_bin()
        .arg("serve")
        .env("AUTHD_ACCESS_TTL", "fifteen")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTHD_ACCESS_TTL"), "{stderr}");
    assert!(stderr.contains("duration"), "{stderr}");
}

#[test]
fn a_bad_database_url_is_named_without_echoing_its_password() {
    let output = authd_bin()
        .args(["migrate", "status"])
        .env("AUTHD_DATABASE_URL", "redis://admin:hunter2@localhost/0")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTHD_DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_database_that_will_not_open_is_named_by_its_setting_without_its_password() {
    let closed = crate::helpers::free_port();
    for command in [&["migrate", "up"][..], &["serve"]] {
        let output = authd_bin()
            .args(command)
            .env(
                "AUTHD_DATABASE_URL",
                format!("postgres://admin:hunter2@127.0.0.1:{closed}/authd"),
            )
            .env("AUTHD_DB_ACQUIRE_TIMEOUT", "1s")
            .env("AUTHD_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();

        assert!(!output.status.success(), "{command:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("AUTHD_DATABASE_URL: cannot open the postgres database"),
            "{command:?}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

fn create_user(db: &TestDb, email: &str, role: &str, password: &str) -> std::process::Output {
    let mut child = authd_bin()
        .args([
            "user",
            "create",
            "--email",
            email,
            "--name",
            "Admin",
            "--role",
            role,
            "--database-url",
            &db.url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn user_create_reads_the_password_from_stdin_and_sets_the_role() {
    let db = TestDb::fresh().await;

    let output = create_user(&db, "root@example.com", "admin", PASSWORD);

    assert!(output.status.success(), "{output:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains(PASSWORD));
    let app = TestApp::builder(db).spawn().await;
    let user = app
        .login("root@example.com", PASSWORD)
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(user.role, "admin");
    app.stop().await;
}

#[tokio::test]
async fn user_create_refuses_a_weak_password_and_a_taken_email() {
    let db = TestDb::fresh().await;

    let weak = create_user(&db, "weak@example.com", "user", "short");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password must be at least"));

    assert!(
        create_user(&db, "taken@example.com", "user", PASSWORD)
            .status
            .success()
    );
    let taken = create_user(&db, "TAKEN@example.com", "user", PASSWORD);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));
}

#[tokio::test]
async fn migrate_up_then_status_lists_every_migration_as_applied() {
    let db = TestDb::fresh().await;

    let up = authd_bin()
        .args(["migrate", "up", "--database-url", &db.url])
        .output()
        .unwrap();
    let status = authd_bin()
        .args(["migrate", "status", "--database-url", &db.url])
        .output()
        .unwrap();

    assert!(up.status.success(), "{up:?}");
    let listing = String::from_utf8_lossy(&status.stdout);
    let all = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("Applied")).count(),
        all,
        "{listing}"
    );
}

#[tokio::test]
async fn healthcheck_exits_zero_only_when_the_server_is_serving() {
    let app = TestApp::builder(TestDb::fresh().await).spawn().await;
    let addr = app.addr.to_string();

    let serving = tokio::task::spawn_blocking(move || {
        authd_bin()
            .args(["healthcheck", "--listen", &addr])
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(serving.status.success(), "{serving:?}");
    assert!(String::from_utf8_lossy(&serving.stdout).contains("SERVING"));
    let addr = app.addr.to_string();
    app.stop().await;
    let down = tokio::task::spawn_blocking(move || {
        authd_bin()
            .args(["healthcheck", "--listen", &addr, "--timeout", "1s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!down.status.success());
}

#[test]
fn a_short_hs256_secret_stops_start_up_without_echoing_it() {
    let output = authd_bin()
        .arg("serve")
        .env("AUTHD_JWT_ALGORITHM", "HS256")
        .env("AUTHD_JWT_SECRET", "only-twenty-bytes-xx")
        .env("AUTHD_DATABASE_URL", "sqlite::memory:")
        .env("AUTHD_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AUTHD_JWT_SECRET") && stderr.contains("32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("only-twenty-bytes-xx"), "{stderr}");
}

#[test]
fn settings_out_of_bounds_stop_start_up_naming_the_variable() {
    let dir = tempfile::TempDir::new().unwrap();
    let database = dir.path().join("never.db");
    let serve = |settings: &[(&str, &str)]| {
        authd_bin()
            .arg("serve")
            .env("AUTHD_LISTEN", "127.0.0.1:0")
            .env(
                "AUTHD_DATABASE_URL",
                format!("sqlite://{}?mode=rwc", database.display()),
            )
            .envs(settings.iter().copied())
            .output()
            .unwrap()
    };
    for (variable, value, expected) in [
        // Intervals: zero would spin or panic a timer.
        ("AUTHD_REVOCATION_SYNC", "0s", "from 10ms"),
        ("AUTHD_HEALTH_PROBE_INTERVAL", "0s", "from 10ms"),
        ("AUTHD_KEY_RELOAD_INTERVAL", "0s", "from 1s"),
        ("AUTHD_REQUEST_TIMEOUT", "0s", "from 100ms"),
        // Lifetimes: zero means nothing, and centuries overflow dates and timestamps.
        ("AUTHD_ACCESS_TTL", "0s", "from 1s"),
        ("AUTHD_REFRESH_TTL", "100000000d", "to 9years"),
        ("AUTHD_SESSION_MAX_AGE", "300years", "to 9years"),
        // Numbers: zero refuses everything; huge ones are typos.
        ("AUTHD_MAX_MESSAGE_BYTES", "0", "from 1024"),
        ("AUTHD_MAX_CONCURRENT_STREAMS", "0", "from 1"),
        (
            "AUTHD_HASH_QUEUE",
            "99999999999999999999",
            "from 0 to 100000",
        ),
        ("AUTHD_ARGON2_ITERATIONS", "1", "from 2"),
        ("AUTHD_DB_MAX_CONNECTIONS", "0", "from 1"),
        // Settings that only make sense together.
        (
            "AUTHD_LOGIN_THROTTLE_MAX_WINDOW",
            "10s",
            "AUTHD_LOGIN_THROTTLE_WINDOW",
        ),
        ("AUTHD_KEY_ROTATION", "90s", "AUTHD_KEY_RELOAD_INTERVAL"),
    ] {
        let output = serve(&[(variable, value)]);
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
        assert!(stderr.contains(expected), "{variable}={value}: {stderr}");
    }
    // Each fine alone, too much together: 8 workers of 4 GiB each.
    let output = serve(&[
        ("AUTHD_HASH_WORKERS", "8"),
        ("AUTHD_ARGON2_MEMORY_KIB", "4194304"),
    ]);
    assert!(
        !output.status.success(),
        "32 GiB of hash memory was accepted"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AUTHD_ARGON2_MEMORY_KIB × AUTHD_HASH_WORKERS: expected at most 16 GiB"),
        "{stderr}"
    );
    assert!(!database.exists(), "a bad setting touched the database");
}
