use tonic::Code;

use crate::helpers::{PASSWORD, TestApp, TestDb, assert_code, audit_rows, set_active};

#[tokio::test]
async fn security_events_are_recorded_with_who_what_and_where_but_no_secret() {
    let db = TestDb::fresh().await;
    let app = TestApp::builder(db.clone())
        .configure(|config| {
            config.login.max_failures = 2;
            config.tokens.refresh_reuse_grace = std::time::Duration::ZERO;
        })
        .spawn()
        .await;
    let registered = app
        .register("audit@example.com", PASSWORD, "Audit")
        .await
        .unwrap();
    let user_id: uuid::Uuid = registered.user.unwrap().id.parse().unwrap();
    let first = registered.tokens.unwrap();
    assert_code(
        app.login("audit@example.com", "wrong password here").await,
        Code::Unauthenticated,
    );
    let second = app
        .login("audit@example.com", PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    app.refresh(&first.refresh_token).await.unwrap();
    assert_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );
    app.logout(&second.refresh_token, false, None)
        .await
        .unwrap();
    assert_code(
        app.login("nobody@example.com", "wrong password here").await,
        Code::Unauthenticated,
    );
    assert_code(
        app.login("nobody@example.com", "wrong password here").await,
        Code::Unauthenticated,
    );
    assert_code(
        app.login("nobody@example.com", "wrong password here").await,
        Code::ResourceExhausted,
    );
    set_active(&db, "audit@example.com", false);
    app.stop().await;

    let rows = audit_rows(&db).await;

    let summary: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("register", "success"),
            ("login", "invalid_credentials"),
            ("login", "success"),
            ("refresh", "success"),
            ("refresh_reuse", "session_revoked"),
            ("logout", "success"),
            ("login", "invalid_credentials"),
            ("login", "invalid_credentials"),
            ("login", "throttled"),
            ("admin.set_user_active", "deactivated"),
        ]
    );
    assert_eq!(rows[0].2, Some(user_id));
    assert!(rows[0].3.is_some(), "the new session is named");
    assert_eq!(rows[4].3, rows[3].3, "reuse names the revoked session");
    assert_eq!(rows[6].2, None, "no user for an unknown email");
    assert!(
        rows[..9]
            .iter()
            .all(|r| r.4.as_deref() == Some("127.0.0.1")),
        "{rows:?}"
    );
    assert_eq!(rows[9].4, None, "the command line has no peer");
    let everything = format!("{rows:?}");
    for secret in [
        PASSWORD,
        "wrong password here",
        &first.refresh_token,
        &first.access_token,
        &second.refresh_token,
    ] {
        assert!(!everything.contains(secret));
    }
}
