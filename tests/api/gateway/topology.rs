//! The docker-compose topology without containers: two authd processes on one database
//! behind one Envoy started with `deploy/envoy/gateway.yaml`, the compose file's config.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::{Echo, Envoy, Http, descriptor_file, envoy_binary};
use crate::helpers::{PASSWORD, TestDb, connect_authd, free_port, start_authd};

/// The replica the access log names for the `nth` (from 1) `method path` request, once
/// Envoy has written it.
async fn replica_of(envoy: &Envoy, request: &str, nth: usize) -> String {
    for _ in 0..100 {
        let log = envoy.access_log();
        let line = log
            .lines()
            .filter(|line| line.starts_with(request))
            .nth(nth - 1);
        if let Some(replica) = line.and_then(|line| line.split("upstream=").nth(1)) {
            return replica.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {request} number {nth} in the access log:\n{}",
        envoy.access_log()
    );
}

/// Polls `POST /v1/auth/validate` until both replicas have answered inactive.
async fn until_inactive_everywhere(http: &Http, envoy: &Envoy, token: &Value) {
    let mut inactive_on = std::collections::BTreeSet::new();
    for call in 1..=100 {
        let answer = http
            .post("/v1/auth/validate", &[], json!({"token": token}))
            .await;
        if answer.json["active"] == false {
            inactive_on.insert(replica_of(envoy, "POST /v1/auth/validate", call).await);
            if inactive_on.len() == 2 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still active on a replica; inactive only on {inactive_on:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_replica_and_a_logout_through_the_other_behind_the_compose_envoy() {
    let Some(binary) = envoy_binary() else { return };
    let db = TestDb::fresh().await;
    let (port_a, port_b) = (free_port(), free_port());
    let sync = [("AUTHD_REVOCATION_SYNC", "100ms")];
    // One after the other: the first creates the schema and the keys.
    let _a = start_authd(&db, port_a, &sync);
    connect_authd(port_a).await;
    let _b = start_authd(&db, port_b, &sync);
    connect_authd(port_b).await;
    let echo = Echo::start().await;
    let descriptor = descriptor_file();
    let endpoint = |host: &str| format!("address: {host}, port_value: ");
    let envoy = Envoy::start(
        &binary,
        "gateway.yaml",
        &[
            (
                &format!("{}50051", endpoint("authd-1")),
                format!("{}{port_a}", endpoint("127.0.0.1")),
            ),
            (
                &format!("{}50051", endpoint("authd-2")),
                format!("{}{port_b}", endpoint("127.0.0.1")),
            ),
            (
                &format!("{}8000", endpoint("app")),
                format!("{}{}", endpoint("127.0.0.1"), echo.port),
            ),
            (
                "/etc/envoy/descriptor/authd.pb",
                descriptor.path().display().to_string(),
            ),
        ],
    )
    .await;
    let http = envoy.http();
    let email = format!("compose-{}@example.com", uuid::Uuid::now_v7().simple());

    let registered = http
        .post(
            "/v1/auth/register",
            &[],
            json!({"email": email, "password": PASSWORD, "name": "Compose"}),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::OK,
        "{registered:?}\n{}",
        envoy.log()
    );
    let login = http
        .post(
            "/v1/auth/login",
            &[],
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    let logged_in_on = replica_of(&envoy, "POST /v1/auth/login", 1).await;
    let tokens = &login.json["tokens"];
    let bearer = format!("Bearer {}", tokens["accessToken"].as_str().unwrap());

    // Round robin: the next call goes to the other replica (nothing else has asked authd
    // since: ext_authz's Checks would take turns too).
    let logout = http
        .post(
            "/v1/auth/logout",
            &[],
            json!({"refreshToken": tokens["refreshToken"]}),
        )
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    let logged_out_on = replica_of(&envoy, "POST /v1/auth/logout", 1).await;
    assert_ne!(
        logged_in_on,
        logged_out_on,
        "login and logout on one replica:\n{}",
        envoy.access_log()
    );

    until_inactive_everywhere(&http, &envoy, &tokens["accessToken"]).await;

    // The service behind /api/ gets a live session's identity from ext_authz, and never
    // sees a request with the ended one.
    let again = http
        .post(
            "/v1/auth/login",
            &[],
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    let live = format!(
        "Bearer {}",
        again.json["tokens"]["accessToken"].as_str().unwrap()
    );
    let api = http.get("/api/orders", &[("authorization", &live)]).await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    assert_eq!(api.json["x-auth-email"], email.as_str());
    // Only AuthService faces the internet through this gateway.
    for private in [
        "/v1/admin/users",
        "/envoy.service.auth.v3.Authorization/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ] {
        let (status, _, _) = http
            .send(http::Method::POST, private, &[], bytes::Bytes::new())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{private}");
    }
    let refused = http.get("/api/orders", &[("authorization", &bearer)]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    assert_eq!(echo.served(), 1);
}
