//! Upgrades keep everything: a database made by an earlier release of authd, migrated by
//! this one, still holds every user, session and token, each working as it did.
//!
//! `tests/fixtures/upgrade/<commit>.db` is a SQLite database made by that commit's
//! `authd serve`, and `<commit>.json` what its clients were handed. To make one for a new
//! release, build that release's binary and run
//! `AUTHD_UPGRADE_FROM=path/to/authd AUTHD_UPGRADE_NAME=<commit> cargo test --test api upgrade::write_fixture -- --ignored`.

use std::path::PathBuf;

use authd::proto::auth::v1::{
    self as pb, InactiveReason, admin_service_client::AdminServiceClient,
    auth_service_client::AuthServiceClient,
};
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tonic::Code;

use crate::helpers::{
    PASSWORD, TestApp, TestDb, assert_code, connect_authd, free_port, testing_sqlite, with_bearer,
};

/// Token lifetimes long enough that the fixture's tokens outlive the tests.
const SETTINGS: [(&str, &str); 3] = [
    ("AUTHD_ACCESS_TTL", "3650d"),
    ("AUTHD_REFRESH_TTL", "3650d"),
    ("AUTHD_SESSION_MAX_AGE", "3650d"),
];

/// What the earlier release's clients were handed.
#[derive(Debug, Serialize, Deserialize)]
struct Handed {
    /// Logs in; its session was refreshed once.
    alice: String,
    alice_access: String,
    alice_refresh: String,
    alice_spent_refresh: String,
    /// Logged out.
    bob: String,
    bob_access: String,
    bob_refresh: String,
    /// Deactivated from the command line.
    carol: String,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// The releases there are fixtures of.
fn releases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            (path.extension()? == "db").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_made_by_earlier_releases_are_migrated_with_every_user_session_and_token() {
    if !testing_sqlite() {
        eprintln!("skipped: the earlier releases' databases are SQLite files");
        return;
    }
    let releases = releases();
    assert!(
        !releases.is_empty(),
        "no fixtures in {}",
        fixtures().display()
    );
    for release in releases {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("authd.db");
        std::fs::copy(fixtures().join(format!("{release}.db")), &file).unwrap();
        let handed: Handed = serde_json::from_slice(
            &std::fs::read(fixtures().join(format!("{release}.json"))).unwrap(),
        )
        .unwrap();
        let key = "upgrade-admin-key";
        let app = TestApp::builder(TestDb::sqlite_at(&file))
            .configure(|config| {
                let days = std::time::Duration::from_secs(3650 * 86_400);
                config.tokens.access_ttl = days;
                config.tokens.refresh_ttl = days;
                config.tokens.session_max_age = days;
                config.admin_api_keys = vec![Sha256::digest(key).into()];
            })
            .spawn()
            .await;

        // Users from before the name search existed are found by name.
        let mut request = tonic::Request::new(pb::ListUsersRequest {
            query: "UPGR".into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        let found = AdminServiceClient::new(app.channel.clone())
            .list_users(request)
            .await
            .unwrap()
            .into_inner()
            .users;
        let mut emails: Vec<&str> = found.iter().map(|u| u.email.as_str()).collect();
        emails.sort_unstable();
        assert_eq!(
            emails,
            [&handed.alice, &handed.bob, &handed.carol],
            "{release}"
        );

        // Accounts and passwords.
        app.login(&handed.alice, PASSWORD).await.unwrap();
        app.login(&handed.bob, PASSWORD).await.unwrap();
        assert_code(
            app.login(&handed.carol, PASSWORD).await,
            Code::PermissionDenied,
        );
        // A live session: its access token and its refresh token.
        let validated = app.validate(&handed.alice_access).await.unwrap();
        assert!(validated.active, "{release}: alice's access token");
        assert_eq!(validated.email, handed.alice);
        let me = app.get_me(Some(&handed.alice_access)).await.unwrap();
        assert_eq!(me.email, handed.alice);
        let rotated = app.rotate(&handed.alice_refresh).await;
        // A logged-out session stays out.
        let bob = app.validate(&handed.bob_access).await.unwrap();
        assert_eq!(
            (bob.active, bob.reason()),
            (false, InactiveReason::Revoked),
            "{release}: bob's access token"
        );
        assert_code(
            app.refresh(&handed.bob_refresh).await,
            Code::Unauthenticated,
        );
        // A token spent before the upgrade is still known as spent: presenting it is reuse.
        assert_code(
            app.refresh(&handed.alice_spent_refresh).await,
            Code::Unauthenticated,
        );
        assert_code(
            app.refresh(&rotated.refresh_token).await,
            Code::Unauthenticated,
        );
        app.stop().await;
    }
}

/// Writes a fixture with the binary AUTHD_UPGRADE_FROM names (see the module docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "makes a fixture from an earlier release's binary; see the module docs"]
async fn write_fixture() {
    let (Ok(binary), Ok(name)) = (
        std::env::var("AUTHD_UPGRADE_FROM"),
        std::env::var("AUTHD_UPGRADE_NAME"),
    ) else {
        eprintln!("skipped: set AUTHD_UPGRADE_FROM and AUTHD_UPGRADE_NAME");
        return;
    };
    let file = fixtures().join(format!("{name}.db"));
    assert!(!file.exists(), "{} exists", file.display());
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let port = free_port();
    let mut server = std::process::Command::new(&binary)
        .arg("serve")
        .env("AUTHD_DATABASE_URL", &url)
        .env("AUTHD_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHD_LOG", "warn")
        .envs(SETTINGS)
        .spawn()
        .unwrap();
    let channel = connect_authd(port).await;
    let mut api = AuthServiceClient::new(channel);
    let mut register = async |email: &str| {
        api.register(pb::RegisterRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            name: "Upgrade".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
    };
    let alice = register("alice@example.com").await;
    let bob = register("bob@example.com").await;
    register("carol@example.com").await;
    let mut api = AuthServiceClient::new(connect_authd(port).await);
    let refreshed = api
        .refresh(pb::RefreshRequest {
            refresh_token: alice.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    api.logout(with_bearer(
        pb::LogoutRequest {
            refresh_token: String::new(),
            all_sessions: false,
        },
        Some(&bob.access_token),
    ))
    .await
    .unwrap();
    // SIGTERM: a graceful stop, as an operator upgrading would.
    let stopped = std::process::Command::new("kill")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success() && server.wait().unwrap().success());
    let deactivated = std::process::Command::new(&binary)
        .args(["user", "set-active", "carol@example.com", "false"])
        .env("AUTHD_DATABASE_URL", &url)
        .status()
        .unwrap();
    assert!(deactivated.success());
    assert!(
        !file.with_extension("db-wal").exists(),
        "the write-ahead log was not folded into the file"
    );
    let handed = Handed {
        alice: "alice@example.com".into(),
        alice_access: refreshed.access_token,
        alice_refresh: refreshed.refresh_token,
        alice_spent_refresh: alice.refresh_token,
        bob: "bob@example.com".into(),
        bob_access: bob.access_token,
        bob_refresh: bob.refresh_token,
        carol: "carol@example.com".into(),
    };
    std::fs::write(
        fixtures().join(format!("{name}.json")),
        serde_json::to_vec_pretty(&handed).unwrap(),
    )
    .unwrap();
}

/// An email an earlier release stored decomposed ("e" + U+0301) is rewritten in NFC, the
/// spelling every lookup now uses, so its owner still logs in; one whose NFC spelling
/// another account already holds is kept as it was, and so is that other account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_stored_decomposed_are_migrated_to_nfc_without_merging_accounts() {
    let db = TestDb::fresh().await;
    let app = TestApp::builder(db.clone()).spawn().await;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let composed = |name: &str| format!("{name}-\u{e9}-{run}@example.com");
    let decomposed = |name: &str| format!("{name}-e\u{301}-{run}@example.com");
    for name in ["rene", "collides", "holder"] {
        app.register(&composed(name), PASSWORD, name).await.unwrap();
    }
    app.stop().await;

    // Rows as an earlier release could have written them: `rene` and `collides` stored
    // decomposed, `collides` while `holder`'s email is its NFC spelling.
    let conn = db.connect().await;
    let backend = conn.get_database_backend();
    for (from, to) in [
        (composed("rene"), decomposed("rene")),
        (composed("collides"), decomposed("collides")),
        (composed("holder"), composed("collides")),
    ] {
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                DbBackend::Postgres => "UPDATE users SET email = $1 WHERE email = $2",
                _ => "UPDATE users SET email = ? WHERE email = ?",
            },
            [to.into(), from.into()],
        ))
        .await
        .unwrap();
    }
    conn.execute_unprepared(
        "DELETE FROM seaql_migrations WHERE version = 'm20261202_000004_email_nfc'",
    )
    .await
    .unwrap();

    let app = TestApp::builder(db.clone()).spawn().await;
    app.login(&composed("rene"), PASSWORD)
        .await
        .expect("the NFC spelling opens the account stored decomposed");
    let emails: Vec<String> = conn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT email FROM users ORDER BY email",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "email").unwrap())
        .filter(|email: &String| email.ends_with(&format!("{run}@example.com")))
        .collect();
    let mut expected = vec![
        composed("collides"),
        decomposed("collides"),
        composed("rene"),
    ];
    expected.sort();
    let mut emails = emails;
    emails.sort();
    assert_eq!(
        emails, expected,
        "no account merged, lost or renamed onto another"
    );
    app.stop().await;
}
