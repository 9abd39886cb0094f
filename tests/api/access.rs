//! What the access layer gives every call: a request id, sent back and kept with the
//! call's audit events, and the client's address behind trusted proxies.

use std::num::NonZeroU32;

use sea_orm::{ConnectionTrait as _, Statement};
use tonic::{Code, Request};

use super::helpers::{PASSWORD, TestApp, TestDb, assert_code, audit_rows};
use authd::proto::auth::v1 as pb;

fn register_request(email: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        email: email.to_owned(),
        password: PASSWORD.to_owned(),
        name: "Access".to_owned(),
    }
}

fn with_metadata<T>(message: T, name: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(name, value.parse().unwrap());
    request
}

#[tokio::test]
async fn request_ids_are_returned_and_kept_in_the_audit_trail() {
    let app = TestApp::builder(TestDb::fresh().await).spawn().await;
    let mut client = app.client.clone();

    let sent = with_metadata(
        register_request("ids@example.com"),
        "x-request-id",
        "signup-7f3a",
    );
    let response = client.register(sent).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "signup-7f3a"
    );

    // A refusal (a trailers-only answer) carries it too.
    let status = client
        .get_me(with_metadata(
            pb::GetMeRequest {},
            "x-request-id",
            "get-me-1",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.metadata().get("x-request-id").unwrap(), "get-me-1");

    // None sent, or one that is not fit for a log line: a fresh one.
    let mut fresh = Vec::new();
    for request in [
        Request::new(pb::GetMeRequest {}),
        with_metadata(pb::GetMeRequest {}, "x-request-id", "two words"),
        with_metadata(pb::GetMeRequest {}, "x-request-id", &"x".repeat(129)),
    ] {
        let status = client.get_me(request).await.unwrap_err();
        let id = status
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        fresh.push(id.to_owned());
    }
    let distinct: std::collections::HashSet<_> = fresh.iter().collect();
    assert_eq!(distinct.len(), 3, "every call gets its own id");

    let conn = app.db.connect().await;
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT kind, request_id FROM audit_events ORDER BY id",
        ))
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get("", "kind").unwrap(),
                row.try_get("", "request_id").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("register".to_owned(), Some("signup-7f3a".to_owned()))]
    );
    app.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    for trusted in [false, true] {
        let app = TestApp::builder(TestDb::fresh().await)
            .configure(|config| {
                config.limits.login_per_minute = NonZeroU32::new(1).unwrap();
                if trusted {
                    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
                }
            })
            .spawn()
            .await;
        let (email, _) = app.new_user().await;
        let login_from = |client_address: &str| {
            let request = with_metadata(
                pb::LoginRequest {
                    email: email.clone(),
                    password: PASSWORD.to_owned(),
                },
                "x-forwarded-for",
                &format!("{client_address}, 127.0.0.2"),
            );
            let mut client = app.client.clone();
            async move { client.login(request).await }
        };
        login_from("198.51.100.1").await.unwrap();
        let second = login_from("198.51.100.2").await;
        let logins: Vec<Option<String>> = audit_rows(&app.db)
            .await
            .into_iter()
            .filter(|row| row.0 == "login")
            .map(|row| row.4)
            .collect();
        if trusted {
            // Two clients behind the proxy: two buckets, two addresses on record.
            second.unwrap();
            assert_eq!(
                logins,
                [
                    Some("198.51.100.1".to_owned()),
                    Some("198.51.100.2".to_owned())
                ]
            );
        } else {
            // From an untrusted peer the header is the caller's own claim: one bucket.
            assert_code(second, Code::ResourceExhausted);
            assert_eq!(logins, [Some("127.0.0.1".to_owned())]);
        }
        app.stop().await;
    }
}
