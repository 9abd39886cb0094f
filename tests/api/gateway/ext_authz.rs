//! Envoy's ext_authz filter asking authd (`deploy/envoy/ext-authz.yaml`) in front of a
//! service that echoes the headers it received.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::{Answer, Echo, Envoy, envoy_binary};
use crate::helpers::{PASSWORD, TestApp, authd_bin, spawn_app};

async fn envoy_in_front(app: &TestApp, echo: &Echo) -> Option<Envoy> {
    let binary = envoy_binary()?;
    Some(
        Envoy::start(
            &binary,
            "ext-authz.yaml",
            &[
                ("address: authd", "address: 127.0.0.1".into()),
                (
                    "port_value: 50051",
                    format!("port_value: {}", app.addr.port()),
                ),
                ("address: upstream", "address: 127.0.0.1".into()),
                ("port_value: 8000", format!("port_value: {}", echo.port)),
            ],
        )
        .await,
    )
}

fn challenge(answer: &Answer) -> &str {
    answer
        .headers
        .get("www-authenticate")
        .map_or("", |value| value.to_str().unwrap())
}

#[tokio::test]
async fn a_valid_token_reaches_the_service_with_its_identity_and_spoofed_headers_never_do() {
    let app = spawn_app().await;
    let echo = Echo::start().await;
    let Some(envoy) = envoy_in_front(&app, &echo).await else {
        return;
    };
    let (email, tokens) = app.new_user().await;
    let identity = app.validate(&tokens.access_token).await.unwrap();

    let answer = envoy
        .http()
        .get(
            "/orders",
            &[
                ("authorization", &format!("Bearer {}", tokens.access_token)),
                ("x-auth-user-id", "00000000-0000-0000-0000-000000000000"),
                ("x-auth-role", "admin"),
                ("x-auth-admin", "yes"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}\n{}", envoy.log());
    let seen = &answer.json;
    assert_eq!(seen["x-auth-user-id"], identity.user_id.as_str(), "{seen}");
    assert_eq!(seen["x-auth-session-id"], identity.session_id.as_str());
    assert_eq!(seen["x-auth-email"], email.as_str());
    assert_eq!(seen["x-auth-role"], "user");
    assert_eq!(seen.get("x-auth-admin"), None, "{seen}");
    assert_eq!(echo.served(), 1);
    app.stop().await;
}

#[tokio::test]
async fn missing_bad_expired_and_revoked_tokens_get_401_and_never_reach_the_service() {
    let app = spawn_app().await;
    let echo = Echo::start().await;
    let Some(envoy) = envoy_in_front(&app, &echo).await else {
        return;
    };
    let http = envoy.http();
    let get = async |bearer: Option<&str>| {
        let header = bearer.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        http.get("/orders", &headers).await
    };

    let none = get(None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{none:?}");
    assert_eq!(challenge(&none), "Bearer");
    let garbage = get(Some("not-a-token")).await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&garbage), "Bearer error=\"invalid_token\"");

    let (_, revoked) = app.new_user().await;
    app.logout(&revoked.refresh_token, false, None)
        .await
        .unwrap();
    let answer = get(Some(&revoked.access_token)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(challenge(&answer), "Bearer error=\"invalid_token\"");

    let (_, expiring) = app.new_user().await;
    assert_eq!(
        get(Some(&expiring.access_token)).await.status,
        StatusCode::OK
    );
    app.advance(Duration::from_secs(3600)).await;
    let expired = get(Some(&expiring.access_token)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{expired:?}");
    assert_eq!(challenge(&expired), "Bearer error=\"invalid_token\"");

    // Only the one valid call got through.
    assert_eq!(echo.served(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_role_gated_route_passes_only_the_roles_it_names() {
    let app = spawn_app().await;
    let echo = Echo::start().await;
    let Some(envoy) = envoy_in_front(&app, &echo).await else {
        return;
    };
    let http = envoy.http();
    let (email, tokens) = app.new_user().await;
    let admin_page = async |access: &str| {
        http.get(
            "/admin/users",
            &[("authorization", &format!("Bearer {access}"))],
        )
        .await
    };

    let refused = admin_page(&tokens.access_token).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(challenge(&refused), "Bearer error=\"insufficient_scope\"");
    // No other spelling of the path dodges the role check (checked before the promotion
    // below, which reaches this token too).
    for dodge in ["//admin/users", "/public/../admin/users", "/./admin/users"] {
        let answer = http
            .get(
                dodge,
                &[("authorization", &format!("Bearer {}", tokens.access_token))],
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{dodge}: {answer:?}");
    }
    let bearer = format!("Bearer {}", tokens.access_token);
    let (escaped, _, _) = http
        .send(
            http::Method::GET,
            "/admin%2Fusers",
            &[("authorization", &bearer)],
            Bytes::new(),
        )
        .await;
    assert_eq!(escaped, StatusCode::BAD_REQUEST);
    assert_eq!(echo.served(), 0);

    let promoted = authd_bin()
        .args(["user", "set-role", &email, "admin"])
        .env("AUTHD_DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(promoted.status.success(), "{promoted:?}");
    let admin = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap();
    let allowed = admin_page(&admin.access_token).await;
    assert_eq!(allowed.status, StatusCode::OK, "{allowed:?}");
    assert_eq!(allowed.json["x-auth-role"], "admin");

    assert_eq!(echo.served(), 1);

    // /public/ does not ask authd at all, and nothing there may claim an identity, in
    // either spelling of the header.
    let public = http
        .get(
            "/public/status",
            &[("x-auth-user-id", "00000000-0000-0000-0000-000000000000")],
        )
        .await;
    assert_eq!(public.status, StatusCode::OK);
    assert_eq!(public.json.get("x-auth-user-id"), None::<&Value>);
    let (underscored, _, _) = http
        .send(
            http::Method::GET,
            "/public/status",
            &[("x_auth_user_id", "00000000-0000-0000-0000-000000000000")],
            Bytes::new(),
        )
        .await;
    assert_eq!(underscored, StatusCode::BAD_REQUEST);
    app.stop().await;
}
