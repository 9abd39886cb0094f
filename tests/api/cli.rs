use std::{io::Write as _, process::Stdio};

use std::io::Read as _;

use crate::helpers::{
    AuthdProcess, PASSWORD, TestApp, TestDb, authd_bin, connect_authd, free_port,
};

// Commands run with the log filter they get by default (`authd_bin` sets a quiet one).
fn authd_cli() -> std::process::Command {
    let mut command = authd_bin();
    command.env_remove("AUTHD_LOG");
    command
}

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
fn a_closed_database_port_is_named_as_refused_at_once_without_the_password() {
    let closed = crate::helpers::free_port();
    for scheme in ["postgres", "mysql"] {
        for command in [&["migrate", "up"][..], &["serve"]] {
            let started = std::time::Instant::now();
            let output = authd_bin()
                .args(command)
                .env(
                    "AUTHD_DATABASE_URL",
                    format!("{scheme}://admin:hunter2@127.0.0.1:{closed}/authd"),
                )
                // Refused is known at once: not after waiting this out.
                .env("AUTHD_DB_ACQUIRE_TIMEOUT", "60s")
                .env("AUTHD_LISTEN", "127.0.0.1:0")
                .output()
                .unwrap();

            assert!(!output.status.success(), "{command:?}");
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                stderr.trim_end(),
                format!(
                    "error: AUTHD_DATABASE_URL: cannot open the {} database authd on \
                     127.0.0.1:{closed}: connection refused (is the server running, on \
                     that host and port?)",
                    if scheme == "mysql" {
                        "MySQL"
                    } else {
                        "PostgreSQL"
                    }
                ),
                "{command:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_database_that_will_not_open_says_why_once_in_the_chosen_format() {
    let db = TestDb::fresh().await;
    // A database the server does not have, or a SQLite file in a directory that is not.
    let (url, cause) = if db.is_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing").join("authd.db");
        (
            format!("sqlite://{}?mode=rwc", file.display()),
            format!(
                "the directory of {} ({}) does not exist",
                file.display(),
                file.parent().unwrap().display()
            ),
        )
    } else {
        let (base, _) = db.url.rsplit_once('/').unwrap();
        let cause = if db.url.starts_with("mysql") {
            "Unknown database 'authd_no_such_database'".to_owned()
        } else {
            "database \"authd_no_such_database\" does not exist".to_owned()
        };
        (format!("{base}/authd_no_such_database"), cause)
    };
    for format in ["pretty", "json"] {
        let output = authd_bin()
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &url)
            .env("AUTHD_LISTEN", "127.0.0.1:0")
            .env("AUTHD_LOG_FORMAT", format)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one message: {stderr}");
        let message = if format == "json" {
            let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
            assert_eq!(line["level"], "ERROR");
            line["error"].as_str().unwrap().to_owned()
        } else {
            lines[0].strip_prefix("error: ").unwrap().to_owned()
        };
        assert_eq!(message.matches(&cause).count(), 1, "{cause} once: {stderr}");
        assert!(message.starts_with("AUTHD_DATABASE_URL: "), "{stderr}");
    }
}

#[tokio::test]
async fn migrate_status_changes_nothing() {
    let db = TestDb::fresh().await;
    let sqlite_file = tempfile::tempdir().unwrap();
    let url = if db.is_sqlite() {
        format!(
            "sqlite://{}?mode=rwc",
            sqlite_file.path().join("new.db").display()
        )
    } else {
        db.url.clone()
    };
    let status = authd_bin()
        .args(["migrate", "status", "--database-url", &url])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let listing = String::from_utf8_lossy(&status.stdout);
    let all = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with("Pending\t"))
            .count(),
        all,
        "{listing}"
    );
    if db.is_sqlite() {
        assert!(
            std::fs::read_dir(sqlite_file.path())
                .unwrap()
                .next()
                .is_none(),
            "no file made"
        );
    } else {
        let conn = db.connect().await;
        let manager = migration::SchemaManager::new(&conn);
        assert!(!manager.has_table("seaql_migrations").await.unwrap());
    }
}

#[test]
fn the_version_names_the_commit() {
    let output = authd_bin().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        version.trim(),
        format!("authd {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn user_list_pages_and_filters_without_log_noise() {
    let db = TestDb::fresh().await;
    for (email, role) in [
        ("ann@example.com", "user"),
        ("bob@example.com", "admin"),
        ("Cid@Example.com", "user"),
    ] {
        let created = create_user(&db, email, role, PASSWORD);
        assert!(created.status.success(), "{created:?}");
        assert!(created.stderr.is_empty(), "no log lines: {created:?}");
    }
    let list = |args: &[&str]| {
        let output = authd_cli()
            .args(["user", "list", "--database-url", &db.url])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let emails: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split('\t').nth(1).unwrap().to_owned())
            .collect();
        (emails, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (all, _) = list(&[]);
    assert_eq!(
        all,
        ["ann@example.com", "bob@example.com", "cid@example.com"]
    );
    let (first, more) = list(&["--limit", "2"]);
    assert_eq!(first, ["ann@example.com", "bob@example.com"]);
    let after = more
        .trim()
        .strip_prefix("more users: add --after ")
        .unwrap();
    let (rest, none) = list(&["--limit", "2", "--after", after]);
    assert_eq!(rest, ["cid@example.com"]);
    assert!(none.is_empty(), "{none}");
    assert_eq!(
        list(&["--role", "user"]).0,
        ["ann@example.com", "cid@example.com"]
    );
    assert_eq!(list(&["--query", "B"]).0, ["bob@example.com"]);
    let deactivated = crate::helpers::set_active(&db, "CID@example.com", false);
    assert_eq!(
        String::from_utf8_lossy(&deactivated.stdout).trim(),
        "deactivated cid@example.com; sessions ended: 0"
    );
    assert_eq!(list(&["--active", "false"]).0, ["cid@example.com"]);
}

fn create_user(db: &TestDb, email: &str, role: &str, password: &str) -> std::process::Output {
    let mut child = authd_cli()
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

#[tokio::test]
async fn every_secret_setting_can_come_from_a_file() {
    use sha2::{Digest as _, Sha256};

    let db = TestDb::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        // With the line ending `echo` leaves, which is not part of the secret.
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path.display().to_string()
    };
    let secret = "a shared HS256 secret, forty bytes or more";
    let api_key = "validate-caller-key";
    let digest = hex::encode(Sha256::digest(api_key));
    let url_file = write("url", &db.url);
    let secret_file = write("secret", secret);
    let keys_file = write("keys", &digest);
    let port = crate::helpers::free_port();
    let child = authd_bin()
        .arg("serve")
        .env("AUTHD_DATABASE_URL_FILE", &url_file)
        .env("AUTHD_JWT_ALGORITHM", "HS256")
        .env("AUTHD_JWT_SECRET_FILE", &secret_file)
        .env("AUTHD_VALIDATE_API_KEYS_FILE", &keys_file)
        .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = crate::helpers::AuthdProcess(child);
    let channel = crate::helpers::connect_authd(port).await;
    let mut client = authd::proto::auth::v1::auth_service_client::AuthServiceClient::new(channel);
    let tokens = client
        .register(authd::proto::auth::v1::RegisterRequest {
            email: "files@example.com".to_owned(),
            password: PASSWORD.to_owned(),
            name: "Files".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();

    // Signed with the file's secret, not a generated one.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["authd"]);
    jsonwebtoken::decode::<serde_json::Value>(
        &tokens.access_token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap();
    // The database is the file's: the user is there.
    assert_eq!(
        crate::helpers::audit_rows(&db).await[0].0,
        "register".to_owned()
    );
    // ValidateToken takes the file's key, and only a key.
    let validate = |key: Option<&str>| {
        let mut request = tonic::Request::new(authd::proto::auth::v1::ValidateTokenRequest {
            token: tokens.access_token.clone(),
        });
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("x-api-key", key.parse().unwrap());
        }
        let mut client = client.clone();
        async move { client.validate_token(request).await }
    };
    assert!(validate(Some(api_key)).await.unwrap().into_inner().active);
    assert_eq!(
        validate(None).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    server.kill();
}

#[test]
fn a_secret_and_its_file_together_are_refused() {
    let output = authd_bin()
        .arg("serve")
        .env(
            "AUTHD_JWT_SECRET",
            "s3cret-value-that-must-not-be-echoed-0123",
        )
        .env("AUTHD_JWT_SECRET_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTHD_JWT_SECRET_FILE"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test]
async fn serve_on_postgresql_says_nothing_of_tables_that_already_exist() {
    let db = TestDb::fresh().await;
    if !db.url.starts_with("postgres") {
        return;
    }
    // The second start finds every table made by the first.
    for start in ["first", "second"] {
        let port = free_port();
        let mut child = authd_cli()
            .arg("serve")
            .env("AUTHD_DATABASE_URL", &db.url)
            .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHD_SHUTDOWN_DRAIN", "0s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let server = AuthdProcess(child);
        connect_authd(port).await;
        let exited = tokio::task::spawn_blocking(move || server.terminate())
            .await
            .unwrap();
        assert!(exited.success(), "{exited:?}");
        let mut logged = String::new();
        stderr.read_to_string(&mut logged).unwrap();
        assert!(
            logged.contains("authd listening"),
            "{start} start: {logged}"
        );
        assert!(
            !logged.contains("already exists"),
            "{start} start: {logged}"
        );
    }
}
